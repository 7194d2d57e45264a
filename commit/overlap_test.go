package commit

import (
	"testing"

	"github.com/cambiumdb/cambium/conflict"
)

func TestPagesOverlap(t *testing.T) {
	changed := []conflict.Change{{Page: 1, Version: 3}, {Page: 7, Version: 3}, {Page: 40, Version: 2}}
	for _, tc := range []struct {
		name    string
		written []uint32
		read    []PageRange
		want    bool
	}{
		{"PageOneOnly", []uint32{1}, []PageRange{{First: 1, Count: 1}}, false},
		{"Disjoint", []uint32{1, 8}, []PageRange{{First: 1, Count: 1}, {First: 8, Count: 30}}, false},
		{"Written", []uint32{1, 7}, nil, true},
		{"ReadInRange", []uint32{1}, []PageRange{{First: 2, Count: 3}, {First: 38, Count: 5}}, true},
		{"ReadRangeEdge", []uint32{1}, []PageRange{{First: 7, Count: 1}}, true},
		{"ReadAroundNotIn", []uint32{1}, []PageRange{{First: 2, Count: 5}, {First: 8, Count: 32}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pagesOverlap(changed, tc.written, tc.read); got != tc.want {
				t.Fatalf("pagesOverlap()=%v, want %v", got, tc.want)
			}
		})
	}
}

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
