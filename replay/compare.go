package replay

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// ErrMismatch is wrapped by Compare's error.
var ErrMismatch = errors.New("replay: pages differ")

// Page-1 header fields that hold the writing connection's epoch, not
// content (package vfs): the file change counter and version-valid-for.
const (
	hdrChangeCounter = 24
	hdrVersionValid  = 92
)

// Compare reports the first way got differs from want: the page count,
// the set of page numbers written, or a page's bytes, page 1 compared with
// bytes 24–27 and 92–95 (its change counters) ignored. ReadSet is not
// compared. It is the determinism check: replaying a commit's record on
// its base must give the commit's pages.
func Compare(got, want *Output) error {
	if got.PageCount != want.PageCount {
		return fmt.Errorf("page count %d, want %d: %w", got.PageCount, want.PageCount, ErrMismatch)
	}
	g, w := pageNumbers(got.Pages), pageNumbers(want.Pages)
	if !slices.Equal(g, w) {
		return fmt.Errorf("pages written %v, want %v: %w", g, w, ErrMismatch)
	}
	for _, pgno := range g {
		a, b := got.Pages[pgno], want.Pages[pgno]
		if pgno == 1 && len(a) >= 100 && len(b) >= 100 {
			a, b = normalizePage1(a), normalizePage1(b)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("page %d differs at byte %d: %w", pgno, firstDiff(a, b), ErrMismatch)
		}
	}
	return nil
}

func pageNumbers(pages map[uint32][]byte) []uint32 {
	out := make([]uint32, 0, len(pages))
	for pgno := range pages {
		out = append(out, pgno)
	}
	slices.Sort(out)
	return out
}

func normalizePage1(p []byte) []byte {
	p = slices.Clone(p)
	clear(p[hdrChangeCounter : hdrChangeCounter+4])
	clear(p[hdrVersionValid : hdrVersionValid+4])
	return p
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
