package pgstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pgschema"
)

type appliedMigration struct {
	Version   int
	Name      string
	AppliedAt time.Time
}

func mustPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func mustApplied(t *testing.T, pool *pgxpool.Pool) []appliedMigration {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var got []appliedMigration
	for rows.Next() {
		var m appliedMigration
		if err := rows.Scan(&m.Version, &m.Name, &m.AppliedAt); err != nil {
			t.Fatalf("scan: %v", err)
		}
		got = append(got, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return got
}

func mustOpenURL(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpen_Migrate(t *testing.T) {
	t.Run("AppliesAll", func(t *testing.T) {
		url := testutil.MustPostgresSchema(t)
		mustOpenURL(t, url)
		all, err := migrations()
		if err != nil {
			t.Fatalf("migrations: %v", err)
		}
		got := mustApplied(t, mustPool(t, url))
		if len(got) != len(all) || len(all) == 0 {
			t.Fatalf("schema_migrations has %d rows, want %d", len(got), len(all))
		}
		for i, m := range all {
			if got[i].Version != m.Version || got[i].Name != m.Name || got[i].AppliedAt.IsZero() {
				t.Fatalf("schema_migrations[%d]=%+v, want version %d name %q", i, got[i], m.Version, m.Name)
			}
		}
		if got[0].Name != "init" {
			t.Fatalf("migration 1 is named %q, want init", got[0].Name)
		}
	})

	t.Run("Twice", func(t *testing.T) {
		url := testutil.MustPostgresSchema(t)
		mustOpenURL(t, url)
		pool := mustPool(t, url)
		before := mustApplied(t, pool)
		mustOpenURL(t, url)
		after := mustApplied(t, pool)
		if len(after) != len(before) {
			t.Fatalf("second Open: %d migrations recorded, want %d", len(after), len(before))
		}
		for i := range after {
			if !after[i].AppliedAt.Equal(before[i].AppliedAt) {
				t.Fatalf("second Open re-applied migration %d", after[i].Version)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		// Three cambiumd processes starting together: each migration is
		// applied once (the SQL is not idempotent: a second CREATE TABLE
		// would fail), and every Open succeeds.
		url := testutil.MustPostgresSchema(t)
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				s, err := Open(context.Background(), url, Options{})
				if err != nil {
					t.Errorf("Open: %v", err)
					return
				}
				s.Close()
			})
		}
		wg.Wait()
		all, _ := migrations()
		if got := mustApplied(t, mustPool(t, url)); len(got) != len(all) {
			t.Fatalf("schema_migrations has %d rows, want %d", len(got), len(all))
		}
	})

	t.Run("SchemaTooNew", func(t *testing.T) {
		url := testutil.MustPostgresSchema(t)
		mustOpenURL(t, url)
		pool := mustPool(t, url)
		if _, err := pool.Exec(context.Background(), `INSERT INTO schema_migrations (version, name) VALUES (999, 'future')`); err != nil {
			t.Fatalf("insert future migration: %v", err)
		}
		_, err := Open(context.Background(), url, Options{})
		var tooNew *pgschema.SchemaTooNewError
		if !errors.As(err, &tooNew) {
			t.Fatalf("Open on a newer schema: err=%v, want *SchemaTooNewError", err)
		}
		all, _ := migrations()
		if tooNew.Applied != 999 || tooNew.Known != len(all) {
			t.Fatalf("SchemaTooNewError=%+v, want Applied 999, Known %d", *tooNew, len(all))
		}
	})
}

func TestMigrate_OwnTransaction(t *testing.T) {
	ctx := context.Background()
	url := testutil.MustPostgresSchema(t)
	pool := mustPool(t, url)
	load := func(files fstest.MapFS) []pgschema.Migration {
		ms, err := pgschema.LoadMigrations(files)
		if err != nil {
			t.Fatalf("LoadMigrations: %v", err)
		}
		return ms
	}
	first := &fstest.MapFile{Data: []byte(`CREATE TABLE a (x int); INSERT INTO a VALUES (1);`)}
	bad := load(fstest.MapFS{
		"0001_a.sql": first,
		"0002_b.sql": {Data: []byte(`CREATE TABLE b (x int); SELECT 1/0;`)},
	})
	if err := migrate(ctx, pool, bad, zap.NewNop()); err == nil {
		t.Fatalf("migrate with a failing migration: err=nil")
	}
	if got := mustApplied(t, pool); len(got) != 1 || got[0].Version != 1 {
		t.Fatalf("after a failed migration 2: recorded %+v, want only migration 1", got)
	}
	var b *string
	if err := pool.QueryRow(ctx, `SELECT to_regclass('b')::text`).Scan(&b); err != nil || b != nil {
		t.Fatalf("table b after its migration failed: %v, %v; want rolled back", b, err)
	}
	good := load(fstest.MapFS{
		"0001_a.sql": first,
		"0002_b.sql": {Data: []byte(`CREATE TABLE b (x int);`)},
	})
	if err := migrate(ctx, pool, good, zap.NewNop()); err != nil {
		t.Fatalf("migrate after fixing migration 2: %v", err)
	}
	if got := mustApplied(t, pool); len(got) != 2 || got[1].Name != "b" {
		t.Fatalf("recorded %+v, want migrations 1 and 2", got)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM a`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("table a has %d rows (%v), want 1: migration 1 ran twice?", rows, err)
	}
}
