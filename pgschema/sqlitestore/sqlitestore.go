// Package sqlitestore implements pgschema.Metastore on an embedded SQLite
// file (github.com/mattn/go-sqlite3): the metadata backend of a single-machine
// cambiumd that runs without PostgreSQL.
//
// It owns one file, Cambium's own metadata database (for example
// <data dir>/meta.db) and its -wal and -shm companions: the schema, its
// migrations and every query on it. It never opens a user's volume and stores
// no page bytes; those live in a pages.Store.
//
// The write lock of the whole database plays the part that the volume row
// lock plays in PostgreSQL: every Update runs in a BEGIN IMMEDIATE transaction
// on the one write connection, so at most one is in progress at a time, in
// this process or any other that opens the same file.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/pgschema"
)

var _ pgschema.Metastore = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Synchronous is SQLite's synchronous setting for the write connection
// (https://www.sqlite.org/pragma.html#pragma_synchronous), which decides what
// an acknowledged Update survives.
type Synchronous string

const (
	// SyncFull fsyncs the WAL at every commit: a commit that Update
	// acknowledged survives a process crash and a power loss or kernel crash.
	// It is the default, because invariant 3 (DESIGN.md) promises that an
	// acknowledged commit survives a crash of any component, the machine
	// included, and a client that saw version N acknowledged must never see
	// the server hand N to someone else.
	SyncFull Synchronous = "FULL"

	// SyncNormal fsyncs only at checkpoints: an acknowledged commit survives a
	// process crash, but the last commits before a power loss may roll back
	// (the database stays consistent). Use it only where that is acceptable,
	// such as tests and throwaway data.
	SyncNormal Synchronous = "NORMAL"
)

// Defaults for the options of Open.
const (
	DefaultSynchronous = SyncFull        // see SyncFull for why
	DefaultBusyTimeout = 5 * time.Second // waits out another process's commit or checkpoint
)

// Option changes how Open configures the store.
type Option func(*config)

type config struct {
	sync        Synchronous
	busyTimeout time.Duration
	readConns   int
}

// WithSynchronous sets the durability of acknowledged commits (default
// SyncFull).
func WithSynchronous(s Synchronous) Option { return func(c *config) { c.sync = s } }

// WithBusyTimeout sets how long a statement waits for a lock held by another
// process sharing the file before it fails with SQLITE_BUSY (default
// DefaultBusyTimeout). Within one Store, writers queue for the write
// connection instead.
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithReadConns bounds the read pool (default: GOMAXPROCS, at least 4).
func WithReadConns(n int) Option { return func(c *config) { c.readConns = n } }

// Store is a pgschema.Metastore in one SQLite file.
//
// Invariants:
//   - Every write happens on w, which has exactly one connection and begins
//     every transaction with BEGIN IMMEDIATE, so writers are serialized and a
//     head read under LockVolume stays the head until the transaction ends.
//   - r is opened query_only: reads never take the write lock, and in WAL mode
//     each read statement sees one committed snapshot, never a partial Update.
//   - An Update is either committed whole or not at all; a failed Append or
//     AppendAll inside it leaves nothing behind even when fn goes on (a
//     savepoint per call).
type Store struct {
	w *sql.DB // the write connection: BEGIN IMMEDIATE, foreign keys on
	r *sql.DB // the read pool: query_only

	stmts statements // prepared on w, used inside Update
}

// statements are the write path's prepared statements.
type statements struct {
	lockVolume  *sql.Stmt
	commitBySeq *sql.Stmt
	findSegment *sql.Stmt
	addSegment  *sql.Stmt
	addCommit   *sql.Stmt
	addPage     *sql.Stmt
	setHead     *sql.Stmt
}

// Open opens (creating it if missing) the metadata database at path, applies
// the pending migrations, and returns the store. A database migrated by a
// newer Cambium is a *pgschema.SchemaTooNewError.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{sync: DefaultSynchronous, busyTimeout: DefaultBusyTimeout, readConns: max(4, runtime.GOMAXPROCS(0))}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.sync != SyncFull && cfg.sync != SyncNormal {
		return nil, fmt.Errorf("open metastore: synchronous %q: want FULL or NORMAL", cfg.sync)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}
	busy := strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10)

	w, err := sql.Open("sqlite3", dsn(abs, url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {string(cfg.sync)},
		"_foreign_keys": {"1"},
		"_busy_timeout": {busy},
		"_txlock":       {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w}
	// The write connection opens first: it creates the file and switches it
	// to WAL, which persists in the file, before any reader connects.
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}
	if err := s.prepare(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}

	r, err := sql.Open("sqlite3", dsn(abs, url.Values{
		"_query_only":   {"1"},
		"_busy_timeout": {busy},
	}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}
	r.SetMaxOpenConns(cfg.readConns)
	r.SetMaxIdleConns(cfg.readConns)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open metastore %s: %w", path, err)
	}
	s.r = r
	return s, nil
}

// dsn is a mattn/go-sqlite3 URI for the file at abs. The path is escaped so
// that '?', '#' and '%' in a directory name cannot end it early.
func dsn(abs string, params url.Values) string {
	return "file:" + (&url.URL{Path: filepath.ToSlash(abs)}).EscapedPath() + "?" + params.Encode()
}

// Close closes the read pool, then the write connection. Being the last
// connection, the write connection checkpoints the WAL into the main file.
func (s *Store) Close() error {
	var rerr error
	if s.r != nil {
		rerr = s.r.Close()
	}
	if err := errors.Join(rerr, s.w.Close()); err != nil {
		return fmt.Errorf("close metastore: %w", err)
	}
	return nil
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.stmts.lockVolume, selectVolume + ` WHERE id = ?`},
		{&s.stmts.commitBySeq, selectCommit + ` WHERE volume_id = ? AND client_id = ? AND client_seq = ?`},
		{&s.stmts.findSegment, `SELECT id FROM segments WHERE key = ?`},
		{&s.stmts.addSegment, `INSERT INTO segments (key, created_at) VALUES (?, ?) RETURNING id`},
		{&s.stmts.addCommit, `INSERT INTO commits (volume_id, version, base, client_id, client_seq, decision, reason,
			page_count, pages_count, record, checksum, received_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.stmts.addPage, `INSERT INTO page_index (volume_id, page_no, version, segment_id,
			frame_offset, frame_length, page_offset, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.stmts.setHead, `UPDATE volumes SET head = ?, page_count = ? WHERE id = ?`},
	} {
		stmt, err := s.w.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
		*p.stmt = stmt
	}
	return nil
}

// migrations returns the embedded migrations, checked for gaps.
func migrations() ([]pgschema.Migration, error) {
	sub, err := fs.Sub(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return pgschema.LoadMigrations(sub)
}

// migrate applies the pending migrations one at a time, each in its own
// BEGIN IMMEDIATE transaction that also records it, so a crash leaves the
// schema at some whole migration and another process opening the file at the
// same time applies none twice. Running it on an up-to-date file only reads.
func migrate(ctx context.Context, w *sql.DB) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	for {
		done, err := migrateOne(ctx, w, all)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the first pending migration, or reports done when there
// is none.
func migrateOne(ctx context.Context, w *sql.DB, all []pgschema.Migration) (done bool, err error) {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	) STRICT`); err != nil {
		return false, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied); err != nil {
		return false, fmt.Errorf("migrate: read applied version: %w", err)
	}
	pending, err := pgschema.PendingMigrations(all, applied)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	if len(pending) == 0 {
		// Commit rather than roll back: the first Open of a new file created
		// schema_migrations above (and made the file a WAL database).
		if err := tx.Commit(); err != nil {
			return false, fmt.Errorf("migrate: commit: %w", err)
		}
		return true, nil
	}
	m := pending[0]
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, fmt.Errorf("migrate %04d_%s: %w", m.Version, m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return false, fmt.Errorf("migrate %04d_%s: record: %w", m.Version, m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migrate %04d_%s: commit: %w", m.Version, m.Name, err)
	}
	return false, nil
}

// Times are stored as integer unix microseconds: PostgreSQL's precision, and
// exact to the microsecond. The zero time is stored as NULL where a column
// allows it.

func toMicros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func toNullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromNullMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMicros(n.Int64)
}

// isUnique reports whether err is a UNIQUE constraint violation.
func isUnique(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintUnique
}

func isForeignKey(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintForeignKey
}
