package replay_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/replica"
	"github.com/cambiumdb/cambium/vfs"
)

// TestEngine_Determinism is DESIGN invariant 5 for SQL records: every
// commit a client replica captured, replayed on its base, gives the
// client's pages, with time, randomness, AUTOINCREMENT, triggers, DDL and
// a transaction that spills past the page cache.
func TestEngine_Determinism(t *testing.T) {
	ctx := context.Background()
	r, err := replica.Open(ctx, filepath.Join(t.TempDir(), "client.db"), replica.Options{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open(replica.DriverName, r.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		r.Close(ctx)
	})
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, a, b, c, d DEFAULT CURRENT_TIMESTAMP, e)`)
	exec(`CREATE TABLE log(t_id, r, at)`)
	exec(`CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO log VALUES(new.id, random(), datetime('now')); END`)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := tx.Exec(`INSERT INTO t(a, b, c, e) VALUES(random(), randomblob(16), datetime('now'), ?)`, fmt.Sprint("row", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE t SET a = abs(random()) % 100, e = CURRENT_TIMESTAMP WHERE id = 2`)
	exec(`INSERT INTO t(a, b, c, e) VALUES(:a, :b, unixepoch('now'), :e)`,
		sql.Named("a", 1.5), sql.Named("b", []byte{1, 2, 3}), sql.Named("e", nil))
	exec(`DELETE FROM t WHERE id = 3`)
	exec(`INSERT INTO t(a) VALUES(strftime('%Y-%m-%d %H:%M:%f', 'now'))`) // AUTOINCREMENT after a delete
	exec(`CREATE INDEX t_a ON t(a)`)
	tx, err = db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ { // past the replay connection's page cache
		if _, err := tx.Exec(`INSERT INTO t(b, e) VALUES(randomblob(1000), hex(randomblob(8)))`); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	exec(`DELETE FROM t WHERE id % 3 = 0`)

	pending, err := r.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) < 10 {
		t.Fatalf("pending=%d, want every transaction", len(pending))
	}
	e := replay.NewEngine()
	base := vfs.NewMemDB(r.PageSize())
	for i, pc := range pending {
		out := mustReplay(t, e, replay.Input{Source: base, Record: pc.Record, AllowDDL: true})
		if err := replay.Compare(out, &replay.Output{PageCount: pc.PageCount, Pages: pc.Pages}); err != nil {
			t.Fatalf("commit %d (%q…): %v", i, pc.Record.Statements[0].SQL, err)
		}
		mustApply(t, base, &replay.Output{PageCount: pc.PageCount, Pages: pc.Pages})
	}
	if got := mustQuery(t, base, "PRAGMA integrity_check"); got != "ok" {
		t.Fatalf("integrity_check=%q", got)
	}
}

func TestEngine_Replay(t *testing.T) {
	e := replay.NewEngine()
	t.Run("OK", func(t *testing.T) {
		base := mustBase(t, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP)")
		rec := sqlRecord("INSERT INTO t(v) VALUES('a')", "INSERT INTO t(v) VALUES(?)", "UPDATE t SET v = :v WHERE id = 1")
		rec.Statements[1].Args = []replay.Arg{{Value: replay.Value{Kind: replay.KindText, Text: "b"}}}
		rec.Statements[2].Args = []replay.Arg{{Name: "v", Value: replay.Value{Kind: replay.KindText, Text: "c"}}}
		out := mustReplay(t, e, replay.Input{Source: base, Record: rec})
		if _, ok := out.Pages[1]; !ok || out.PageCount != 2 || len(out.ReadSet) == 0 {
			t.Fatalf("Output=%d pages of %d, read set %v; want page 1 written, 2 pages, a read set", len(out.Pages), out.PageCount, out.ReadSet)
		}
		mustApply(t, base, out)
		if got, want := mustQuery(t, base, "SELECT group_concat(v || '@' || at, ',') FROM t"), "c@2023-11-14 22:13:20,b@2023-11-14 22:13:20"; got != want {
			t.Fatalf("rows=%q, want %q (values bound, the record's clock)", got, want)
		}
	})
	t.Run("NoChange", func(t *testing.T) {
		base := mustBase(t, "CREATE TABLE t(x)")
		out := mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord("UPDATE t SET x = 1 WHERE x = 42")})
		if len(out.Pages) != 0 || out.PageCount != 2 {
			t.Fatalf("Output=%d pages of %d, want none of 2", len(out.Pages), out.PageCount)
		}
	})
	t.Run("SourceUnchanged", func(t *testing.T) {
		base := mustBase(t, "CREATE TABLE t(x)")
		before := base.Bytes()
		mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord("INSERT INTO t VALUES(1)")})
		if string(base.Bytes()) != string(before) {
			t.Fatal("Replay changed its source")
		}
	})
	t.Run("IOError", func(t *testing.T) {
		src := &countingSource{MemDB: mustBase(t, "CREATE TABLE t(x)")}
		src.failing.Store(true)
		_, err := e.Replay(context.Background(), replay.Input{Source: src, Record: sqlRecord("INSERT INTO t VALUES(1)")})
		var re *replay.RejectError
		if err == nil || errors.As(err, &re) || !errors.Is(err, errSourceDown) {
			t.Fatalf("err=%v, want a plain error wrapping the source's", err)
		}
		src.failing.Store(false)
		mustReplay(t, e, replay.Input{Source: src, Record: sqlRecord("INSERT INTO t VALUES(1)")})
	})
	t.Run("Cancelled", func(t *testing.T) {
		base := mustBase(t, "CREATE TABLE t(x)")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.Replay(ctx, replay.Input{Source: base, Record: sqlRecord("INSERT INTO t VALUES(1)")})
		var re *replay.RejectError
		if !errors.Is(err, context.Canceled) || errors.As(err, &re) {
			t.Fatalf("err=%v, want context.Canceled, not a rejection", err)
		}
	})
}

// TestEngine_Hostile replays records that must be rejected, each with its
// code, and checks after each one that the engine still replays a good
// record and has given its slot back.
func TestEngine_Hostile(t *testing.T) {
	e := replay.NewEngine()
	e.Timeout = 500 * time.Millisecond
	base := mustBase(t,
		"CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)",
		"CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT CHECK (balance >= 0))",
		"INSERT INTO accounts VALUES(1, 10)")
	noTime := sqlRecord("INSERT INTO t(b) VALUES(1)")
	noTime.Context.Time = time.Time{}
	for _, tc := range []struct {
		name   string
		rec    *replay.Record
		ddl    bool
		code   replay.Code
		reason string // a substring of the reason
	}{
		{"Attach", sqlRecord("ATTACH DATABASE ':memory:' AS x"), true, replay.CodeSandbox, "ATTACH"},
		{"AttachFile", sqlRecord("ATTACH DATABASE '/tmp/cambium-replay-attack.db' AS x"), true, replay.CodeSandbox, "ATTACH"},
		{"LoadExtension", sqlRecord("SELECT load_extension('x')"), true, replay.CodeSandbox, "load_extension"},
		{"WritableSchema", sqlRecord("PRAGMA writable_schema=1"), true, replay.CodeSandbox, "writable_schema"},
		{"JournalMode", sqlRecord("PRAGMA journal_mode=DELETE"), true, replay.CodeSandbox, "journal_mode"},
		{"UserVersionNoDDL", sqlRecord("PRAGMA user_version=3"), false, replay.CodeSandbox, "user_version"},
		{"Commit", sqlRecord("INSERT INTO t(b) VALUES(1)", "COMMIT", "INSERT INTO t(b) VALUES(2)"), false, replay.CodeSandbox, "COMMIT"},
		{"Rollback", sqlRecord("ROLLBACK"), false, replay.CodeSandbox, "ROLLBACK"},
		{"Forever", sqlRecord("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) SELECT count(*) FROM r"), false, replay.CodeTimeout, ""},
		{"ForeverWrite", sqlRecord("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) INSERT INTO t(b) SELECT NULL FROM r WHERE x < 0"), false, replay.CodeTimeout, ""},
		{"ZeroblobSelect", sqlRecord("SELECT zeroblob(1000000000)"), false, replay.CodeTooBig, "too big"},
		{"ZeroblobInsert", sqlRecord("INSERT INTO t(b) VALUES(zeroblob(1<<30))"), false, replay.CodeTooBig, "too big"},
		{"Randomblob", sqlRecord("SELECT randomblob(1000000000)"), false, replay.CodeTooBig, "too big"},
		{"Printf", sqlRecord("SELECT printf('%.*c', 100000000, 'x')"), false, replay.CodeTooBig, "too big"},
		{"LongSQL", sqlRecord("SELECT '" + strings.Repeat("x", 2<<20) + "'"), false, replay.CodeTooBig, "too long"},
		{"Parse", sqlRecord("SELEC 1"), false, replay.CodeSQL, "syntax error"},
		{"NoSuchTable", sqlRecord("INSERT INTO nope VALUES(1)"), false, replay.CodeSQL, "no such table"},
		{"CreateTable", sqlRecord("CREATE TABLE x(a)"), false, replay.CodeSandbox, "CREATE TABLE"},
		{"CreateIndex", sqlRecord("CREATE INDEX t_b ON t(b)"), false, replay.CodeSandbox, "CREATE INDEX"},
		{"DropTable", sqlRecord("DROP TABLE t"), false, replay.CodeSandbox, "DROP TABLE"},
		{"AlterTable", sqlRecord("ALTER TABLE t ADD COLUMN z"), false, replay.CodeSandbox, "ALTER TABLE"},
		{"CreateTrigger", sqlRecord("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END"), false, replay.CodeSandbox, "CREATE TRIGGER"},
		{"Analyze", sqlRecord("ANALYZE"), false, replay.CodeSandbox, "schema changes"}, // it creates sqlite_stat1 first
		{"Check", sqlRecord("UPDATE accounts SET balance = balance - 20 WHERE id = 1"), false, replay.CodeConstraint, "CHECK constraint failed: balance >= 0"},
		{"Unique", sqlRecord("INSERT INTO accounts VALUES(1, 0)"), false, replay.CodeConstraint, "UNIQUE constraint failed: accounts.id"},
		{"Empty", sqlRecord(), false, replay.CodeRecord, "empty"},
		{"NoTime", noTime, false, replay.CodeRecord, "time"},
		{"BadMutationName", mutationRecord("Not Valid", "{}"), false, replay.CodeRecord, "name"},
		{"UnknownMutation", mutationRecord("nope", "{}"), false, replay.CodeUnknownMutation, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := e.Replay(context.Background(), replay.Input{Source: base, Record: tc.rec, AllowDDL: tc.ddl})
			re := wantReject(t, err, tc.code)
			if !strings.Contains(re.Reason, tc.reason) {
				t.Fatalf("Reason=%q, want it to mention %q", re.Reason, tc.reason)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("rejection took %v", d)
			}
			if got, want := replay.FreeSlots(), replay.MaxConcurrentReplays; got != want {
				t.Fatalf("free slots=%d after the rejection, want %d", got, want)
			}
			out := mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord("INSERT INTO t(b) VALUES(randomblob(8))")})
			if len(out.Pages) == 0 {
				t.Fatal("a good replay after the rejection wrote nothing")
			}
		})
	}
	t.Run("StatementIndex", func(t *testing.T) {
		_, err := e.Replay(context.Background(), replay.Input{Source: base, Record: sqlRecord("INSERT INTO t(b) VALUES(1)", "SELEC 2")})
		if re := wantReject(t, err, replay.CodeSQL); re.Statement != 1 {
			t.Fatalf("Statement=%d, want 1", re.Statement)
		}
	})
	t.Run("AllowDDL", func(t *testing.T) {
		out := mustReplay(t, e, replay.Input{Source: base, AllowDDL: true, Record: sqlRecord(
			"CREATE TABLE x(a)", "CREATE INDEX x_a ON x(a)", "ALTER TABLE x ADD COLUMN b", "PRAGMA user_version=3")})
		if len(out.Pages) == 0 {
			t.Fatal("DDL wrote nothing")
		}
	})
	t.Run("AllowedPragmasAndTemp", func(t *testing.T) {
		mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord(
			"PRAGMA table_info(t)", "PRAGMA user_version", "PRAGMA defer_foreign_keys=ON",
			"CREATE TEMP TABLE scratch(x)", "INSERT INTO scratch VALUES(1)",
			"SAVEPOINT a", "INSERT INTO t(b) SELECT x FROM scratch", "RELEASE a")})
	})
}

// TestEngine_MemoryLimits checks the limits that keep a replay's memory
// bounded: pages written, and SQLite's temporary storage.
func TestEngine_MemoryLimits(t *testing.T) {
	base := mustBase(t, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
	t.Run("DirtyPages", func(t *testing.T) {
		e := replay.NewEngine()
		e.MaxDirtyBytes = 64 << 10 // 16 pages
		_, err := e.Replay(context.Background(), replay.Input{Source: base, Record: sqlRecord(
			"WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r WHERE x < 100) INSERT INTO t(b) SELECT randomblob(3000) FROM r")})
		re := wantReject(t, err, replay.CodeTooBig)
		if !strings.Contains(re.Reason, "16 dirty pages") {
			t.Fatalf("Reason=%q, want the page limit", re.Reason)
		}
		mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord("INSERT INTO t(b) VALUES(1)")})
	})
	t.Run("Scratch", func(t *testing.T) {
		e := replay.NewEngine()
		e.MaxScratchBytes = 1 << 20
		_, err := e.Replay(context.Background(), replay.Input{Source: base, Record: sqlRecord(
			"WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r WHERE x < 20000) SELECT count(*) FROM (SELECT DISTINCT randomblob(500) FROM r)")})
		wantReject(t, err, replay.CodeTooBig)
		mustReplay(t, e, replay.Input{Source: base, Record: sqlRecord("INSERT INTO t(b) VALUES(1)")})
	})
}

// TestEngine_LazyReads is DESIGN "Snapshots for replay": a point update on
// a large database reads a handful of pages, not the database.
func TestEngine_LazyReads(t *testing.T) {
	db := mustBase(t,
		"CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
		"WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r WHERE x < 8000) INSERT INTO t SELECT x, zeroblob(1000) FROM r")
	n, _ := db.PageCount(context.Background())
	if n < 2000 {
		t.Fatalf("base has %d pages, want 2000+", n)
	}
	src := &countingSource{MemDB: db}
	rec := sqlRecord("UPDATE t SET v = ? WHERE id = ?")
	rec.Statements[0].Args = []replay.Arg{
		{Value: replay.Value{Kind: replay.KindBlob, Blob: []byte("new")}},
		{Value: replay.Value{Kind: replay.KindInt, Int: 4321}},
	}
	out := mustReplay(t, replay.NewEngine(), replay.Input{Source: src, Record: rec})
	t.Logf("ReadPage calls=%d, read set %v, pages written %d", src.reads.Load(), out.ReadSet, len(out.Pages))
	if got := src.reads.Load(); got > 10 {
		t.Fatalf("ReadPage calls=%d for a point update of a %d-page database, want <= 10", got, n)
	}
	if len(out.ReadSet) > 6 || len(out.Pages) > 3 {
		t.Fatalf("read set %v, %d pages written; want a root-to-leaf path", out.ReadSet, len(out.Pages))
	}
}

// TestEngine_Parallel runs more replays than there are slots, on separate
// sources, and checks each against the same replay run alone.
func TestEngine_Parallel(t *testing.T) {
	e := replay.NewEngine()
	const n = 3 * replay.MaxConcurrentReplays
	bases := make([]*vfs.MemDB, n)
	recs := make([]*replay.Record, n)
	want := make([]*replay.Output, n)
	for i := range n {
		bases[i] = mustBase(t, "CREATE TABLE t(id INTEGER PRIMARY KEY, v, at DEFAULT CURRENT_TIMESTAMP)")
		recs[i] = sqlRecord(fmt.Sprintf("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r WHERE x < %d) INSERT INTO t(v) SELECT random() FROM r", 50+i))
		recs[i].Context.Seed = uint64(i)
		want[i] = mustReplay(t, e, replay.Input{Source: bases[i], Record: recs[i]})
	}
	p := pool.New().WithErrors().WithMaxGoroutines(n)
	for i := range n {
		p.Go(func() error {
			out, err := e.Replay(context.Background(), replay.Input{Source: bases[i], Record: recs[i]})
			if err != nil {
				return fmt.Errorf("replay %d: %w", i, err)
			}
			if err := replay.Compare(out, want[i]); err != nil {
				return fmt.Errorf("replay %d: %w", i, err)
			}
			return nil
		})
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := replay.FreeSlots(); got != replay.MaxConcurrentReplays {
		t.Fatalf("free slots=%d, want %d", got, replay.MaxConcurrentReplays)
	}
}

// TestEngine_SlotWait fills every slot with a replay blocked reading its
// source; one more replay waits, and gives up with its context.
func TestEngine_SlotWait(t *testing.T) {
	e := replay.NewEngine()
	e.Timeout = time.Minute // the blocked replays must not time out
	src := &blockingSource{MemDB: mustBase(t, "CREATE TABLE t(x)"), gate: make(chan struct{})}
	rec := sqlRecord("INSERT INTO t VALUES(1)")
	p := pool.New().WithErrors()
	for range replay.MaxConcurrentReplays {
		p.Go(func() error {
			_, err := e.Replay(context.Background(), replay.Input{Source: src, Record: rec})
			return err
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for replay.FreeSlots() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("free slots=%d with %d replays blocked", replay.FreeSlots(), replay.MaxConcurrentReplays)
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := e.Replay(ctx, replay.Input{Source: src, Record: rec})
	var re *replay.RejectError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &re) {
		t.Fatalf("err=%v, want the caller's deadline while waiting for a slot", err)
	}
	close(src.gate)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	mustReplay(t, e, replay.Input{Source: src, Record: rec})
}

// blockingSource blocks every read until gate is closed.
type blockingSource struct {
	*vfs.MemDB
	gate chan struct{}
}

func (s *blockingSource) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	<-s.gate
	return s.MemDB.ReadPage(ctx, pgno, p)
}

// TestEngine_TimeoutBetweenStatements ends the replay's time while SQLite
// is between two statements of one SQL string, where mattn's single
// sqlite3_interrupt is lost: the progress handler must still stop the
// never-ending second statement. The replay spent its time waiting for
// pages, so the error is ErrSlowSource, not the record's rejection.
func TestEngine_TimeoutBetweenStatements(t *testing.T) {
	e := replay.NewEngine()
	e.Timeout = 100 * time.Millisecond
	src := &slowSource{MemDB: mustBase(t, "CREATE TABLE t(x)"), delay: 300 * time.Millisecond}
	rec := sqlRecord("INSERT INTO t VALUES(1); WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) SELECT count(*) FROM r")
	done := make(chan error, 1)
	go func() {
		_, err := e.Replay(context.Background(), replay.Input{Source: src, Record: rec})
		done <- err
	}()
	select {
	case err := <-done:
		var re *replay.RejectError
		if !errors.Is(err, replay.ErrSlowSource) || errors.As(err, &re) {
			t.Fatalf("err=%v, want ErrSlowSource and no rejection", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replay still running 10 s past its timeout")
	}
	src.delay = 0
	mustReplay(t, e, replay.Input{Source: src, Record: sqlRecord("INSERT INTO t VALUES(2)")})
}

// slowSource delays every read.
type slowSource struct {
	*vfs.MemDB
	delay time.Duration
}

func (s *slowSource) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	time.Sleep(s.delay)
	return s.MemDB.ReadPage(ctx, pgno, p)
}
