package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplica_Reset drops local commits, one of them a VACUUM that cut the
// file below the base's size, and brings the replica to a later version of
// a source replica standing in for the server; then again with a crash
// midway, which Open must finish.
func TestReplica_Reset(t *testing.T) {
	for _, crash := range []string{"None", "AfterSidecarCommit", "BeforeMainSync"} {
		for _, d := range durabilities {
			t.Run(crash+"/"+d.String(), func(t *testing.T) { testReset(t, crash, d) })
		}
	}
}

func testReset(t *testing.T, crash string, d Durability) {
	ctx := context.Background()
	dir := t.TempDir()
	src, srcDB := mustOpen(t, filepath.Join(dir, "src"))
	path := filepath.Join(dir, "b")
	opts := Options{Volume: "test", Durability: d}
	b, bDB := mustOpenWith(t, path, opts)

	// Versions 1..k: the source's commits, applied to b.
	mustExec(t, srcDB, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	for i := 0; i < 120; i++ {
		mustExec(t, srcDB, "INSERT INTO t(v) VALUES(?)", strings.Repeat(fmt.Sprint(i%10), 400))
	}
	history := mustPending(t, src)
	for i, pc := range history {
		if err := b.ApplyRemote(ctx, uint64(i+1), pc.PageCount, pc.Pages); err != nil {
			t.Fatal(err)
		}
	}
	k := len(history)
	baseCount := history[k-1].PageCount

	// Local commits on b, shrinking the file below the base's size.
	mustExec(t, bDB, "DELETE FROM t WHERE id > 20")
	mustExec(t, bDB, "VACUUM")
	mustExec(t, bDB, "INSERT INTO t(v) VALUES('local')")
	before, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Pending != 3 || before.PageCount >= baseCount {
		t.Fatalf("Status=%+v, want 3 pending and fewer than %d pages", before, baseCount)
	}
	touched, err := b.PendingPageNumbers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := touched[len(touched)-1], baseCount; got != want {
		t.Fatalf("PendingPageNumbers ends at %d, want the base's last page %d", got, want)
	}

	// Versions k+1..m on the source.
	mustExec(t, srcDB, "UPDATE t SET v = 'changed' WHERE id % 10 = 0")
	mustExec(t, srcDB, "INSERT INTO t(v) VALUES('remote')")
	history = mustPending(t, src)
	m := len(history)
	head := mustFile(t, src)
	headCount := history[m-1].PageCount

	// What pull --reset fetches: the pages changed since the base, and the
	// pages the local commits touched, at head.
	pages := make(map[uint32][]byte)
	want := func(pgno uint32) {
		if pgno <= headCount {
			pages[pgno] = head[int(pgno-1)*b.PageSize() : int(pgno)*b.PageSize()]
		}
	}
	for _, pc := range history[k:] {
		for pgno := range pc.Pages {
			want(pgno)
		}
	}
	for _, pgno := range touched {
		want(pgno)
	}

	switch crash {
	case "AfterSidecarCommit":
		b.faults.afterSidecarCommit = func() error { return errCrash }
	case "BeforeMainSync":
		b.faults.step = func(name string, seq uint64) error {
			if name == stepMainSync && seq == 0 {
				return errCrash
			}
			return nil
		}
	}
	err = b.Reset(ctx, uint64(m), headCount, pages)
	if crash == "None" {
		if err != nil {
			t.Fatal(err)
		}
	} else {
		if !errors.Is(err, errCrash) {
			t.Fatalf("Reset=%v, want the simulated crash", err)
		}
		mustCrash(t, b, bDB)
		b, bDB = mustOpenWith(t, path, opts)
	}

	if got := mustRead(t, path); !bytes.Equal(got, head) {
		t.Fatal("main file after Reset differs from the source at head")
	}
	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.BaseVersion != uint64(m) || st.Pending != 0 || st.PageCount != headCount || st.NextSeq != before.NextSeq {
		t.Fatalf("Status=%+v, want base %d, 0 pending, %d pages, next seq %d", st, m, headCount, before.NextSeq)
	}
	if got, want := mustCount(t, bDB, "SELECT count(*) FROM t"), mustCount(t, srcDB, "SELECT count(*) FROM t"); got != want {
		t.Fatalf("count after Reset=%d, want %d", got, want)
	}
	if n := mustCount(t, bDB, "SELECT count(*) FROM t WHERE v = 'local'"); n != 0 {
		t.Fatalf("%d local rows after Reset, want 0", n)
	}
	mustIntegrity(t, bDB)
	// Sequence numbers are never reused.
	mustExec(t, bDB, "INSERT INTO t(v) VALUES('next')")
	if p := mustPending(t, b); len(p) != 1 || p[0].Seq != before.NextSeq || p[0].BaseVersion != uint64(m) {
		t.Fatalf("pending after Reset=%+v, want seq %d on base %d", p, before.NextSeq, m)
	}
}

func TestReplica_ResetPartialPage(t *testing.T) {
	r, _ := mustOpen(t, filepath.Join(t.TempDir(), "db"))
	err := r.Reset(context.Background(), 1, 1, map[uint32][]byte{1: make([]byte, 100)})
	if err == nil || r.brokenErr() != nil {
		t.Fatalf("Reset with a short page=%v (broken %v), want an error and a working replica", err, r.brokenErr())
	}
}
