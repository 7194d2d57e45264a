package conflict

import (
	"math"
	"slices"
)

// span is the pages lo..hi, inclusive. Spans let Detect work on read sets
// of any size without expanding them: every set operation below is linear
// in the number of spans, never in the number of pages.
type span struct{ lo, hi uint32 }

func (s span) len() uint64 { return uint64(s.hi) - uint64(s.lo) + 1 }

// spans is an ascending list of disjoint, non-adjacent spans.
type spans []span

// spansOfRanges normalizes read-set ranges: it drops empty ranges and page
// 0, clips at the largest page number, and sorts and coalesces the ranges
// when the caller broke the ascending, disjoint promise.
func spansOfRanges(rs []Range) spans {
	out := make(spans, 0, len(rs))
	for _, r := range rs {
		if r.Count == 0 {
			continue
		}
		lo, hi := uint64(r.First), uint64(r.First)+uint64(r.Count)-1
		lo = max(lo, 1)
		hi = min(hi, math.MaxUint32)
		if lo > hi {
			continue
		}
		out = append(out, span{uint32(lo), uint32(hi)})
	}
	return coalesce(out)
}

// spansOfPages turns page numbers (ascending, or not) into spans.
func spansOfPages(pages []uint32) spans {
	out := make(spans, 0, len(pages))
	for _, p := range pages {
		if p != 0 {
			out = append(out, span{p, p})
		}
	}
	return coalesce(out)
}

// coalesce sorts s if needed and merges overlapping and adjacent spans, in
// place.
func coalesce(s spans) spans {
	if !slices.IsSortedFunc(s, cmpSpan) {
		slices.SortFunc(s, cmpSpan)
	}
	out := s[:0]
	for _, x := range s {
		if n := len(out); n > 0 && uint64(x.lo) <= uint64(out[n-1].hi)+1 {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

func cmpSpan(a, b span) int {
	switch {
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

// union returns a ∪ b.
func union(a, b spans) spans {
	out := make(spans, 0, len(a)+len(b))
	out = append(out, a...)
	out = append(out, b...)
	return coalesce(out)
}

// intersect returns a ∩ b.
func intersect(a, b spans) spans {
	var out spans
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].lo, b[j].lo), min(a[i].hi, b[j].hi)
		if lo <= hi {
			out = append(out, span{lo, hi})
		}
		if a[i].hi < b[j].hi {
			i++
		} else {
			j++
		}
	}
	return out
}

// clip returns s ∩ [lo, hi]; empty when lo > hi.
func clip(s spans, lo, hi uint32) spans {
	if lo > hi {
		return nil
	}
	return intersect(s, spans{{lo, hi}})
}

// without returns s without page p.
func without(s spans, p uint32) spans {
	var out spans
	for _, x := range s {
		switch {
		case p < x.lo || p > x.hi:
			out = append(out, x)
		default:
			if x.lo < p {
				out = append(out, span{x.lo, p - 1})
			}
			if p < x.hi {
				out = append(out, span{p + 1, x.hi})
			}
		}
	}
	return out
}

// contains reports whether page p is in s.
func (s spans) contains(p uint32) bool {
	_, ok := slices.BinarySearchFunc(s, p, func(x span, p uint32) int {
		switch {
		case x.hi < p:
			return -1
		case x.lo > p:
			return 1
		}
		return 0
	})
	return ok
}

// pages returns the number of pages in s.
func (s spans) pages() uint64 {
	var n uint64
	for _, x := range s {
		n += x.len()
	}
	return n
}
