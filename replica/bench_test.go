package replica

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// BenchmarkCapture_Insert: one-row INSERT transactions through the cambium
// driver: capture, a redo log append (fsynced with Full), pages into the
// overlay, and the checkpoints the bound forces (each folding the log into
// the sidecar), amortized.
func BenchmarkCapture_Insert(b *testing.B) {
	for _, d := range []Durability{DurabilityNormal, DurabilityFull} {
		b.Run(d.String(), func(b *testing.B) {
			r, db := mustOpenWith(b, filepath.Join(b.TempDir(), "db"), Options{Volume: "bench", Durability: d})
			mustExec(b, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mustExec(b, db, "INSERT INTO t(v) VALUES(?)", "hello")
			}
			b.StopTimer()
			if err := r.Checkpoint(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkPlainWAL_Insert: the same on a plain mattn SQLite file in WAL
// mode, with synchronous=NORMAL (what DurabilityNormal matches) and FULL.
func BenchmarkPlainWAL_Insert(b *testing.B) {
	for _, sync := range []string{"NORMAL", "FULL"} {
		b.Run(sync, func(b *testing.B) {
			db, err := sql.Open("sqlite3", "file:"+filepath.Join(b.TempDir(), "db")+"?_journal_mode=WAL&_sync="+sync)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			mustExec(b, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mustExec(b, db, "INSERT INTO t(v) VALUES(?)", "hello")
			}
		})
	}
}
