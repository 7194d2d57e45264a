package replay_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, to read results back

	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/vfs"
)

const pageSize = 4096

// testContext is a replay context for hand-written records.
func testContext() replay.Context {
	return replay.Context{Time: time.UnixMilli(1_700_000_000_000).UTC(), Seed: 7, TZ: "UTC"}
}

func sqlRecord(stmts ...string) *replay.Record {
	rec := &replay.Record{Context: testContext()}
	for _, s := range stmts {
		rec.Statements = append(rec.Statements, replay.Statement{SQL: s})
	}
	return rec
}

func mutationRecord(name, args string) *replay.Record {
	m := &replay.Mutation{Name: name}
	if args != "" {
		m.Args = []byte(args)
	}
	return &replay.Record{Context: testContext(), Mutation: m}
}

// mustReplay runs in on e and fails the test on any error.
func mustReplay(tb testing.TB, e *replay.Engine, in replay.Input) *replay.Output {
	tb.Helper()
	out, err := e.Replay(context.Background(), in)
	if err != nil {
		tb.Fatalf("Replay: %v", err)
	}
	return out
}

// mustApply stores out in db, as a committer would.
func mustApply(tb testing.TB, db *vfs.MemDB, out *replay.Output) {
	tb.Helper()
	if err := db.Commit(context.Background(), &vfs.Capture{PageSize: db.PageSize(), PageCount: out.PageCount, Pages: out.Pages}); err != nil {
		tb.Fatal(err)
	}
}

// mustBase returns a database built by replaying stmts, one record each,
// with DDL allowed.
func mustBase(tb testing.TB, stmts ...string) *vfs.MemDB {
	tb.Helper()
	db := vfs.NewMemDB(pageSize)
	e := replay.NewEngine()
	for _, s := range stmts {
		mustApply(tb, db, mustReplay(tb, e, replay.Input{Source: db, Record: sqlRecord(s), AllowDDL: true}))
	}
	return db
}

// mustQuery reads a copy of db as a plain SQLite file and returns the
// first column of q's first row.
func mustQuery(tb testing.TB, db *vfs.MemDB, q string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "copy.db")
	if err := os.WriteFile(path, db.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	sdb, err := sql.Open("sqlite3", path)
	if err != nil {
		tb.Fatal(err)
	}
	defer sdb.Close()
	var s sql.NullString
	if err := sdb.QueryRow(q).Scan(&s); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return s.String
}

// wantReject fails the test unless err is a *RejectError with code.
func wantReject(tb testing.TB, err error, code replay.Code) *replay.RejectError {
	tb.Helper()
	var re *replay.RejectError
	if !errors.As(err, &re) {
		tb.Fatalf("err=%v (%T), want a RejectError %q", err, err, code)
	}
	if re.Code != code {
		tb.Fatalf("Code=%q (%v), want %q", re.Code, re, code)
	}
	return re
}

// countingSource counts the pages read from a MemDB, and can be told to fail.
type countingSource struct {
	*vfs.MemDB
	reads   atomic.Int64
	failing atomic.Bool
}

var errSourceDown = errors.New("page store unavailable")

func (s *countingSource) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	s.reads.Add(1)
	if s.failing.Load() {
		return errSourceDown
	}
	return s.MemDB.ReadPage(ctx, pgno, p)
}
