package vfs

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// testVFS is registered once, before any traffic (see Register).
var testVFS *VFS

func TestMain(m *testing.M) {
	v, err := Register("cambium-vfs-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testVFS = v
	os.Exit(m.Run())
}

// recorder is a CommitFunc over a MemDB that keeps every Capture and can be
// told to fail.
type recorder struct {
	db *MemDB
	mu sync.Mutex
	// captures are the successful commits, in order.
	captures []*Capture
	failWith error
}

func (r *recorder) commit(ctx context.Context, c *Capture) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failWith != nil {
		return r.failWith
	}
	if err := r.db.Commit(ctx, c); err != nil {
		return err
	}
	r.captures = append(r.captures, c)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.captures)
}

func (r *recorder) last() *Capture {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.captures) == 0 {
		return nil
	}
	return r.captures[len(r.captures)-1]
}

var mountSeq int

// mustMount mounts a fresh MemDB on testVFS and opens one connection on it.
func mustMount(tb testing.TB, pageSize int, params string) (*sql.DB, *recorder, string) {
	tb.Helper()
	mountSeq++
	name := fmt.Sprintf("/mem/%s-%d.db", tb.Name(), mountSeq)
	rec := &recorder{db: NewMemDB(pageSize)}
	if err := testVFS.Mount(name, rec.db, rec.commit); err != nil {
		tb.Fatal(err)
	}
	dsn := fmt.Sprintf("file:%s?vfs=%s&_journal_mode=MEMORY&_sync=NORMAL%s", name, testVFS.Name(), params)
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	mustExec(tb, db, fmt.Sprintf("PRAGMA page_size=%d", pageSize))
	tb.Cleanup(func() {
		mustIntegrityOK(tb, db)
		db.Close()
		testVFS.Unmount(name)
	})
	return db, rec, name
}

// mustPlain opens a plain SQLite file on the default VFS, the oracle.
func mustPlain(tb testing.TB, pageSize int) (*sql.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "plain.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=MEMORY&_sync=NORMAL")
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	mustExec(tb, db, fmt.Sprintf("PRAGMA page_size=%d", pageSize))
	tb.Cleanup(func() { db.Close() })
	return db, path
}

func mustExec(tb testing.TB, db *sql.DB, q string, args ...any) {
	tb.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

func mustIntegrityOK(tb testing.TB, db *sql.DB) {
	tb.Helper()
	var got string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&got); err != nil {
		tb.Fatalf("integrity_check: %v", err)
	}
	if got != "ok" {
		tb.Fatalf("integrity_check=%q, want ok", got)
	}
}

// normalized zeroes the header counters that legitimately differ between
// two files with the same content (bytes 24–27 and 92–95).
func normalized(b []byte) []byte {
	b = append([]byte(nil), b...)
	if len(b) >= 100 {
		clear(b[24:28])
		clear(b[92:96])
	}
	return b
}

func diffPages(got, want []byte, pageSize int) error {
	got, want = normalized(got), normalized(want)
	if len(got) != len(want) {
		return fmt.Errorf("size %d, want %d", len(got), len(want))
	}
	for off := 0; off < len(got); off += pageSize {
		if string(got[off:off+pageSize]) != string(want[off:off+pageSize]) {
			return fmt.Errorf("page %d differs", off/pageSize+1)
		}
	}
	return nil
}

// headerPageCount reads bytes 28–31 of page 1.
func headerPageCount(p1 []byte) uint32 { return binary.BigEndian.Uint32(p1[28:]) }

var errInjected = errors.New("injected commit failure")
