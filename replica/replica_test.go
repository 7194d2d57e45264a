package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var errCrash = errors.New("simulated crash")

func mustOpen(tb testing.TB, path string) (*Replica, *sql.DB) {
	tb.Helper()
	return mustOpenWith(tb, path, Options{Volume: "test"})
}

// mustOpenWith opens a replica and a *sql.DB on it, both closed at cleanup.
func mustOpenWith(tb testing.TB, path string, opts Options) (*Replica, *sql.DB) {
	tb.Helper()
	r, err := Open(context.Background(), path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	db, err := sql.Open(DriverName, r.Path())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		db.Close()
		r.Close(context.Background())
	})
	return r, db
}

func mustExec(tb testing.TB, db *sql.DB, q string, args ...any) {
	tb.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

func mustPending(tb testing.TB, r *Replica) []PendingCommit {
	tb.Helper()
	p, err := r.Pending(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// mustFile checkpoints r and returns its main file, the latest local state.
func mustFile(tb testing.TB, r *Replica) []byte {
	tb.Helper()
	if err := r.Checkpoint(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return mustRead(tb, r.Path())
}

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// applyTo applies a pending commit's pages to a file image.
func applyTo(img []byte, pc PendingCommit, pageSize int) []byte {
	out := make([]byte, int(pc.PageCount)*pageSize)
	copy(out, img)
	for pgno, p := range pc.Pages {
		copy(out[int(pgno-1)*pageSize:], p)
	}
	return out
}

func mustIntegrity(tb testing.TB, db *sql.DB) {
	tb.Helper()
	var got string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&got); err != nil || got != "ok" {
		tb.Fatalf("integrity_check=%q (%v), want ok", got, err)
	}
}

func TestReplica_Commit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	r, db := mustOpen(t, path)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP, r INT)")
	before := mustFile(t, r)

	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO t(name, r) VALUES(?, random())", "a"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM t WHERE name = ?", "a").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("UPDATE t SET name = :n WHERE id = 1", sql.Named("n", "b")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	p := mustPending(t, r)
	if got, want := len(p), 2; got != want {
		t.Fatalf("pending=%d, want %d", got, want)
	}
	pc := p[1]
	if got, want := applyTo(before, pc, r.PageSize()), mustFile(t, r); string(got) != string(want) {
		t.Fatal("pending pages applied to the previous file differ from the current file")
	}
	if got, want := len(pc.Record.Statements), 3; got != want {
		t.Fatalf("statements=%d, want %d", got, want)
	}
	if got, want := pc.Record.Statements[2].Args[0].Name, "n"; got != want {
		t.Fatalf("named arg=%q, want %q", got, want)
	}
	if len(pc.ReadSet) == 0 || pc.ReadSet[0] != 1 {
		t.Fatalf("ReadSet=%v, want page 1 first", pc.ReadSet)
	}
	// The clock SQLite saw is the recorded one.
	var at string
	if err := db.QueryRow("SELECT at FROM t WHERE id=1").Scan(&at); err != nil {
		t.Fatal(err)
	}
	if want := pc.Record.Context.Time.Format("2006-01-02 15:04:05"); at != want {
		t.Fatalf("DEFAULT CURRENT_TIMESTAMP=%q, want the recorded %q", at, want)
	}
	mustIntegrity(t, db)
}

func TestReplica_Rollback(t *testing.T) {
	r, db := mustOpen(t, filepath.Join(t.TempDir(), "db"))
	mustExec(t, db, "CREATE TABLE t(x)")
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO t VALUES(1)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := len(mustPending(t, r)); got != 1 {
		t.Fatalf("pending=%d after ROLLBACK, want 1", got)
	}
}

func TestReplica_LargeTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	r, db := mustOpen(t, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "PRAGMA cache_size=10")
	mustExec(t, db, "CREATE TABLE t(x)")
	before := mustFile(t, r)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := tx.Exec("INSERT INTO t VALUES(randomblob(1000))"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	p := mustPending(t, r)
	pc := p[len(p)-1]
	if len(pc.Pages) < 50 {
		t.Fatalf("pages=%d, want more than the cache", len(pc.Pages))
	}
	if got, want := applyTo(before, pc, r.PageSize()), mustFile(t, r); string(got) != string(want) {
		t.Fatal("pending pages applied to the previous file differ from the current file")
	}
	mustIntegrity(t, db)
}

func TestReplica_CrashAfterSidecarCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	r, err := Open(context.Background(), path, Options{Volume: "test"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open(DriverName, r.Path())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "CREATE TABLE t(x)")
	before := mustFile(t, r)
	r.faults.afterSidecarCommit = func() error { return errCrash }
	mustExec(t, db, "INSERT INTO t VALUES('durable')")
	if got := mustRead(t, path); string(got) != string(before) {
		t.Fatal("main file changed although the crash came before writing it")
	}
	if _, err := db.Exec("INSERT INTO t VALUES('after')"); !errors.Is(r.brokenErr(), ErrBroken) || err == nil {
		t.Fatalf("write after a crash: %v, want an error (broken: %v)", err, r.brokenErr())
	}
	db.Close()
	r.Close(context.Background())

	r2, db2 := mustOpen(t, path)
	var got []string
	rows, err := db2.Query("SELECT x FROM t ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		got = append(got, s)
	}
	rows.Close()
	if fmt.Sprint(got) != "[durable]" {
		t.Fatalf("rows after reopen=%v, want [durable]", got)
	}
	if p := mustPending(t, r2); len(p) != 2 {
		t.Fatalf("pending=%d, want 2", len(p))
	}
	mustIntegrity(t, db2)
}

func TestReplica_ApplyRemote(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src, srcDB := mustOpen(t, filepath.Join(dir, "src"))
	a, aDB := mustOpen(t, filepath.Join(dir, "a"))
	b, _ := mustOpen(t, filepath.Join(dir, "b"))

	// The source's commits stand in for a server's versions.
	mustExec(t, srcDB, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	for i := 0; i < 20; i++ {
		mustExec(t, srcDB, "INSERT INTO t(v) VALUES(?)", fmt.Sprint("v", i))
	}
	mustExec(t, srcDB, "DELETE FROM t WHERE id > 10")
	mustExec(t, srcDB, "VACUUM")
	for i, pc := range mustPending(t, src) {
		for _, rep := range []*Replica{a, b} {
			if err := rep.ApplyRemote(ctx, uint64(i+1), pc.PageCount, pc.Pages); err != nil {
				t.Fatal(err)
			}
		}
	}
	ga, gb, gs := mustFile(t, a), mustFile(t, b), mustFile(t, src)
	if string(ga) != string(gb) {
		t.Fatal("replicas fed the same ApplyRemote calls differ")
	}
	if string(ga) != string(gs) {
		t.Fatal("replica differs from the source")
	}
	var n int
	if err := aDB.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 10 {
		t.Fatalf("count=%d (%v), want 10", n, err)
	}
	mustIntegrity(t, aDB)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.BaseVersion, uint64(len(mustPending(t, src))); got != want {
		t.Fatalf("BaseVersion=%d, want %d", got, want)
	}
	// A local commit blocks ApplyRemote until pushed.
	mustExec(t, aDB, "INSERT INTO t(v) VALUES('local')")
	if err := a.ApplyRemote(ctx, 99, 1, nil); !errors.Is(err, ErrPendingCommits) {
		t.Fatalf("ApplyRemote with pending=%v, want ErrPendingCommits", err)
	}
	p := mustPending(t, a)
	if err := a.MarkPushed(ctx, p[0].Seq+1, 50); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("MarkPushed out of order=%v, want ErrOutOfOrder", err)
	}
	if err := a.MarkPushed(ctx, p[0].Seq, 50); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Status(ctx); st.Pending != 0 || st.BaseVersion != 50 {
		t.Fatalf("Status=%+v, want no pending, base 50", st)
	}
}

// replayRecord runs rec's statements in one transaction on a connection
// of db with rec's context, the way the server's replay will.
func replayRecord(t *testing.T, db *sql.DB, rec *Record) {
	t.Helper()
	ctx := context.Background()
	sc, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	err = sc.Raw(func(dc any) error {
		c := dc.(*conn)
		c.r.writeMu <- struct{}{}
		c.setContextLocked(rec.Context)
		defer c.endWrite()
		if _, err := c.sc.ExecContext(ctx, "BEGIN IMMEDIATE", nil); err != nil {
			return err
		}
		for _, st := range rec.Statements {
			if err := c.record(st.SQL, st.NamedValues()); err != nil {
				return err
			}
			if _, err := c.sc.ExecContext(ctx, st.SQL, st.NamedValues()); err != nil {
				return err
			}
		}
		_, err := c.sc.ExecContext(ctx, "COMMIT", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReplica_Determinism replays each pending record of one replica on a
// second one with the same base: the pages must come out identical, with
// random(), randomblob() and 'now' in the statements.
func TestReplica_Determinism(t *testing.T) {
	dir := t.TempDir()
	r1, d1 := mustOpen(t, filepath.Join(dir, "1"))
	r2, d2 := mustOpen(t, filepath.Join(dir, "2"))
	mustExec(t, d1, "CREATE TABLE t(a, b, c, d DEFAULT CURRENT_TIMESTAMP)")
	tx, err := d1.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := tx.Exec("INSERT INTO t(a,b,c) VALUES(random(), randomblob(?), datetime('now'))", 8+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, d1, "UPDATE t SET a = abs(random()) % 100 WHERE rowid = 2")
	for _, pc := range mustPending(t, r1) {
		replayRecord(t, d2, pc.Record)
	}
	if string(normalizeCounters(mustFile(t, r1))) != string(normalizeCounters(mustFile(t, r2))) {
		t.Fatal("replaying the records on the same base produced different files")
	}
	p1, p2 := mustPending(t, r1), mustPending(t, r2)
	for i := range p1 {
		for pgno, p := range p1[i].Pages {
			q := p2[i].Pages[pgno]
			if pgno == 1 {
				p, q = normalizeCounters(p), normalizeCounters(q)
			}
			if string(p) != string(q) {
				t.Fatalf("commit %d page %d differs after replay", i, pgno)
			}
		}
	}
}

func normalizeCounters(p []byte) []byte {
	p = append([]byte{}, p...)
	clear(p[24:28])
	clear(p[92:96])
	return p
}

func TestReplica_Closed(t *testing.T) {
	ctx := context.Background()
	r, err := Open(ctx, filepath.Join(t.TempDir(), "c.db"), Options{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	checks := map[string]error{}
	_, checks["Status"] = r.Status(ctx)
	_, checks["Pending"] = r.Pending(ctx)
	_, checks["PendingPageNumbers"] = r.PendingPageNumbers(ctx)
	checks["MarkPushed"] = r.MarkPushed(ctx, 1, 1)
	checks["Checkpoint"] = r.Checkpoint(ctx)
	checks["ApplyRemote"] = r.ApplyRemote(ctx, 1, 0, nil)
	_, checks["PageCount"] = r.PageCount(ctx)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
