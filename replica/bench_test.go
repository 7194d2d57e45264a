package replica

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// BenchmarkCapture_Insert: one-row INSERT transactions through the cambium
// driver (capture, sidecar commit with fsync, main-file write with fsync).
func BenchmarkCapture_Insert(b *testing.B) {
	_, db := mustOpen(b, filepath.Join(b.TempDir(), "db"))
	mustExec(b, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mustExec(b, db, "INSERT INTO t(v) VALUES(?)", "hello")
	}
}

// BenchmarkPlainWAL_Insert: the same on a plain mattn SQLite file in WAL
// mode with synchronous=NORMAL.
func BenchmarkPlainWAL_Insert(b *testing.B) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(b.TempDir(), "db")+"?_journal_mode=WAL&_sync=NORMAL")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	mustExec(b, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mustExec(b, db, "INSERT INTO t(v) VALUES(?)", "hello")
	}
}
