package sqlitestore

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

// history is a model of one volume: per version, the page count and the
// pages written.
type history struct {
	counts []uint32          // counts[v] is the page count at version v
	writes []map[uint32]bool // writes[v] holds the pages version v wrote
}

// pageAt is the model's PageAt: the latest version <= v that wrote p, if p
// is within the page count at v.
func (h *history) pageAt(p uint32, v int64) (int64, bool) {
	if v >= int64(len(h.counts)) {
		v = int64(len(h.counts)) - 1
	}
	if v < 1 || p == 0 || p > h.counts[v] {
		return 0, false
	}
	for w := v; w >= 1; w-- {
		if h.writes[w][p] {
			return w, true
		}
	}
	return 0, false
}

// buildHistory appends n random commits to a new volume, with the database
// growing and sometimes shrinking, and returns the model.
func buildHistory(t *testing.T, s *Store, name string, n int, rng *rand.Rand) (pgschema.Volume, *history) {
	t.Helper()
	v := mustCreateVolume(t, s, name)
	h := &history{counts: []uint32{0}, writes: []map[uint32]bool{nil}}
	count := uint32(0)
	for version := int64(1); version <= int64(n); version++ {
		switch r := rng.IntN(10); {
		case r < 6:
			count += uint32(rng.IntN(3))
		case r < 8 && count > 2:
			count -= uint32(rng.IntN(int(count / 2)))
		}
		count = max(count, 1)
		written := map[uint32]bool{1: true}
		for range rng.IntN(4) {
			written[uint32(rng.IntN(int(count)))+1] = true
		}
		var pageNos []uint32
		for p := range written {
			pageNos = append(pageNos, p)
		}
		slices.Sort(pageNos)
		mustAppend(t, s, testCommit(v.ID, version, count, pageNos...))
		h.counts = append(h.counts, count)
		h.writes = append(h.writes, written)
	}
	return v, h
}

func TestStore_PageAt(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, WithSynchronous(SyncNormal))
	rng := rand.New(rand.NewPCG(1, 2))
	v, h := buildHistory(t, s, "v", 60, rng)
	mustCreateVolume(t, s, "empty")

	t.Run("Model", func(t *testing.T) {
		for version := int64(0); version <= 62; version++ {
			for p := uint32(0); p <= 40; p++ {
				want, ok := h.pageAt(p, version)
				ref, err := s.PageAt(ctx, v.ID, p, version)
				if !ok {
					if !errors.Is(err, pgschema.ErrPageNotFound) {
						t.Fatalf("PageAt(page %d, version %d): ref=%+v err=%v, want ErrPageNotFound", p, version, ref, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("PageAt(page %d, version %d): %v", p, version, err)
				}
				if ref.PageNo != p || ref.Version != want || ref.Location != testLoc(want, p) {
					t.Fatalf("PageAt(page %d, version %d)=%+v, want version %d at %+v", p, version, ref, want, testLoc(want, p))
				}
			}
		}
	})

	t.Run("UnknownVolume", func(t *testing.T) {
		if _, err := s.PageAt(ctx, v.ID+100, 1, 1); !errors.Is(err, pgschema.ErrPageNotFound) {
			t.Fatalf("PageAt(unknown volume): err=%v, want ErrPageNotFound", err)
		}
	})
}

func TestStore_PagesAt(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, WithSynchronous(SyncNormal))
	rng := rand.New(rand.NewPCG(3, 4))
	v, h := buildHistory(t, s, "v", 60, rng)

	t.Run("Model", func(t *testing.T) {
		for version := int64(0); version <= 62; version++ {
			// Unsorted, with duplicates, page 0 and pages past the end.
			ask := []uint32{9, 0, 3, 3, 1, 40, 2, 17, 5, 5, 8, 4, 6, 7, 1000}
			var want []pgschema.PageRef
			for _, p := range slices.Compact(slices.Sorted(slices.Values(ask))) {
				if w, ok := h.pageAt(p, version); ok {
					want = append(want, pgschema.PageRef{PageNo: p, Version: w, Location: testLoc(w, p)})
				}
			}
			got, err := s.PagesAt(ctx, v.ID, version, ask)
			if err != nil {
				t.Fatalf("PagesAt(version %d): %v", version, err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("PagesAt(version %d)=%+v, want %+v", version, got, want)
			}
		}
	})

	t.Run("None", func(t *testing.T) {
		got, err := s.PagesAt(ctx, v.ID, 10, nil)
		if err != nil || len(got) != 0 {
			t.Fatalf("PagesAt(no pages)=%+v, %v; want none", got, err)
		}
	})
}

func TestStore_ChangedPages(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, WithSynchronous(SyncNormal))
	rng := rand.New(rand.NewPCG(5, 6))
	v, h := buildHistory(t, s, "v", 50, rng)

	t.Run("Model", func(t *testing.T) {
		for from := int64(0); from <= 51; from++ {
			for to := from; to <= 52; to++ {
				last := min(to, int64(len(h.counts))-1)
				var want []pgschema.PageRef
				for p := uint32(1); p <= h.counts[last]; p++ {
					for w := last; w > from; w-- {
						if h.writes[w][p] {
							want = append(want, pgschema.PageRef{PageNo: p, Version: w, Location: testLoc(w, p)})
							break
						}
					}
				}
				got, err := s.ChangedPages(ctx, v.ID, from, to)
				if err != nil {
					t.Fatalf("ChangedPages(%d, %d): %v", from, to, err)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("ChangedPages(%d, %d)=%+v, want %+v", from, to, got, want)
				}
			}
		}
	})

	t.Run("Shrunk", func(t *testing.T) {
		w := mustCreateVolume(t, s, "shrink")
		mustAppend(t, s, testCommit(w.ID, 1, 5, 1, 2, 3, 4, 5))
		mustAppend(t, s, testCommit(w.ID, 2, 2, 1))
		got, err := s.ChangedPages(ctx, w.ID, 0, 2)
		if err != nil {
			t.Fatalf("ChangedPages: %v", err)
		}
		if len(got) != 2 || got[0].PageNo != 1 || got[0].Version != 2 || got[1].PageNo != 2 || got[1].Version != 1 {
			t.Fatalf("ChangedPages(0, 2) after shrinking to 2 pages=%+v, want page 1@2 and page 2@1", got)
		}
	})
}

// TestStore_QueryPlans checks with EXPLAIN QUERY PLAN that the hot queries
// seek indexes and never scan a table, and logs the plans (go test -v).
func TestStore_QueryPlans(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	for _, q := range []struct {
		name  string
		query string
		args  []any
		want  []string // substrings the plan must contain
	}{
		{"PageAt", queryPageAt, []any{1, 10, 3}, []string{"SEARCH p USING PRIMARY KEY (volume_id=? AND page_no=? AND version<?)"}},
		{"PagesAt", queryPagesAt, []any{1, 10, "[1,2,3]"}, []string{"SCAN r VIRTUAL TABLE", "SEARCH p USING PRIMARY KEY (volume_id=? AND page_no=? AND version=?)"}},
		{"ChangedPages", queryChangedPages, []any{1, 10, 5}, []string{"USING COVERING INDEX page_index_version (volume_id=? AND version>? AND version<?)", "SEARCH p USING PRIMARY KEY (volume_id=? AND page_no=? AND version=?)"}},
		{"CommitBySeq", selectCommit + ` WHERE volume_id = ? AND client_id = ? AND client_seq = ?`, []any{1, "c", 1}, []string{"USING INDEX sqlite_autoindex_commits_2"}},
		{"Commits", selectCommit + ` WHERE volume_id = ? AND version > ? AND version <= ? ORDER BY version`, []any{1, 0, 10}, []string{"USING INDEX sqlite_autoindex_commits_1"}},
	} {
		t.Run(q.name, func(t *testing.T) {
			rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.query, q.args...)
			if err != nil {
				t.Fatalf("EXPLAIN QUERY PLAN: %v", err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatalf("scan plan: %v", err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("plan: %v", err)
			}
			text := strings.Join(plan, "\n")
			t.Logf("%s:\n%s", q.name, text)
			for _, line := range plan {
				if strings.HasPrefix(line, "SCAN ") && !strings.Contains(line, "VIRTUAL TABLE") && !strings.Contains(line, "COVERING INDEX") && !strings.HasPrefix(line, "SCAN l") {
					t.Errorf("plan line %q scans a table", line)
				}
			}
			for _, w := range q.want {
				if !strings.Contains(text, w) {
					t.Errorf("plan lacks %q", w)
				}
			}
		})
	}
}
