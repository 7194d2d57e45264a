package commit

import "testing"

func TestMergeOdds(t *testing.T) {
	var m mergeOdds
	checks := func(n int) int {
		c := 0
		for range n {
			if m.worthTrying(1) {
				c++
				m.note(1, false)
			}
		}
		return c
	}
	if got := checks(mergeStreak); got != mergeStreak {
		t.Fatalf("first %d stale commits: %d checked, want all", mergeStreak, got)
	}
	if got := checks(1000); got >= 1000/2 || got < 1000/(maxMergeSkip+1) {
		t.Fatalf("after a conflict streak: %d of 1000 checked, want between 1/%d and 1/2", got, maxMergeSkip+1)
	}
	if !m.worthTrying(2) {
		t.Fatal("another volume's checks were skipped")
	}
	// One merge resets the streak: checks resume every time.
	for !m.worthTrying(1) {
	}
	m.note(1, true)
	if got := checks(mergeStreak); got != mergeStreak {
		t.Fatalf("after a merge: %d of %d checked, want all", got, mergeStreak)
	}
}
