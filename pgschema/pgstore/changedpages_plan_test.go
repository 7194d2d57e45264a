package pgstore

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
)

// changedPagesJoinSQL is the long-range query changedPagesSQL replaced
// (BENCHMARKS.md, finding 3), kept so BenchmarkChangedPagesPlan can show
// what it did: each page's newest version from an index alone, joined back
// for its row. Under statistics taken before the volume grew, the join is a
// nested loop that scans the volume's version index once per changed page.
const changedPagesJoinSQL = `
SELECT p.page_no, p.version, (SELECT s.key FROM segments s WHERE s.id = p.segment_id),
	p.frame_offset, p.frame_length, p.page_offset, p.hash
FROM (
	SELECT page_no, max(version) AS version
	FROM page_index
	WHERE volume_id = $1 AND version > $3 AND version <= $2 AND page_no <= ` + pageCountAt + `
	GROUP BY page_no
) m
JOIN page_index p ON p.volume_id = $1 AND p.page_no = m.page_no AND p.version = m.version
ORDER BY p.page_no`

// mustOpenStore opens a Store over a fresh schema of the test PostgreSQL
// server and closes it when the test ends.
func mustOpenStore(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(context.Background(), testutil.MustPostgresSchema(tb), Options{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// mustExec runs statements on the store's pool, for test setup.
func mustExec(tb testing.TB, s *Store, sql string, args ...any) {
	tb.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("%s: %v", strings.Fields(sql)[0], err)
	}
}

// explain returns the plan PostgreSQL picks for a ChangedPages query, run
// the way changedPages runs it (simple protocol, arguments inline). With
// analyze it runs the query and the plan carries its actual rows and times.
func explain(tb testing.TB, s *Store, query string, analyze bool, volume, from, to int64) string {
	tb.Helper()
	opts := "COSTS OFF"
	if analyze {
		opts = "ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON"
	}
	rows, err := s.pool.Query(context.Background(), "EXPLAIN ("+opts+") "+query,
		pgx.QueryExecModeSimpleProtocol, volume, to, from)
	if err != nil {
		tb.Fatalf("EXPLAIN: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("EXPLAIN: %v", err)
	}
	return strings.Join(lines, "\n")
}

// historyModel is one volume's history, mirrored in Go: ChangedPages
// computed the slow, obvious way.
type historyModel struct {
	id     int64
	counts []uint32                    // page count at each version; counts[0] = 0
	writes []map[uint32]pages.Location // pages written by each version; writes[0] empty
}

func (m *historyModel) head() int64 { return int64(len(m.counts) - 1) }

// changed is the contract of ChangedPages: each page's newest write in
// (from, to], within the page count at to, in ascending page order.
func (m *historyModel) changed(from, to int64) []pgschema.PageRef {
	var refs []pgschema.PageRef
	if from >= to {
		return refs
	}
	seen := map[uint32]bool{}
	for v := to; v > from; v-- {
		for p, l := range m.writes[v] {
			if p <= m.counts[to] && !seen[p] {
				seen[p] = true
				refs = append(refs, pgschema.PageRef{PageNo: p, Version: v, Location: l})
			}
		}
	}
	slices.SortFunc(refs, func(a, b pgschema.PageRef) int { return int(a.PageNo) - int(b.PageNo) })
	return refs
}

// grow appends n random commits to the model and returns them, all in one
// segment as group commit stores them. Page counts mostly creep up,
// sometimes jump (an import, which writes every page) and sometimes
// shrink; other commits write a few pages, page 1 often.
func (m *historyModel) grow(rng *rand.Rand, n int) []pgschema.NewCommit {
	seg := fmt.Sprintf("segments/model-%d-%d", m.id, m.head()+1)
	cs := make([]pgschema.NewCommit, 0, n)
	for range n {
		v := m.head() + 1
		count := m.counts[v-1]
		writes := map[uint32]pages.Location{}
		var all bool
		switch r := rng.IntN(40); {
		case r == 0 || count == 0:
			count += uint32(50 + rng.IntN(150))
			all = true
		case r < 3:
			count -= uint32(rng.IntN(int(count)/3 + 1))
		case r < 15:
			count += uint32(rng.IntN(3))
		}
		count = max(count, 1)
		if all {
			for p := uint32(1); p <= count; p++ {
				writes[p] = pages.Location{}
			}
		} else {
			if rng.IntN(2) == 0 {
				writes[1] = pages.Location{}
			}
			for range rng.IntN(6) {
				writes[uint32(rng.IntN(int(count)))+1] = pages.Location{}
			}
		}
		c := pgschema.NewCommit{
			Volume: m.id, Version: v, Base: v - 1, ClientID: "model", ClientSeq: v,
			Decision: pgschema.FastPath, PageCount: count, ReceivedAt: time.Unix(1700000000, 0),
		}
		for i, p := range slices.Sorted(maps.Keys(writes)) {
			l := pages.Location{Segment: seg, FrameOffset: int64(len(cs)) << 20, FrameLength: 1 + int64(i),
				PageOffset: int64(p), Hash: rng.Uint64()}
			writes[p] = l
			c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: l})
		}
		m.counts = append(m.counts, count)
		m.writes = append(m.writes, writes)
		cs = append(cs, c)
	}
	return cs
}

// mustAppendAll stores cs, commits of one volume, in one transaction.
func mustAppendAll(tb testing.TB, s *Store, vol int64, cs []pgschema.NewCommit) {
	tb.Helper()
	ctx := context.Background()
	err := s.Update(ctx, func(tx pgschema.Tx) error {
		if _, err := tx.LockVolume(ctx, vol); err != nil {
			return err
		}
		return tx.AppendAll(ctx, cs)
	})
	if err != nil {
		tb.Fatalf("AppendAll: %v", err)
	}
}

func mustSameChanged(t *testing.T, via string, m *historyModel, from, to int64, got []pgschema.PageRef) {
	t.Helper()
	want := m.changed(from, to)
	if len(got) != len(want) {
		t.Fatalf("%s ChangedPages(%d, %d, %d) returned %d pages, want %d", via, m.id, from, to, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s ChangedPages(%d, %d, %d)[%d]=%+v, want %+v", via, m.id, from, to, i, got[i], want[i])
		}
	}
}

// TestStore_ChangedPagesModel checks ChangedPages, of the Store and of a
// Tx, against historyModel over random interleaved histories of three
// volumes, on one-version ranges, long ranges and random ones, under
// the plans PostgreSQL picks before and after ANALYZE. It checks results
// only: BenchmarkChangedPagesPlan measures the plans.
func TestStore_ChangedPagesModel(t *testing.T) {
	ctx := context.Background()
	s := mustOpenStore(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))

	models := make([]*historyModel, 3)
	for i := range models {
		v, err := s.CreateVolume(ctx, fmt.Sprintf("model-%d", i), 4096)
		if err != nil {
			t.Fatalf("CreateVolume: %v", err)
		}
		models[i] = &historyModel{id: v.ID, counts: []uint32{0}, writes: []map[uint32]pages.Location{{}}}
	}
	// Batches interleave, so each volume's rows sit among the others', and
	// each transaction reads back a range ending in the versions it has just
	// appended, uncommitted.
	for range 60 {
		m := models[rng.IntN(len(models))]
		cs := m.grow(rng, 1+rng.IntN(40))
		from := rng.Int64N(m.head() + 1)
		var got []pgschema.PageRef
		err := s.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolume(ctx, m.id); err != nil {
				return err
			}
			if err := tx.AppendAll(ctx, cs); err != nil {
				return err
			}
			var err error
			got, err = tx.ChangedPages(ctx, m.id, from, m.head())
			return err
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		mustSameChanged(t, "Tx", m, from, m.head(), got)
	}

	check := func(t *testing.T) {
		for _, m := range models {
			head := m.head()
			ranges := [][2]int64{{0, head}, {0, 0}, {head, head}, {head, 0}, {0, 1}, {1, head}, {head - 1, head}}
			for range 100 {
				v := 1 + rng.Int64N(head)
				ranges = append(ranges, [2]int64{v - 1, v})
			}
			for range 100 {
				a, b := rng.Int64N(head+1), rng.Int64N(head+1)
				ranges = append(ranges, [2]int64{min(a, b), max(a, b)})
			}
			for range 30 { // at least half the history
				n := head/2 + rng.Int64N(head/2+1)
				from := rng.Int64N(head - n + 1)
				ranges = append(ranges, [2]int64{from, from + n})
			}
			for _, r := range ranges {
				got, err := s.ChangedPages(ctx, m.id, r[0], r[1])
				if err != nil {
					t.Fatalf("ChangedPages(%d, %d, %d): %v", m.id, r[0], r[1], err)
				}
				mustSameChanged(t, "Store", m, r[0], r[1], got)
			}
			// A read-only transaction sees what the Store does.
			for _, r := range ranges[:10] {
				var got []pgschema.PageRef
				err := s.Update(ctx, func(tx pgschema.Tx) error {
					var err error
					got, err = tx.ChangedPages(ctx, m.id, r[0], r[1])
					return err
				})
				if err != nil {
					t.Fatalf("Tx ChangedPages(%d, %d, %d): %v", m.id, r[0], r[1], err)
				}
				mustSameChanged(t, "Tx", m, r[0], r[1], got)
			}
			// No plan joins page_index to itself, so none can repeat a
			// scan of the volume's rows once per page (finding 3).
			for _, r := range ranges[:7] {
				plan := explain(t, s, changedPagesSQL, false, m.id, r[0], r[1])
				for _, join := range []string{"Nested Loop", "Hash Join", "Merge Join"} {
					if strings.Contains(plan, join) {
						t.Fatalf("plan of ChangedPages(%d, %d, %d) has a %s:\n%s", m.id, r[0], r[1], join, plan)
					}
				}

			}
		}
	}
	t.Run("BeforeAnalyze", check)
	mustExec(t, s, "ANALYZE page_index, commits")
	t.Run("AfterAnalyze", check)
}

// changedPagesScale reads CAMBIUM_CHANGED_PAGES_SCALE, which multiplies
// BenchmarkChangedPagesPlan's sizes for a soak run (default 1).
func changedPagesScale() int {
	if v, err := strconv.Atoi(os.Getenv("CAMBIUM_CHANGED_PAGES_SCALE")); err == nil && v > 0 {
		return v
	}
	return 1
}

// stageOtherVolumes fills the schema with 4 other volumes of 2,000 pages,
// versions commits each writing 4 of them, and runs ANALYZE, with
// autovacuum off: the statistics a volume written afterwards is judged by
// are stale, as they are on a server (which never runs ANALYZE).
func stageOtherVolumes(tb testing.TB, s *Store, versions int64) {
	tb.Helper()
	ctx := context.Background()
	for _, table := range []string{"page_index", "commits", "segments", "volumes"} {
		mustExec(tb, s, "ALTER TABLE "+table+" SET (autovacuum_enabled = false)")
	}
	const fillers, fillerPages = 4, 2000
	fillerVersions := versions
	var ids []int64
	for i := range fillers {
		v, err := s.CreateVolume(ctx, fmt.Sprintf("filler-%d", i), 4096)
		if err != nil {
			tb.Fatalf("CreateVolume: %v", err)
		}
		ids = append(ids, v.ID)
	}
	mustExec(tb, s, `INSERT INTO segments (key) SELECT 'segments/filler-' || n FROM generate_series(1, 1000) n`)
	mustExec(tb, s, `
INSERT INTO commits (volume_id, version, base, client_id, client_seq, decision, page_count, pages_count, received_at)
SELECT v, n, n - 1, 'filler', n, 'fast-path', $3, 4, now()
FROM unnest($1::bigint[]) v, generate_series(1, $2::bigint) n`, ids, fillerVersions, fillerPages)
	// The offsets 0, 729, 1458 and 187 (k × 104729 mod 2000) keep a
	// commit's 4 pages distinct.
	mustExec(tb, s, `
INSERT INTO page_index (volume_id, page_no, version, segment_id, frame_offset, frame_length, page_offset, hash)
SELECT v, 1 + (n * 7919 + k * 104729 + v * 13) % $3, n, (SELECT min(id) FROM segments) + n % 1000, k * 1500, 1500, 0, n
FROM unnest($1::bigint[]) v, generate_series(1, $2::bigint) n, generate_series(0, 3) k`, ids, fillerVersions, fillerPages)
	mustExec(tb, s, `UPDATE volumes SET head = $2, page_count = $3 WHERE id = ANY($1)`, ids, fillerVersions, fillerPages)
	mustExec(tb, s, "ANALYZE")
}

// BenchmarkChangedPagesPlan reproduces BENCHMARKS.md finding 3. Other
// volumes fill page_index (100,000 rows × scale, inserted by SQL) and
// ANALYZE runs, as autovacuum would after them; then, through AppendAll as
// the server writes them, a volume gets 10,000 versions × scale of page 1
// and two of 216 pages each (CatchUp: a replica pulls them all, Tail: the
// last 10), and another an import of 2,000 × scale pages followed by 99
// small commits (Import: its first pull). Each range runs under those
// stale statistics, then after ANALYZE, with the current query and with
// the join it replaced; the plan of each is logged. Autovacuum is off for
// the schema's tables, so the statistics are the ones staged.
//
//	scripts/with-services go test -run XXX -bench ChangedPagesPlan ./pgschema/pgstore/
//	CAMBIUM_CHANGED_PAGES_SCALE=10 scripts/with-services go test -run XXX -bench ChangedPagesPlan -timeout 1h ./pgschema/pgstore/

func BenchmarkChangedPagesPlan(b *testing.B) {
	ctx := context.Background()
	scale := changedPagesScale()
	s := mustOpenStore(b)
	start := time.Now()
	stageOtherVolumes(b, s, int64(6250*scale))

	rng := rand.New(rand.NewPCG(1, 2))

	catchUp, err := s.CreateVolume(ctx, "catch-up", 4096)
	if err != nil {
		b.Fatalf("CreateVolume: %v", err)
	}
	const catchUpPages = 216
	catchUpVersions := int64(10000 * scale)
	for first := int64(1); first <= catchUpVersions; first += 500 {
		var cs []pgschema.NewCommit
		for v := first; v < first+500 && v <= catchUpVersions; v++ {
			cs = append(cs, benchPlanCommit(catchUp.ID, v, catchUpPages, []uint32{1, 2 + uint32(rng.IntN(catchUpPages-1)), 2 + uint32(rng.IntN(catchUpPages-1))}))
		}
		mustAppendAll(b, s, catchUp.ID, cs)
	}
	imp, err := s.CreateVolume(ctx, "import", 4096)
	if err != nil {
		b.Fatalf("CreateVolume: %v", err)
	}
	importPages := uint32(2000 * scale)
	all := make([]uint32, importPages)
	for i := range all {
		all[i] = uint32(i) + 1
	}
	cs := []pgschema.NewCommit{benchPlanCommit(imp.ID, 1, importPages, all)}
	for v := int64(2); v <= 100; v++ {
		cs = append(cs, benchPlanCommit(imp.ID, v, importPages, []uint32{1, 2 + uint32(rng.IntN(int(importPages)-1))}))
	}
	mustAppendAll(b, s, imp.ID, cs)

	setup := time.Since(start).Round(time.Millisecond)

	type query struct{ name, sql string }
	current, join := query{"Query=current", changedPagesSQL}, query{"Query=join", changedPagesJoinSQL}
	ranges := []struct {
		name          string
		vol, from, to int64
		queries       []query
	}{
		{"CatchUp", catchUp.ID, 0, catchUpVersions, []query{current, join}},
		// Below 256 versions the old code ran changedPagesSQL too.
		{"Tail", catchUp.ID, catchUpVersions - 10, catchUpVersions, []query{current}},
		{"Import", imp.ID, 0, 100, []query{current, join}},
	}
	for _, stats := range []string{"Stale", "Analyzed"} {
		if stats == "Analyzed" {
			mustExec(b, s, "ANALYZE")
		}
		b.Run(stats, func(b *testing.B) {
			for _, r := range ranges {
				b.Run(r.name, func(b *testing.B) {
					for _, q := range r.queries {
						b.Run(q.name, func(b *testing.B) {
							b.Logf("setup %v; plan: %s", setup, planSummary(explain(b, s, q.sql, true, r.vol, r.from, r.to)))
							// As changedPages runs it.
							for b.Loop() {
								rows, err := s.pool.Query(ctx, q.sql, pgx.QueryExecModeSimpleProtocol, r.vol, r.to, r.from)
								if err == nil {
									_, err = collectPageRefs(rows)
								}
								if err != nil {
									b.Fatalf("ChangedPages(%d, %d, %d): %v", r.vol, r.from, r.to, err)
								}
							}
						})
					}
				})
			}
		})
	}
}

// planSummary shortens an EXPLAIN ANALYZE plan to one line: its nodes,
// depth-first, with their actual rows and loops, and the execution time.
func planSummary(plan string) string {
	var nodes []string
	for _, line := range strings.Split(plan, "\n") {
		node, rows, ok := strings.Cut(line, " (actual ")
		switch {
		case ok:
			node = strings.TrimSpace(node)
			depth := 0
			if strings.HasPrefix(node, "->  ") { // indented 2, 8, 14... spaces
				depth = (len(line) - len(strings.TrimLeft(line, " ")) + 4) / 6
				node = strings.TrimPrefix(node, "->  ")
			}
			nodes = append(nodes, strings.Repeat(">", depth)+node+" ("+rows)
		case strings.HasPrefix(line, "Execution Time: "):
			nodes = append(nodes, strings.TrimPrefix(line, "Execution Time: "))
		}
	}
	return strings.Join(nodes, "; ")
}

// benchPlanCommit is version of vol writing pageNos, each at its own
// offset of one segment per version.
func benchPlanCommit(vol, version int64, pageCount uint32, pageNos []uint32) pgschema.NewCommit {
	c := pgschema.NewCommit{
		Volume: vol, Version: version, Base: version - 1, ClientID: "bench", ClientSeq: version,
		Decision: pgschema.FastPath, PageCount: pageCount, ReceivedAt: time.Unix(1700000000, 0),
	}
	seg := fmt.Sprintf("segments/plan-%d-%d", vol, version)
	seen := map[uint32]bool{}
	for i, p := range pageNos {
		if seen[p] {
			continue
		}
		seen[p] = true
		c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: pages.Location{
			Segment: seg, FrameOffset: int64(i) * 1500, FrameLength: 1500, Hash: uint64(p)}})
	}
	return c
}

// TestStore_PageCountLookupPlan: under statistics taken before a volume
// grew, the page count of a version (inside PageAt, PagesAt and
// ChangedPages) is one probe of the commits' primary key. Led by the
// volume, the idempotency key's index used to win it and walk the volume's
// every commit (migration 0004).
func TestStore_PageCountLookupPlan(t *testing.T) {
	ctx := context.Background()
	s := mustOpenStore(t)
	stageOtherVolumes(t, s, 2000)
	v, err := s.CreateVolume(ctx, "grown", 4096)
	if err != nil {
		t.Fatal(err)
	}
	const versions = 2000
	var cs []pgschema.NewCommit
	for n := int64(1); n <= versions; n++ {
		cs = append(cs, benchPlanCommit(v.ID, n, 16, []uint32{1, 2 + uint32(n%15)}))
	}
	mustAppendAll(t, s, v.ID, cs)
	for _, r := range [][2]int64{{versions - 10, versions}, {0, versions}} {
		plan := explain(t, s, changedPagesSQL, false, v.ID, r[0], r[1])
		if !strings.Contains(plan, "commits_pkey") || strings.Contains(plan, "commits_idempotency_key") {
			t.Fatalf("ChangedPages(%d, %d): the page count is not looked up by the commits' primary key:\n%s", r[0], r[1], plan)
		}
	}
}
