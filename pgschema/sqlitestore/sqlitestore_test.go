package sqlitestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

func TestStore_Open(t *testing.T) {
	ctx := context.Background()

	t.Run("Pragmas", func(t *testing.T) {
		s := mustOpen(t)
		for _, tt := range []struct {
			pragma string
			want   string
		}{
			{"journal_mode", "wal"},
			{"synchronous", "2"}, // FULL
			{"foreign_keys", "1"},
			{"busy_timeout", "5000"},
		} {
			var got string
			if err := s.w.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
			}
			if got != tt.want {
				t.Errorf("PRAGMA %s=%q, want %q", tt.pragma, got, tt.want)
			}
		}
		var qo string
		if err := s.r.QueryRowContext(ctx, "PRAGMA query_only").Scan(&qo); err != nil || qo != "1" {
			t.Errorf("read pool PRAGMA query_only=%q (%v), want 1", qo, err)
		}
		if _, err := s.r.ExecContext(ctx, `INSERT INTO segments (key, created_at) VALUES ('x', 0)`); err == nil {
			t.Errorf("write on the read pool succeeded, want an error")
		}
	})

	t.Run("SyncNormal", func(t *testing.T) {
		s := mustOpen(t, WithSynchronous(SyncNormal))
		var got string
		if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got); err != nil || got != "1" {
			t.Fatalf("PRAGMA synchronous=%q (%v), want 1 (NORMAL)", got, err)
		}
	})

	t.Run("BadSynchronous", func(t *testing.T) {
		_, err := Open(ctx, filepath.Join(t.TempDir(), "meta.db"), WithSynchronous("OFF"))
		if err == nil || !strings.Contains(err.Error(), "synchronous") {
			t.Fatalf("Open(synchronous OFF): err=%v, want a synchronous error", err)
		}
	})

	t.Run("PathNeedsEscaping", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a?b#c%d e")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		s := mustOpenPath(t, filepath.Join(dir, "meta.db"))
		mustCreateVolume(t, s, "v")
		if !fileExists(filepath.Join(dir, "meta.db")) {
			t.Fatalf("meta.db not created in %q", dir)
		}
	})

	t.Run("Migrations", func(t *testing.T) {
		s := mustOpen(t)
		all, err := migrations()
		if err != nil {
			t.Fatalf("migrations: %v", err)
		}
		got := appliedMigrations(t, s)
		if len(got) != len(all) {
			t.Fatalf("schema_migrations has %d rows, want %d", len(got), len(all))
		}
		for i, m := range all {
			if got[i].version != m.Version || got[i].name != m.Name || got[i].appliedAt == "" {
				t.Errorf("schema_migrations[%d]=%+v, want version %d name %s", i, got[i], m.Version, m.Name)
			}
		}
		for _, table := range []string{"volumes", "segments", "commits", "page_index", "tokens"} {
			if n := countRows(t, s, table); n != 0 {
				t.Errorf("%s has %d rows, want 0", table, n)
			}
		}
	})

	t.Run("MigrateTwice", func(t *testing.T) {
		s := mustOpen(t)
		before := appliedMigrations(t, s)
		if err := migrate(ctx, s.w); err != nil {
			t.Fatalf("migrate again: %v", err)
		}
		after := appliedMigrations(t, s)
		if len(after) != len(before) || after[0] != before[0] {
			t.Fatalf("schema_migrations after a second migrate=%+v, want %+v", after, before)
		}
	})

	t.Run("SchemaTooNew", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "meta.db")
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')`); err != nil {
			t.Fatalf("insert future migration: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		_, err = Open(ctx, path)
		var tooNew *pgschema.SchemaTooNewError
		if !errors.As(err, &tooNew) {
			t.Fatalf("Open(schema at 999): err=%v, want *pgschema.SchemaTooNewError", err)
		}
		all, _ := migrations()
		if tooNew.Applied != 999 || tooNew.Known != len(all) {
			t.Fatalf("SchemaTooNewError=%+v, want Applied 999, Known %d", tooNew, len(all))
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "meta.db")
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		v := mustCreateVolume(t, s, "vol")
		c := testCommit(v.ID, 1, 3, 1, 3)
		c.Pages[0].Hash = 1<<63 | 5
		mustAppend(t, s, c)
		before := appliedMigrations(t, s)
		mustCheck(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if fileExists(path + "-wal") {
			t.Errorf("%s-wal still exists after Close, want it checkpointed and removed", path)
		}

		s = mustOpenPath(t, path)
		if got := appliedMigrations(t, s); len(got) != len(before) || got[0] != before[0] {
			t.Fatalf("schema_migrations after reopen=%+v, want %+v (not re-run)", got, before)
		}
		got, err := s.Volume(ctx, "vol")
		if err != nil {
			t.Fatalf("Volume after reopen: %v", err)
		}
		if got.ID != v.ID || got.Head != 1 || got.PageCount != 3 || !got.CreatedAt.Equal(v.CreatedAt) {
			t.Fatalf("Volume after reopen=%+v, want id %d head 1 page count 3 created %v", got, v.ID, v.CreatedAt)
		}
		ref, err := s.PageAt(ctx, v.ID, 1, 1)
		if err != nil {
			t.Fatalf("PageAt after reopen: %v", err)
		}
		if ref.Location != c.Pages[0].Location {
			t.Fatalf("PageAt after reopen=%+v, want %+v", ref.Location, c.Pages[0].Location)
		}
		// The history goes on where it stopped.
		mustAppend(t, s, testCommit(v.ID, 2, 3, 2))
	})

	t.Run("ClosedStore", func(t *testing.T) {
		s, err := Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.Volumes(ctx); err == nil {
			t.Errorf("Volumes on a closed store: err=nil, want an error")
		}
		if err := s.Update(ctx, func(pgschema.Tx) error { return nil }); err == nil {
			t.Errorf("Update on a closed store: err=nil, want an error")
		}
	})
}

type migrationRow struct {
	version   int
	name      string
	appliedAt string
}

func appliedMigrations(tb testing.TB, s *Store) []migrationRow {
	tb.Helper()
	rows, err := s.r.QueryContext(context.Background(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		tb.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var ms []migrationRow
	for rows.Next() {
		var m migrationRow
		if err := rows.Scan(&m.version, &m.name, &m.appliedAt); err != nil {
			tb.Fatalf("read schema_migrations: %v", err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read schema_migrations: %v", err)
	}
	return ms
}
