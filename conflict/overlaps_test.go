package conflict

import "testing"

func TestOverlaps(t *testing.T) {
	changed := []Change{{Page: 1, Version: 3}, {Page: 7, Version: 3}, {Page: 40, Version: 2}}
	for _, tc := range []struct {
		name    string
		written []uint32
		read    []Range
		want    bool
	}{
		{"PageOneOnly", []uint32{1}, []Range{{First: 1, Count: 1}}, false},
		{"Disjoint", []uint32{1, 8}, []Range{{First: 1, Count: 1}, {First: 8, Count: 30}}, false},
		{"Written", []uint32{1, 7}, nil, true},
		{"ReadInRange", []uint32{1}, []Range{{First: 2, Count: 3}, {First: 38, Count: 5}}, true},
		{"ReadRangeEdge", []uint32{1}, []Range{{First: 7, Count: 1}}, true},
		{"ReadAroundNotIn", []uint32{1}, []Range{{First: 2, Count: 5}, {First: 8, Count: 32}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Base: 1, Head: 3, Changed: changed, Written: tc.written, ReadSet: tc.read}
			if got := Overlaps(in); got != tc.want {
				t.Fatalf("Overlaps()=%v, want %v", got, tc.want)
			}
			// Detect with page 1 unread: never mergeable, and the reason
			// names the overlap (or says page 1 was not judged for nothing).
			in.Page1Unread, in.HeadCount, in.ClientCount = true, 64, 64
			r := Detect(in)
			switch {
			case r.Mergeable():
				t.Fatalf("Detect(Page1Unread) is mergeable: %s", r.Reason())
			case tc.want && (r.Page1 != Page1Unread || r.ConflictCount == 0):
				t.Fatalf("Detect(Page1Unread): page 1 %s, %d conflicts, want unread with the overlap", r.Page1, r.ConflictCount)
			case !tc.want && r.Page1 != Page1Invalid:
				t.Fatalf("Detect(Page1Unread) without an overlap: page 1 %s, want invalid", r.Page1)
			}
			if r.Reason() == "" {
				t.Fatal("empty reason")
			}
		})
	}
}
