package replica

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
)

// mustSamePending fails unless two lists of pending commits carry the same
// sequence numbers, page counts and pages.
func mustSamePending(tb testing.TB, got, want []PendingCommit) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d pending commits, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.PageCount != w.PageCount || !reflect.DeepEqual(g.Pages, w.Pages) {
			tb.Fatalf("pending commit %d (seq %d, %d pages) differs from seq %d, %d pages", i, g.Seq, g.PageCount, w.Seq, w.PageCount)
		}
	}
}

// TestReplica_Deltas: commits store rewritten pages as deltas, Pending
// gives back whole pages, MarkPushed keeps them decodable as the oldest
// commits go, and a crash is repaired from them.
func TestReplica_Deltas(t *testing.T) {
	for _, d := range durabilities {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path, plainPath := filepath.Join(dir, "db"), filepath.Join(dir, "plain")
			opts := Options{Volume: "test", Durability: d, CheckpointCommits: 7}
			r, db := mustOpenWith(t, path, opts)
			plain := mustPlain(t, plainPath)
			dbs := []*sql.DB{db, plain}
			execAll(t, dbs, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
			workload(t, dbs, 0, 40, true)
			workload(t, dbs, 40, 10, false)

			want := mustPending(t, r)
			if err := r.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := r.side.db.QueryRow("SELECT count(*) FROM pending WHERE length(deltas) > 1").Scan(&n); err != nil || n == 0 {
				t.Fatalf("%d pending rows with deltas (%v), want some", n, err)
			}
			// Whole pages, each commit applied to the state before it:
			// the result is the plain file.
			var img []byte
			for _, pc := range want {
				img = applyTo(img, pc, r.PageSize())
			}
			mustSameFile(t, img, mustRead(t, plainPath), r.PageSize())

			for i := 0; i < len(want); i++ {
				if err := r.MarkPushed(ctx, want[i].Seq, uint64(i+1)); err != nil {
					t.Fatalf("MarkPushed(%d): %v", want[i].Seq, err)
				}
				if i%9 == 4 {
					// Some commits on top, then a crash: Open decodes
					// them and the rest of the chain.
					execAll(t, dbs, "INSERT INTO t(v) VALUES(?)", fmt.Sprint("more ", i))
					more := mustPending(t, r)
					want = append(want, more[len(more)-1])
					mustCrash(t, r, db)
					r, db = mustOpenWith(t, path, opts)
					dbs[0] = db
				}
				mustSamePending(t, mustPending(t, r), want[i+1:])
			}
			mustSameFile(t, mustFile(t, r), mustRead(t, plainPath), r.PageSize())
			mustIntegrity(t, db)
		})
	}
}

func TestPageChain_Decode(t *testing.T) {
	const ps = 512
	page := func(b byte, n int) []byte {
		p := make([]byte, ps)
		copy(p, bytes.Repeat([]byte{b}, n))
		return p
	}
	commits := []map[uint32][]byte{
		{1: page(1, 10), 2: page(2, ps)},
		{1: page(3, 12), 3: page(4, 100)},
		{1: page(5, 12), 2: page(6, 50), 3: page(7, 300)},
	}
	var enc pageSetEncoder
	latest := map[uint32][]byte{}
	var rows [][3][]byte
	for _, c := range commits {
		nums, deltas, packed := enc.encode(c, func(pgno uint32) []byte { return latest[pgno] })
		rows = append(rows, [3][]byte{bytes.Clone(nums), bytes.Clone(deltas), bytes.Clone(packed)})
		for pgno, p := range c {
			latest[pgno] = p
		}
	}
	ch := make(pageChain)
	for i, row := range rows {
		got, err := ch.decode(row[0], row[1], row[2], ps)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, commits[i]) {
			t.Fatalf("commit %d decoded differs", i)
		}
	}
	t.Run("NoBase", func(t *testing.T) {
		if _, err := make(pageChain).decode(rows[1][0], rows[1][1], rows[1][2], ps); err == nil {
			t.Fatal("delta of no earlier version decoded")
		}
	})
}

// FuzzPageChain_Decode: decoding arbitrary blobs fails cleanly or yields
// whole pages of the page set.
func FuzzPageChain_Decode(f *testing.F) {
	var enc pageSetEncoder
	p := bytes.Repeat([]byte{7}, 512)
	nums, deltas, packed := enc.encode(map[uint32][]byte{1: p, 3: p}, func(pgno uint32) []byte {
		if pgno == 3 {
			return make([]byte, 512)
		}
		return nil
	})
	f.Add(bytes.Clone(nums), bytes.Clone(deltas), bytes.Clone(packed))
	f.Fuzz(func(t *testing.T, nums, deltas, packed []byte) {
		ch := pageChain{3: make([]byte, 512)}
		pages, err := ch.decode(nums, deltas, packed, 512)
		if err != nil {
			return
		}
		for pgno, p := range pages {
			if len(p) != 512 || !bytes.Equal(ch[pgno], p) {
				t.Fatalf("page %d: %d bytes, chain not updated", pgno, len(p))
			}
		}
	})
}
