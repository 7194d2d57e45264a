package conflict

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The scenarios of DESIGN.md's step 4, with real SQLite: every commit is
// made by SQLite on the Cambium VFS (exact read and write sets), decided by
// Detect, and every merge is applied on head's image and opened with plain
// SQLite, which must find both transactions' effects and pass
// integrity_check.

func TestDetect_WriteSkew(t *testing.T) {
	v := newVolume(t)
	// Rows 1 and 200 of one table sit on different leaves, so the two
	// transactions write disjoint pages: only the read set can catch them.
	v.fastPath(v.tx(0,
		"CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL, pad BLOB)",
		"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200) INSERT INTO acct SELECT i, 100, zeroblob(300) FROM s",
	))
	// Each checks that x + y stays non-negative, then withdraws from one.
	t1 := v.tx(1, "SELECT sum(bal) FROM acct WHERE id IN (1, 200)", "UPDATE acct SET bal = bal - 150 WHERE id = 1")
	t2 := v.tx(1, "SELECT sum(bal) FROM acct WHERE id IN (1, 200)", "UPDATE acct SET bal = bal - 150 WHERE id = 200")
	w1, w2 := others(t1), others(t2)
	if len(w1) != 1 || len(w2) != 1 || w1[0] == w2[0] {
		t.Fatalf("setup: t1 wrote %v, t2 wrote %v; want one distinct leaf each", w1, w2)
	}
	if r := v.push(1, t1); r != nil {
		t.Fatal("t1 was not on the fast path")
	}
	r := v.push(1, t2)
	if r.Mergeable() {
		t.Fatalf("write skew merged: %s", r.Reason())
	}
	if got, want := r.Page1, Page1Unchanged; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	want := []PageConflict{{Page: w1[0], Cause: Changed, Version: 2, Read: true}}
	if !slices.Equal(r.Conflicts, want) || r.ConflictCount != 1 {
		t.Fatalf("Conflicts=%+v (count %d), want %+v", r.Conflicts, r.ConflictCount, want)
	}
	if err := r.NameTables(t.Context(), reader(v.images[2], testPageSize, nil), testPageSize, v.count(2)); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Reason(), "page "+itoa(w1[0])+" (table acct) written by v2, read by this commit"; got != want {
		t.Fatalf("Reason()=%q, want %q", got, want)
	}
}

func itoa(p uint32) string { return strconv.FormatUint(uint64(p), 10) }

func TestDetect_AppendsToDifferentTables(t *testing.T) {
	v := newVolume(t)
	v.fastPath(v.tx(0,
		"CREATE TABLE a(id INTEGER PRIMARY KEY, pad BLOB)",
		"CREATE TABLE b(id INTEGER PRIMARY KEY, pad BLOB)",
		"INSERT INTO a VALUES(1, zeroblob(3000))",
		"INSERT INTO b VALUES(1, zeroblob(3000))",
	))
	// Neither row fits next to the first: each table's leaf splits, and
	// both commits allocate the same new pages at the end of the file.
	ca := v.tx(1, "INSERT INTO a VALUES(2, zeroblob(3000))")
	cb := v.tx(1, "INSERT INTO b VALUES(2, zeroblob(3000))")
	shared := v.count(1) + 1
	if ca.Pages[shared] == nil || cb.Pages[shared] == nil || slices.Contains(cb.ReadSet, shared) {
		t.Fatalf("setup: page %d not written by both without being read (a wrote %v, b wrote %v, b read %v)",
			shared, others(ca), others(cb), cb.ReadSet)
	}
	v.push(1, ca)
	r := v.push(1, cb)
	if r.Mergeable() {
		t.Fatalf("two appends merged: %s", r.Reason())
	}
	// Both grew the file, so page 1's page count changed on both sides too.
	if got, want := r.Page1, Page1BothChanged; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	i := slices.IndexFunc(r.Conflicts, func(c PageConflict) bool { return c.Page == shared })
	if i < 0 {
		t.Fatalf("page %d not among conflicts %+v", shared, r.Conflicts)
	}
	if got, want := r.Conflicts[i], (PageConflict{Page: shared, Cause: Changed, Version: 2, Written: true}); got != want {
		t.Fatalf("conflict=%+v, want %+v (write–write)", got, want)
	}
	if !strings.Contains(r.Reason(), "page 1 changed by head (database size, byte 28) and by this commit (database size, byte 28)") {
		t.Fatalf("Reason()=%q", r.Reason())
	}
}

func TestDetect_SchemaChangeOnHead(t *testing.T) {
	v := newVolume(t)
	v.fastPath(v.tx(0,
		"CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT)",
		"INSERT INTO t VALUES(1, 'a'), (2, 'b'), (3, 'c')",
	))
	v.fastPath(v.tx(1, "CREATE INDEX t_k ON t(k)"))
	stale := v.tx(1, "INSERT INTO t VALUES(4, 'd')")
	in := v.input(1, stale)
	r := Detect(in)
	if r.Mergeable() {
		t.Fatalf("stale insert merged over CREATE INDEX: %s", r.Reason())
	}
	if got, want := r.Page1, Page1SchemaChanged; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	// Page overlap alone cannot see it: CREATE INDEX read the table and
	// wrote only page 1 and the new index.
	if r.ConflictCount != 0 {
		t.Fatalf("ConflictCount=%d, want 0 (%+v)", r.ConflictCount, r.Conflicts)
	}
	if got, want := r.Reason(), "page 1: schema changed on head since v1 (schema cookie, byte 40)"; got != want {
		t.Fatalf("Reason()=%q, want %q", got, want)
	}
	// What merging would have produced: the row is missing from the index.
	img := resize(slices.Clone(v.images[2]), int(stale.PageCount)*testPageSize)
	for p, b := range stale.Pages {
		if p != 1 {
			copy(img[int(p-1)*testPageSize:], b)
		}
	}
	if got := integrity(t, openImage(t, img)); got == "ok" {
		t.Fatal("merging over CREATE INDEX passed integrity_check; the test shows nothing")
	}
}

func TestDetect_EmptyBase(t *testing.T) {
	v := newVolume(t)
	c1 := v.tx(0, "CREATE TABLE a(x)")
	c2 := v.tx(0, "CREATE TABLE b(x)")
	v.push(0, c1)
	r := v.push(0, c2)
	if r.Mergeable() || r.Page1 != Page1SchemaChanged {
		t.Fatalf("two creations of the database: Page1=%v, Mergeable=%v: %s", r.Page1, r.Mergeable(), r.Reason())
	}
}

func TestDetect_DisjointUpdates(t *testing.T) {
	v := seedTwoTables(t)
	v.fastPath(v.tx(1, "UPDATE b SET n = 7 WHERE id = 150"))
	stale := v.tx(1, "UPDATE a SET n = 5 WHERE id = 50")
	if stale.PageCount != v.count(1) || v.count(2) != v.count(1) {
		t.Fatal("setup: the page count changed")
	}
	r := v.push(1, stale)
	if !r.Mergeable() {
		t.Fatalf("disjoint updates did not merge: %s", r.Reason())
	}
	if got, want := r.Page1, Page1Unchanged; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	checkMerge(t, r.Merge, v.page(2, 1), v.page(2, 1), v.count(2))
	db := v.open(3)
	if got := queryInt(t, db, "SELECT n FROM a WHERE id = 50"); got != 5 {
		t.Fatalf("a.n=%d, want 5 (the merged commit's update)", got)
	}
	if got := queryInt(t, db, "SELECT n FROM b WHERE id = 150"); got != 7 {
		t.Fatalf("b.n=%d, want 7 (head's update)", got)
	}
	if got := queryInt(t, db, "SELECT sum(n) FROM a") + queryInt(t, db, "SELECT sum(n) FROM b"); got != 12 {
		t.Fatalf("sum=%d, want 12", got)
	}
	if got, want := r.Reason(), "mergeable on v2: page 1 unchanged, "+itoa(v.count(2))+" pages"; got != want {
		t.Fatalf("Reason()=%q, want %q", got, want)
	}
}

func TestDetect_ClientGrew(t *testing.T) {
	v := seedTwoTables(t)
	v.fastPath(v.tx(1, "UPDATE b SET n = 7 WHERE id = 150"))
	stale := v.tx(1, "WITH RECURSIVE s(i) AS (SELECT 201 UNION ALL SELECT i+1 FROM s WHERE i<260) INSERT INTO a SELECT i, 1, zeroblob(300) FROM s")
	if stale.PageCount <= v.count(1) {
		t.Fatal("setup: the commit did not grow the file")
	}
	r := v.push(1, stale)
	if !r.Mergeable() {
		t.Fatalf("append after an in-place update did not merge: %s", r.Reason())
	}
	if got, want := r.Page1, Page1FromClient; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	checkMerge(t, r.Merge, v.page(2, 1), stale.Pages[1], stale.PageCount)
	db := v.open(3)
	if got := queryInt(t, db, "SELECT count(*) FROM a"); got != 260 {
		t.Fatalf("count(a)=%d, want 260", got)
	}
	if got := queryInt(t, db, "SELECT n FROM b WHERE id = 150"); got != 7 {
		t.Fatalf("b.n=%d, want 7", got)
	}
}

func TestDetect_HeadGrew(t *testing.T) {
	v := seedTwoTables(t)
	v.fastPath(v.tx(1, "WITH RECURSIVE s(i) AS (SELECT 201 UNION ALL SELECT i+1 FROM s WHERE i<260) INSERT INTO b SELECT i, 1, zeroblob(300) FROM s"))
	if v.count(2) <= v.count(1) {
		t.Fatal("setup: head did not grow the file")
	}
	stale := v.tx(1, "UPDATE a SET n = 5 WHERE id = 50")
	r := v.push(1, stale)
	if !r.Mergeable() {
		t.Fatalf("in-place update after an append did not merge: %s", r.Reason())
	}
	if got, want := r.Page1, Page1FromHead; got != want {
		t.Fatalf("Page1=%v, want %v", got, want)
	}
	checkMerge(t, r.Merge, v.page(2, 1), v.page(2, 1), v.count(2))
	db := v.open(3)
	if got := queryInt(t, db, "SELECT count(*) FROM b"); got != 260 {
		t.Fatalf("count(b)=%d, want 260", got)
	}
	if got := queryInt(t, db, "SELECT n FROM a WHERE id = 50"); got != 5 {
		t.Fatalf("a.n=%d, want 5", got)
	}
}

// checkMerge checks m against the page 1 that should supply it: equal but
// for the counters, which are head's change counter + 1.
func checkMerge(t *testing.T, m *Merge, headPage1, from []byte, count uint32) {
	t.Helper()
	if m.PageCount != count {
		t.Fatalf("Merge.PageCount=%d, want %d", m.PageCount, count)
	}
	want := slices.Clone(from)
	next := binary.BigEndian.Uint32(headPage1[hdrChangeCounter:]) + 1
	binary.BigEndian.PutUint32(want[hdrChangeCounter:], next)
	binary.BigEndian.PutUint32(want[hdrVersionValid:], next)
	if !bytes.Equal(m.Page1, want) {
		t.Fatalf("Merge.Page1 differs from the supplying page 1 with counters %d at byte %d", next, firstDiff(m.Page1, want, 0))
	}
}

func TestDetect_Shrink(t *testing.T) {
	t.Run("Vacuum", func(t *testing.T) {
		v := seedTwoTables(t)
		v.fastPath(v.tx(1, "DELETE FROM b WHERE id > 20"))
		v.fastPath(v.autocommit(2, "VACUUM"))
		if v.count(3) >= v.count(2) {
			t.Fatal("setup: VACUUM did not shrink the file")
		}
		for _, c := range []struct {
			base int64
			sql  string
		}{
			{2, "UPDATE a SET n = 1 WHERE id = 1"},
			{2, "UPDATE a SET n = 1 WHERE id = 200"},
			{2, "INSERT INTO a VALUES(1000, 1, NULL)"},
			{2, "DELETE FROM b WHERE id = 3"},
			{1, "UPDATE b SET n = 1 WHERE id = 200"},
		} {
			r := Detect(v.input(c.base, v.tx(c.base, c.sql)))
			if r.Mergeable() {
				t.Fatalf("%s on v%d merged over VACUUM: %s", c.sql, c.base, r.Reason())
			}
			// VACUUM adds one to the schema cookie.
			if r.Page1 != Page1SchemaChanged {
				t.Fatalf("%s: Page1=%v, want %v", c.sql, r.Page1, Page1SchemaChanged)
			}
		}
	})
	t.Run("IncrementalVacuum", func(t *testing.T) {
		// auto_vacuum shrinks the file without touching the schema cookie:
		// the page rules alone must catch a write to a page cut off.
		v := newVolume(t)
		v.fastPath(v.autocommit(0, "PRAGMA auto_vacuum = INCREMENTAL"))
		v.fastPath(v.tx(1,
			"CREATE TABLE a(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad BLOB)",
			"CREATE TABLE b(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad BLOB)",
			"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200) INSERT INTO a SELECT i, 0, zeroblob(300) FROM s",
			"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200) INSERT INTO b SELECT i, 0, zeroblob(300) FROM s",
		))
		v.fastPath(v.tx(2, "DELETE FROM a WHERE id > 10", "PRAGMA incremental_vacuum"))
		if v.count(3) >= v.count(2) {
			t.Fatal("setup: incremental_vacuum did not shrink the file")
		}
		stale := v.tx(2, "UPDATE b SET n = 1 WHERE id = 200")
		last := others(stale)
		if last[len(last)-1] <= v.count(3) {
			t.Fatalf("setup: the commit wrote %v, none beyond head's %d pages", last, v.count(3))
		}
		r := Detect(v.input(2, stale))
		if r.Mergeable() {
			t.Fatalf("write to a truncated page merged: %s", r.Reason())
		}
		i := slices.IndexFunc(r.Conflicts, func(c PageConflict) bool { return c.Cause == Truncated && c.Written })
		if i < 0 {
			t.Fatalf("no truncated page among %+v", r.Conflicts)
		}
		if !strings.Contains(r.Reason(), "cut off by head ("+itoa(v.count(3))+" pages), read and written by this commit") {
			t.Fatalf("Reason()=%q", r.Reason())
		}
	})
}
