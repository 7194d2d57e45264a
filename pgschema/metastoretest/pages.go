package metastoretest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
)

// model is the page-lookup contract of pgschema.Metastore over one volume,
// computed the slow, obvious way.
type model struct {
	counts []uint32                    // page count at each version; counts[0] = 0
	writes []map[uint32]pages.Location // pages written by each version; writes[0] empty
}

func newModel() *model {
	return &model{counts: []uint32{0}, writes: []map[uint32]pages.Location{{}}}
}

func (m *model) head() int64 { return int64(len(m.counts) - 1) }

// pageAt is PageAt: the latest write of p at or before v, if p is within the
// page count at v.
func (m *model) pageAt(p uint32, v int64) (pgschema.PageRef, bool) {
	if p == 0 || p > m.counts[v] {
		return pgschema.PageRef{}, false
	}
	for w := v; w >= 1; w-- {
		if l, ok := m.writes[w][p]; ok {
			return pgschema.PageRef{PageNo: p, Version: w, Location: l}, true
		}
	}
	return pgschema.PageRef{}, false
}

// changed is ChangedPages: the newest write in (from, to] of each page within
// the page count at to, in page order.
func (m *model) changed(from, to int64) []pgschema.PageRef {
	if from < 0 {
		from = 0
	}
	if to > m.head() {
		to = m.head()
	}
	newest := map[uint32]pgschema.PageRef{}
	for w := from + 1; w <= to; w++ {
		for p, l := range m.writes[w] {
			if p <= m.counts[to] {
				newest[p] = pgschema.PageRef{PageNo: p, Version: w, Location: l}
			}
		}
	}
	var refs []pgschema.PageRef
	for _, r := range newest {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b pgschema.PageRef) int { return int(a.PageNo) - int(b.PageNo) })
	return refs
}

// neverWritten is a page number the random history never writes, so lookups
// of it within the page count must be ErrPageNotFound.
const neverWritten = 7

// buildHistory appends versions random commits to vol, mirrored in a model:
// page counts grow and shrink, each commit writes a random subset of its
// pages (sometimes none), and neverWritten is never written.
func buildHistory(t *testing.T, ms pgschema.Metastore, vol int64, versions int, rng *rand.Rand) *model {
	t.Helper()
	m := newModel()
	count := uint32(0)
	for v := int64(1); v <= int64(versions); v++ {
		switch r := rng.IntN(10); {
		case r < 6 || count < 2:
			count += uint32(rng.IntN(6))
		case r < 8:
		default:
			count -= uint32(rng.IntN(int(count)/3 + 1))
		}
		count = max(count, 1)
		writes := map[uint32]pages.Location{}
		if rng.IntN(10) > 0 {
			for range rng.IntN(min(int(count), 8)) + 1 {
				p := uint32(rng.IntN(int(count))) + 1
				if p != neverWritten {
					writes[p] = loc(vol, v, p)
				}
			}
		}
		c := newCommit(vol, v, count)
		c.Decision = []pgschema.Decision{pgschema.FastPath, pgschema.Merged, pgschema.Replayed}[rng.IntN(3)]
		c.Base = rng.Int64N(v)
		for p, l := range writes {
			c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: l})
		}
		rng.Shuffle(len(c.Pages), func(i, j int) { c.Pages[i], c.Pages[j] = c.Pages[j], c.Pages[i] })
		mustAppend(t, ms, c)
		m.counts = append(m.counts, count)
		m.writes = append(m.writes, writes)
	}
	return m
}

func testPagesModel(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	// A second volume with its own history proves lookups never cross volumes.
	other := mustCreate(t, ms, "other")
	buildHistory(t, ms, other.ID, 20, rng)
	v := mustCreate(t, ms, "v")
	m := buildHistory(t, ms, v.ID, 60, rng)
	head := m.head()
	maxCount := slices.Max(m.counts)

	t.Run("PageAt", func(t *testing.T) {
		for ver := int64(0); ver <= head; ver++ {
			for p := uint32(0); p <= maxCount+2; p++ {
				got, err := ms.PageAt(ctx, v.ID, p, ver)
				want, ok := m.pageAt(p, ver)
				switch {
				case !ok && !errors.Is(err, pgschema.ErrPageNotFound):
					t.Fatalf("PageAt(%d, %d)=%+v, %v; want ErrPageNotFound (page count %d)", p, ver, got, err, m.counts[ver])
				case ok && err != nil:
					t.Fatalf("PageAt(%d, %d): %v; want %+v", p, ver, err, want)
				case ok && got != want:
					t.Fatalf("PageAt(%d, %d)=%+v, want %+v", p, ver, got, want)
				}
			}
		}
	})

	t.Run("PagesAt", func(t *testing.T) {
		all := make([]uint32, 0, maxCount+3)
		for p := uint32(0); p <= maxCount+2; p++ {
			all = append(all, p)
		}
		for ver := int64(0); ver <= head; ver++ {
			req := slices.Clone(all)
			rng.Shuffle(len(req), func(i, j int) { req[i], req[j] = req[j], req[i] })
			for _, n := range []int{len(req), rng.IntN(len(req)) + 1, 1} {
				req := req[:n]
				var want []pgschema.PageRef
				for _, p := range slices.Sorted(slices.Values(req)) {
					if r, ok := m.pageAt(p, ver); ok {
						want = append(want, r)
					}
				}
				got, err := ms.PagesAt(ctx, v.ID, ver, req)
				if err != nil {
					t.Fatalf("PagesAt(%d, %v): %v", ver, req, err)
				}
				mustSameRefs(t, "PagesAt", ver, ver, got, want)
			}
		}
	})

	t.Run("ChangedPages", func(t *testing.T) {
		ranges := [][2]int64{{0, head}, {0, 0}, {head, head}, {0, 1}}
		for ver := int64(1); ver <= head; ver++ {
			ranges = append(ranges, [2]int64{ver - 1, ver})
		}
		for range 300 {
			a, b := rng.Int64N(head+1), rng.Int64N(head+1)
			ranges = append(ranges, [2]int64{min(a, b), max(a, b)})
		}
		for _, r := range ranges {
			got, err := ms.ChangedPages(ctx, v.ID, r[0], r[1])
			if err != nil {
				t.Fatalf("ChangedPages(%d, %d): %v", r[0], r[1], err)
			}
			mustSameRefs(t, "ChangedPages", r[0], r[1], got, m.changed(r[0], r[1]))
		}
		// An inverted range is empty.
		got, err := ms.ChangedPages(ctx, v.ID, head, 1)
		if err != nil {
			t.Fatalf("ChangedPages(%d, 1): %v", head, err)
		}
		if len(got) != 0 {
			t.Fatalf("ChangedPages(%d, 1)=%+v, want none", head, got)
		}
	})
}

func testPagesEmpty(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	if _, err := ms.PageAt(ctx, v.ID, 1, 0); !errors.Is(err, pgschema.ErrPageNotFound) {
		t.Fatalf("PageAt(1, 0) on an empty volume: err=%v, want ErrPageNotFound", err)
	}
	if _, err := ms.PageAt(ctx, v.ID+100, 1, 0); !errors.Is(err, pgschema.ErrPageNotFound) {
		t.Fatalf("PageAt on an unknown volume: err=%v, want ErrPageNotFound", err)
	}
	for _, req := range [][]uint32{nil, {}, {1, 2, 3}} {
		refs, err := ms.PagesAt(ctx, v.ID, 0, req)
		if err != nil {
			t.Fatalf("PagesAt(0, %v): %v", req, err)
		}
		if len(refs) != 0 {
			t.Fatalf("PagesAt(0, %v)=%+v, want none", req, refs)
		}
	}
	refs, err := ms.ChangedPages(ctx, v.ID, 0, 0)
	if err != nil {
		t.Fatalf("ChangedPages(0, 0): %v", err)
	}
	if len(refs) != 0 {
		t.Fatalf("ChangedPages(0, 0)=%+v, want none", refs)
	}
	mustAppend(t, ms, newCommit(v.ID, 1, 2, 2))
	refs, err = ms.PagesAt(ctx, v.ID, 1, nil)
	if err != nil || len(refs) != 0 {
		t.Fatalf("PagesAt(1, nil)=%+v, %v; want none", refs, err)
	}
	// Page 1 is within the page count but was never written.
	if _, err := ms.PageAt(ctx, v.ID, 1, 1); !errors.Is(err, pgschema.ErrPageNotFound) {
		t.Fatalf("PageAt(1, 1), never written: err=%v, want ErrPageNotFound", err)
	}
}

func mustSameRefs(t *testing.T, what string, from, to int64, got, want []pgschema.PageRef) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s(%d, %d) returned %d refs, want %d:\n got %+v\nwant %+v", what, from, to, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s(%d, %d)[%d]=%+v, want %+v", what, from, to, i, got[i], want[i])
		}
	}
}
