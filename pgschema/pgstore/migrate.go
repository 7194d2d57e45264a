package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pgschema"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the schema migrations this binary knows.
func migrations() ([]pgschema.Migration, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return pgschema.LoadMigrations(sub)
}

// migrateLockSQL takes a transaction-scoped advisory lock private to the
// current schema, so processes starting together against one database apply
// each migration once, while tests in separate schemas do not wait on each
// other.
const migrateLockSQL = `SELECT pg_advisory_xact_lock(hashtext('cambium.migrate.' || current_schema()))`

const createMigrationsTableSQL = `
CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrate applies the pending migrations in all, one transaction each,
// recording each in schema_migrations. Every transaction first takes the
// advisory lock and rereads the applied version, so a migration another
// process applied meanwhile is not applied twice.
func migrate(ctx context.Context, pool *pgxpool.Pool, all []pgschema.Migration, log *zap.Logger) error {
	for {
		done, err := migrateOne(ctx, pool, all, log)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the first pending migration, or reports done when none
// is pending.
func migrateOne(ctx context.Context, pool *pgxpool.Pool, all []pgschema.Migration, log *zap.Logger) (done bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrateLockSQL); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, createMigrationsTableSQL); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var applied int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied); err != nil {
			return fmt.Errorf("read applied version: %w", err)
		}
		pending, err := pgschema.PendingMigrations(all, applied)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			done = true
			return nil
		}
		m := pending[0]
		// Simple protocol: a migration file holds several statements.
		if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("apply %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return fmt.Errorf("record %04d_%s: %w", m.Version, m.Name, err)
		}
		log.Info("applied schema migration", zap.Int("version", m.Version), zap.String("name", m.Name))
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	return done, nil
}
