package replica

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// sidecarSchema is the redo sidecar at path+"-cambium", a SQLite database
// in WAL mode that the sqlite3 shell can read.
//
//	meta           key/value: volume, page_size, client_id, next_seq,
//	               base_version (server head the replica is based on)
//	pending        one row per local commit not yet acknowledged by the
//	               server; applied = 1 once its pages are in the main file
//	pending_page   the pages each pending commit wrote
//	remote         at most one server state being applied (ApplyRemote)
//	remote_page    its pages
const sidecarSchema = `
CREATE TABLE IF NOT EXISTS meta(
	key   TEXT PRIMARY KEY,
	value ANY NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS pending(
	seq          INTEGER PRIMARY KEY,
	base_version INTEGER NOT NULL,
	page_count   INTEGER NOT NULL,
	read_set     BLOB NOT NULL,
	record       BLOB NOT NULL,
	created_at   INTEGER NOT NULL,
	applied      INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS pending_page(
	seq  INTEGER NOT NULL REFERENCES pending(seq) ON DELETE CASCADE,
	pgno INTEGER NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY(seq, pgno)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remote(
	version    INTEGER PRIMARY KEY,
	page_count INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS remote_page(
	version INTEGER NOT NULL REFERENCES remote(version) ON DELETE CASCADE,
	pgno    INTEGER NOT NULL,
	data    BLOB NOT NULL,
	PRIMARY KEY(version, pgno)
) STRICT, WITHOUT ROWID;
`

// Meta keys.
const (
	metaVolume      = "volume"
	metaPageSize    = "page_size"
	metaClientID    = "client_id"
	metaNextSeq     = "next_seq"
	metaBaseVersion = "base_version"
)

func openSidecar(ctx context.Context, path string) (*sql.DB, error) {
	// synchronous=FULL: a sidecar commit is the replica's commit point.
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_sync=FULL&_busy_timeout=5000&_foreign_keys=1")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, sidecarSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("sidecar schema: %w", err)
	}
	return db, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func getMeta(ctx context.Context, q querier, key string) (string, bool, error) {
	var v string
	err := q.QueryRowContext(ctx, "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?", key).Scan(&v)
	if err == sql.ErrNoRows {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("meta %s: %w", key, err)
	}
	return v, true, nil
}

func getMetaInt(ctx context.Context, q querier, key string) (int64, error) {
	v, ok, err := getMeta(ctx, q, key)
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meta %s=%q: %w", key, v, err)
	}
	return n, nil
}

func setMeta(ctx context.Context, q querier, key string, value any) error {
	if _, err := q.ExecContext(ctx,
		"INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
		key, value); err != nil {
		return fmt.Errorf("set meta %s: %w", key, err)
	}
	return nil
}
