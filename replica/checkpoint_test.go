package replica

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/vfs"
)

var durabilities = []Durability{DurabilityNormal, DurabilityFull}

// mustPlain opens the oracle: a plain SQLite file (rollback journal) that
// runs the same statements as a replica.
func mustPlain(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=DELETE")
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	tb.Cleanup(func() { db.Close() })
	return db
}

// execAll runs q on every db.
func execAll(tb testing.TB, dbs []*sql.DB, q string, args ...any) {
	tb.Helper()
	for _, db := range dbs {
		mustExec(tb, db, q, args...)
	}
}

// mustSameFile fails unless two database images are equal, page 1's
// counters (bytes 24–27 and 92–95) aside.
func mustSameFile(tb testing.TB, got, want []byte, pageSize int) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("file has %d pages, want %d", len(got)/pageSize, len(want)/pageSize)
	}
	if len(got) == 0 {
		return
	}
	got, want = normalizeCounters(got), normalizeCounters(want)
	for off := 0; off < len(got); off += pageSize {
		if !bytes.Equal(got[off:off+pageSize], want[off:off+pageSize]) {
			tb.Fatalf("page %d differs from the plain SQLite file", off/pageSize+1)
		}
	}
}

// mustCrash ends r the way a killed process would: no checkpoint, the
// overlay lost, the files as they are.
func mustCrash(tb testing.TB, r *Replica, db *sql.DB) {
	tb.Helper()
	db.Close()
	r.setBroken(errCrash)
	if err := r.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

func mustCount(tb testing.TB, db *sql.DB, q string) int {
	tb.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}

// workload runs a mix of statements on every db: growth, updates, deletes
// and, when vacuum is set, a VACUUM that shrinks the file.
func workload(tb testing.TB, dbs []*sql.DB, from, n int, vacuum bool) {
	tb.Helper()
	for i := from; i < from+n; i++ {
		execAll(tb, dbs, "INSERT INTO t(v) VALUES(?)", strings.Repeat(fmt.Sprint(i%10), 300+i%500))
		if i%7 == 3 {
			execAll(tb, dbs, "UPDATE t SET v = v || 'u' WHERE id % 5 = ?", i%5)
		}
		if i%11 == 5 {
			execAll(tb, dbs, "DELETE FROM t WHERE id % 3 = 0 AND id < ?", i)
		}
	}
	if vacuum {
		execAll(tb, dbs, "DELETE FROM t WHERE id % 2 = 0")
		execAll(tb, dbs, "VACUUM")
	}
}

// TestReplica_Overlay: commits are read back through the overlay, the main
// file changes only at a checkpoint, and Close leaves the full state.
func TestReplica_Overlay(t *testing.T) {
	for _, d := range durabilities {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "db")
			r, db := mustOpenWith(t, path, Options{Volume: "test", Durability: d})
			plain := mustPlain(t, filepath.Join(dir, "plain"))
			dbs := []*sql.DB{db, plain}

			execAll(t, dbs, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
			workload(t, dbs, 0, 60, false)
			if got := mustRead(t, path); len(got) != 0 {
				t.Fatalf("main file has %d bytes before any checkpoint, want 0", len(got))
			}
			if got, want := mustCount(t, db, "SELECT count(*) FROM t"), mustCount(t, plain, "SELECT count(*) FROM t"); got != want {
				t.Fatalf("count through the overlay=%d, want %d", got, want)
			}
			mustIntegrity(t, db)
			st, err := r.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := int64(st.PageCount)*int64(r.PageSize()), int64(len(mustRead(t, filepath.Join(dir, "plain")))); got != want {
				t.Fatalf("Status.PageCount=%d pages, want %d", st.PageCount, want/int64(r.PageSize()))
			}

			if err := r.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			checkpointed := mustRead(t, path)
			mustSameFile(t, checkpointed, mustRead(t, filepath.Join(dir, "plain")), r.PageSize())

			// More commits, with a shrinking VACUUM: the main file keeps
			// the checkpointed state until Close.
			workload(t, dbs, 60, 40, true)
			if got := mustRead(t, path); !bytes.Equal(got, checkpointed) {
				t.Fatal("main file changed without a checkpoint")
			}
			mustIntegrity(t, db)
			wantPending := len(mustPending(t, r))
			db.Close()
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			mustSameFile(t, mustRead(t, path), mustRead(t, filepath.Join(dir, "plain")), r.PageSize())

			r2, db2 := mustOpenWith(t, path, Options{Durability: d})
			if got, want := mustCount(t, db2, "SELECT count(*) FROM t"), mustCount(t, plain, "SELECT count(*) FROM t"); got != want {
				t.Fatalf("count after reopen=%d, want %d", got, want)
			}
			if got := len(mustPending(t, r2)); got != wantPending {
				t.Fatalf("pending after reopen=%d, want %d", got, wantPending)
			}
			mustIntegrity(t, db2)
		})
	}
}

// TestReplica_CheckpointBound: a commit that brings the overlay to its
// bound checkpoints before COMMIT returns.
func TestReplica_CheckpointBound(t *testing.T) {
	t.Run("Commits", func(t *testing.T) {
		dir := t.TempDir()
		r, db := mustOpenWith(t, filepath.Join(dir, "db"), Options{Volume: "test", CheckpointCommits: 3})
		var applied []uint64
		r.faults.step = func(name string, seq uint64) error {
			if name == stepMarkApplied {
				applied = append(applied, seq)
			}
			return nil
		}
		plain := mustPlain(t, filepath.Join(dir, "plain"))
		dbs := []*sql.DB{db, plain}
		execAll(t, dbs, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
		for i := 0; i < 7; i++ {
			execAll(t, dbs, "INSERT INTO t(v) VALUES(?)", fmt.Sprint(i))
		}
		if got, want := fmt.Sprint(applied), "[3 6]"; got != want {
			t.Fatalf("checkpoints after commits %s, want %s", got, want)
		}
		// The eighth commit is still in the overlay: the main file holds 6.
		r.ov.mu.RLock()
		n := r.ov.commits
		r.ov.mu.RUnlock()
		if got, want := n, 2; got != want {
			t.Fatalf("overlay commits=%d, want %d", got, want)
		}
		mustSameFile(t, mustFile(t, r), mustRead(t, filepath.Join(dir, "plain")), r.PageSize())
	})
	t.Run("Bytes", func(t *testing.T) {
		r, db := mustOpenWith(t, filepath.Join(t.TempDir(), "db"), Options{Volume: "test", CheckpointBytes: 3 * 4096})
		mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
		for i := 0; i < 50; i++ {
			mustExec(t, db, "INSERT INTO t(v) VALUES(?)", strings.Repeat("x", 1000))
			r.ov.mu.RLock()
			got := r.ov.bytes(r.PageSize())
			r.ov.mu.RUnlock()
			// One commit may overshoot before it checkpoints; none stays over.
			if got >= 3*4096 {
				t.Fatalf("after insert %d the overlay holds %d bytes, want < %d", i, got, 3*4096)
			}
		}
		if got := mustCount(t, db, "SELECT count(*) FROM t"); got != 50 {
			t.Fatalf("count=%d, want 50", got)
		}
		mustIntegrity(t, db)
	})
}

// TestReplica_CheckpointCrash "crashes" a checkpoint at each step, and
// reopening must yield the file a plain SQLite has after the same statements.
func TestReplica_CheckpointCrash(t *testing.T) {
	steps := []string{stepSidecarSync, stepMainWrite, stepMainSync, stepMarkApplied}
	for _, d := range durabilities {
		for _, step := range append(steps, "torn") {
			for _, how := range []string{"Explicit", "Bound"} {
				t.Run(fmt.Sprintf("%s/%s/%s", d, step, how), func(t *testing.T) {
					testCheckpointCrash(t, d, step, how == "Bound")
				})
			}
		}
	}
}

func testCheckpointCrash(t *testing.T, d Durability, step string, bound bool) {
	ctx := context.Background()
	dir := t.TempDir()
	path, plainPath := filepath.Join(dir, "db"), filepath.Join(dir, "plain")
	opts := Options{Volume: "test", Durability: d}
	r, db := mustOpenWith(t, path, opts)
	plain := mustPlain(t, plainPath)
	dbs := []*sql.DB{db, plain}
	execAll(t, dbs, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	workload(t, dbs, 0, 30, false)
	before := mustFile(t, r)
	workload(t, dbs, 30, 30, true)

	// "torn": the main file was written but not synced, and the crash
	// tore the writes: every page the checkpoint touches holds garbage.
	failAt := step
	if step == "torn" {
		failAt = stepMainSync
	}
	r.faults.step = func(name string, seq uint64) error {
		if name == failAt {
			return errCrash
		}
		return nil
	}
	if bound {
		r.opts.CheckpointCommits = 1
		execAll(t, dbs, "INSERT INTO t(v) VALUES('last')") // COMMIT succeeds: it is in the sidecar
	} else if err := r.Checkpoint(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("Checkpoint=%v, want the simulated crash", err)
	}
	if err := r.brokenErr(); !errors.Is(err, ErrBroken) {
		t.Fatalf("broken=%v, want ErrBroken", err)
	}
	if step == stepSidecarSync || step == stepMainWrite {
		if got := mustRead(t, path); !bytes.Equal(got, before) {
			t.Fatalf("main file written although the crash came before %s", step)
		}
	}
	if step == "torn" {
		r.ov.mu.RLock()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for pgno := range r.ov.pages {
			f.WriteAt(bytes.Repeat([]byte{0xAB}, r.PageSize()), int64(pgno-1)*int64(r.PageSize()))
		}
		f.Close()
		r.ov.mu.RUnlock()
	}
	wantPending := len(mustPending(t, r))
	mustCrash(t, r, db)

	r2, db2 := mustOpenWith(t, path, opts)
	mustSameFile(t, mustRead(t, path), mustRead(t, plainPath), r2.PageSize())
	if got := len(mustPending(t, r2)); got != wantPending {
		t.Fatalf("pending after reopen=%d, want %d", got, wantPending)
	}
	if got, want := mustCount(t, db2, "SELECT count(*) FROM t"), mustCount(t, plain, "SELECT count(*) FROM t"); got != want {
		t.Fatalf("count after reopen=%d, want %d", got, want)
	}
	mustIntegrity(t, db2)
	// The repaired replica keeps working.
	execAll(t, []*sql.DB{db2, plain}, "INSERT INTO t(v) VALUES('after')")
	mustSameFile(t, mustFile(t, r2), mustRead(t, plainPath), r2.PageSize())
}

// TestReplica_CheckpointOrder checks, at every step, that the main file is
// never written for a commit before the sidecar fsync that covers it, and
// that applied_seq is recorded only after the main file's fsync.
func TestReplica_CheckpointOrder(t *testing.T) {
	for _, d := range durabilities {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "db")
			r, db := mustOpenWith(t, path, Options{Volume: "test", Durability: d, CheckpointCommits: 4})
			var (
				log       []string
				committed uint64 // last commit appended to the sidecar
				synced    uint64 // last commit covered by a sidecar fsync
				written   uint64 // last commit whose pages the main file may hold
				mainSync  uint64 // last commit in the fsynced main file
				mainImage = mustRead(t, path)
			)
			r.faults.step = func(name string, seq uint64) error {
				log = append(log, fmt.Sprintf("%s %d", name, seq))
				// Between checkpoints nothing touches the main file.
				if name == stepSidecarSync || name == stepCommit {
					if got := mustRead(t, path); !bytes.Equal(got, mainImage) {
						return fmt.Errorf("main file changed before %s %d", name, seq)
					}
				}
				switch name {
				case stepCommit:
					committed = seq
				case stepSidecarSync:
					if seq != committed {
						return fmt.Errorf("sidecar sync covers %d, last commit %d", seq, committed)
					}
					synced = seq
				case stepMainWrite:
					if seq > synced {
						return fmt.Errorf("main file written through commit %d, sidecar synced through %d", seq, synced)
					}
					written = seq
				case stepMainSync:
					if seq != written {
						return fmt.Errorf("main sync %d after main write %d", seq, written)
					}
					mainSync = seq
				case stepMarkApplied:
					if seq != mainSync {
						return fmt.Errorf("applied %d marked, main file synced through %d", seq, mainSync)
					}
					// Read after this hook returns, before the next commit.
					defer func() { mainImage = nil }()
				}
				return nil
			}
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
			for i := 0; i < 30; i++ {
				if mainImage == nil {
					mainImage = mustRead(t, path)
				}
				mustExec(t, db, "INSERT INTO t(v) VALUES(?)", strings.Repeat("y", 200*i))
				if i == 10 {
					p := mustPending(t, r)
					if err := r.MarkPushed(ctx, p[len(p)-1].Seq-1, 1); !errors.Is(err, ErrOutOfOrder) {
						t.Fatalf("MarkPushed out of order=%v, want ErrOutOfOrder", err)
					}
				}
				if err := r.brokenErr(); err != nil {
					t.Fatalf("after commit %d: %v\n%s", i, err, strings.Join(log, "\n"))
				}
			}
			if mainImage == nil {
				mainImage = mustRead(t, path)
			}
			// MarkPushed of a commit still in the overlay checkpoints it first.
			p := mustPending(t, r)
			if err := r.MarkPushed(ctx, p[0].Seq, 1); err != nil {
				t.Fatal(err)
			}
			if err := r.brokenErr(); err != nil {
				t.Fatalf("%v\n%s", err, strings.Join(log, "\n"))
			}
			if n := strings.Count(strings.Join(log, "\n"), stepMarkApplied); n < 7 {
				t.Fatalf("%d checkpoints, want at least 7:\n%s", n, strings.Join(log, "\n"))
			}
		})
	}
}

// TestReplica_ShrinkAndRegrow drives commit directly with page sets SQLite
// would not produce: a commit that cuts the file and a later one that
// regrows it without writing every page. The overlay, a checkpoint and a
// repair on Open must all agree with applying the commits in order to a
// file, where cut pages come back as zeros.
func TestReplica_ShrinkAndRegrow(t *testing.T) {
	ctx := context.Background()
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
	commits := []struct {
		count uint32
		pages map[uint32][]byte
	}{
		{6, map[uint32][]byte{1: page(1), 2: page(1), 3: page(1), 4: page(1), 5: page(1), 6: page(1)}},
		{2, map[uint32][]byte{1: page(2)}},
		{4, map[uint32][]byte{1: page(3), 4: page(3)}},
		{3, map[uint32][]byte{2: page(4)}},
		{6, map[uint32][]byte{6: page(5)}},
	}
	var want []byte // the model: apply in order to a file
	for _, c := range commits {
		next := make([]byte, int(c.count)*4096)
		copy(next, want)
		for pgno, p := range c.pages {
			copy(next[int(pgno-1)*4096:], p)
		}
		want = next
	}
	// "Garbage": after the crash the main file is longer than the last
	// checkpoint left it, with stale bytes, as a power loss that kept a
	// later write but not the truncate before it could leave it.
	for _, mode := range []string{"Checkpoint", "Crash", "Garbage"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			r, db := mustOpen(t, path)
			for i, c := range commits {
				if err := r.commit(ctx, &vfs.Capture{PageSize: 4096, PageCount: c.count, Pages: c.pages}); err != nil {
					t.Fatal(err)
				}
				if i == 1 {
					if err := r.Checkpoint(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := make([]byte, len(want))
			n, err := r.PageCount(ctx)
			if err != nil || int(n)*4096 != len(want) {
				t.Fatalf("PageCount=%d (%v), want %d", n, err, len(want)/4096)
			}
			for pgno := uint32(1); pgno <= n; pgno++ {
				if err := r.ReadPage(ctx, pgno, got[int(pgno-1)*4096:int(pgno)*4096]); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatal("pages read through the overlay differ from the commits applied in order")
			}
			switch mode {
			case "Checkpoint":
				if err := r.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
			case "Crash", "Garbage":
				mustCrash(t, r, db)
				if mode == "Garbage" {
					f, err := os.OpenFile(path, os.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					f.WriteAt(bytes.Repeat([]byte{0xAB}, 4*4096), 2*4096)
					f.Close()
				}
				mustOpen(t, path)
			}
			if got := mustRead(t, path); !bytes.Equal(got, want) {
				t.Fatal("main file differs from the commits applied in order")
			}
		})
	}
}
