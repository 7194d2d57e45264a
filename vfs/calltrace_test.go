package vfs

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
)

// callLog records main-file calls as compact tokens ("Read1", "Write3",
// "Lock2", "Sync", "Trunc5", "Unlock0"), collapsing consecutive reads or
// writes into one token with a count.
type callLog struct {
	pageSize int64
	calls    []string
}

func (l *callLog) record(op string, arg int64) {
	var tok string
	switch op {
	case "ReadAt":
		tok = "R"
	case "WriteAt":
		tok = fmt.Sprintf("W%d", arg/l.pageSize+1)
	case "Truncate":
		tok = fmt.Sprintf("Trunc%d", arg/l.pageSize)
	case "Sync":
		tok = "Sync"
	case "Lock":
		tok = fmt.Sprintf("Lock%d", arg)
	case "Unlock":
		tok = fmt.Sprintf("Unlock%d", arg)
	case "FileSize":
		tok = "Size"
	}
	l.calls = append(l.calls, tok)
}

func (l *callLog) String() string {
	var out []string
	for i := 0; i < len(l.calls); {
		j := i
		for j < len(l.calls) && l.calls[j] == l.calls[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s×%d", l.calls[i], j-i))
		} else {
			out = append(out, l.calls[i])
		}
		i = j
	}
	return strings.Join(out, " ")
}

func traced(t *testing.T, pageSize int64, fn func()) *callLog {
	t.Helper()
	l := &callLog{pageSize: pageSize}
	trace = l.record
	defer func() { trace = nil }()
	fn()
	return l
}

// TestVFS_CallOrder records which calls SQLite makes on the main database
// file at commit and rollback, and checks the facts the commit point rests
// on (see the package documentation).
func TestVFS_CallOrder(t *testing.T) {
	db, rec, _ := mustMount(t, 1024, "&_cache_size=10")
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	for i := 0; i < 50; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES(zeroblob(900))")
	}
	var l *callLog
	atCommit := -1
	commits := func() int { return rec.count() }

	// wantCommit asserts a capture was taken during the Sync call, with no
	// write after it.
	check := func(t *testing.T, name string, commit bool, n0 int) {
		t.Helper()
		t.Logf("%s: %s", name, l)
		sync := -1
		for i, c := range l.calls {
			if c == "Sync" && sync < 0 && commit {
				sync = i
			}
			if sync >= 0 && i > sync && strings.HasPrefix(c, "W") {
				t.Fatalf("%s: %s after Sync", name, c)
			}
		}
		if got := commits() - n0; commit && got != 1 || !commit && got != 0 {
			t.Fatalf("%s: %d commits", name, got)
		}
		if commit && atCommit != sync+1 {
			t.Fatalf("%s: committed after call %d, want during Sync (call %d)", name, atCommit, sync)
		}
	}
	run := func(t *testing.T, name string, commit bool, fn func()) {
		t.Helper()
		n0 := commits()
		l = &callLog{pageSize: 1024}
		atCommit = -1
		prev := rec.failWith
		trace = func(op string, arg int64) {
			l.record(op, arg)
		}
		hook := commitHook
		commitHook = func() { atCommit = len(l.calls) }
		fn()
		trace, commitHook, rec.failWith = nil, hook, prev
		check(t, name, commit, n0)
	}
	run(t, "autocommit UPDATE", true, func() { mustExec(t, db, "UPDATE t SET v=x'01' WHERE id=2") })
	run(t, "explicit COMMIT", true, func() { mustRunTx(t, db, true, 1) })
	run(t, "ROLLBACK", false, func() { mustRunTx(t, db, false, 1) })
	run(t, "ROLLBACK after spill", false, func() { mustRunTx(t, db, false, 60) })
	run(t, "COMMIT after spill", true, func() { mustRunTx(t, db, true, 60) })
	mustExec(t, db, "DELETE FROM t WHERE id > 5")
	run(t, "VACUUM", true, func() { mustExec(t, db, "VACUUM") })
	// The shrinking truncate comes after Sync (pager_end_transaction); the
	// capture already took the in-header size, so xFileSize reports it and
	// SQLite finds nothing left to truncate.
	if !strings.HasSuffix(l.String(), "Sync Size Unlock1 Unlock0") {
		t.Fatalf("VACUUM: %s, want Sync Size Unlock1 Unlock0 at the end", l)
	}
	if got, want := rec.last().PageCount, uint32(6); got != want {
		t.Fatalf("VACUUM: PageCount=%d, want %d", got, want)
	}
}

func mustRunTx(t *testing.T, db *sql.DB, commit bool, rows int) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		if _, err := tx.Exec("INSERT INTO t(v) VALUES(zeroblob(900))"); err != nil {
			t.Fatal(err)
		}
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
}
