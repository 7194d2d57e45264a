package replica

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// sidecarSchema is the redo sidecar at path+"-cambium", a SQLite database
// in WAL mode that the sqlite3 shell can read while the replica is closed
// (the replica holds it in exclusive locking mode while open).
//
//	meta           key/value: volume, page_size, client_id, next_seq,
//	               base_version (server version the replica is based on),
//	               base_page_count (its page count), applied_seq (the last
//	               commit whose pages are in the main file, fsynced),
//	               main_page_count (the main file's page count then),
//	               synced_seq (the last commit covered by a checkpoint's
//	               sidecar fsync)
//	pending        one row per local commit not yet acknowledged by the
//	               server, with the pages it wrote (see pageset.go); the
//	               big blobs come last, so reading the other columns does
//	               not walk their overflow pages. The commits since the
//	               last fold are not here yet but in the redo log beside
//	               the sidecar (path+"-cambium-log", redolog.go), one frame
//	               each with the same columns; a checkpoint folds them in.
//	remote         at most one server state being applied (ApplyRemote, Reset)
//	remote_page    its pages
//	redo           pending transactions a rebase is re-running on a new
//	               head, with the sequence number each re-run takes
//	               (rebase.go)
//	rejected       transactions the server rejected, dropped, with why
//	resident       for a lazy replica, the pages of the main file that are
//	               right for its state (lazy.go)
//
// next_seq in meta is only a floor: the next sequence number is the larger
// of it, max(pending.seq)+1 and the redo log's last frame+1, so a commit
// writes no meta row; it is written whenever pending rows are deleted.
// synced_seq is also the last commit folded from the redo log: frames at
// or below it are already pending rows.
const sidecarSchema = `
CREATE TABLE IF NOT EXISTS meta(
	key   TEXT PRIMARY KEY,
	value ANY NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS pending(
	seq          INTEGER PRIMARY KEY,
	base_version INTEGER NOT NULL,
	page_count   INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	read_set     BLOB NOT NULL,
	page_numbers BLOB NOT NULL,
	deltas       BLOB NOT NULL DEFAULT x'',
	record       BLOB NOT NULL,
	pages        BLOB NOT NULL
) STRICT;
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
CREATE TABLE IF NOT EXISTS redo(
	seq     INTEGER PRIMARY KEY,
	new_seq INTEGER,
	record  BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS resident(
	pgno INTEGER PRIMARY KEY
) STRICT;
CREATE TABLE IF NOT EXISTS rejected(
	seq    INTEGER PRIMARY KEY,
	at     INTEGER NOT NULL,
	code   TEXT NOT NULL,
	kind   TEXT NOT NULL,
	reason TEXT NOT NULL,
	record BLOB NOT NULL
) STRICT;
`

// Meta keys.
const (
	metaVolume        = "volume"
	metaPageSize      = "page_size"
	metaClientID      = "client_id"
	metaNextSeq       = "next_seq"
	metaBaseVersion   = "base_version"
	metaBasePageCount = "base_page_count"
	metaAppliedSeq    = "applied_seq"
	metaMainPageCount = "main_page_count"
	metaSyncedSeq     = "synced_seq"
	metaLazy          = "lazy" // "1": pages are fetched on first read (lazy.go)
)

// sidecar is the open sidecar: its database, one SQLite connection in
// locking_mode=EXCLUSIVE behind a database/sql pool of that one connection,
// and the redo log beside it (redolog.go), which only the process holding
// that lock may touch.
//
// Exclusive locking mode keeps the file locks for as long as the sidecar
// is open, so no other process can open the replica meanwhile, and with WAL
// entered in that mode the WAL index lives in heap memory (no -shm file,
// https://www.sqlite.org/wal.html#noshm). Only this connection may then
// open the sidecar: another process (or a sqlite3 shell) gets
// SQLITE_BUSY, which Open reports as ErrAlreadyOpen.
//
// Every sidecar transaction (tx, durableTx) first folds the redo log, so
// it comes after the local commits before it even across a power loss, as
// it would in one WAL: a commit is never lost while a later sidecar change
// that assumed it stays.
type sidecar struct {
	db         *sql.DB
	durability Durability
	c          *sqlite3.SQLiteConn

	// logMu guards log; it is taken before the connection, never after.
	logMu sync.Mutex
	log   *redoLog
}

// sidecarBusyTimeout is how long Open waits for a sidecar locked by
// another process before it gives up; tests shorten it.
var sidecarBusyTimeout = 5 * time.Second

// openSidecar opens the sidecar in WAL mode, and its redo log, which it
// folds. Its synchronous setting is the replica's durability: with NORMAL
// a transaction appends to the WAL without an fsync (it survives a process
// crash, and a power loss keeps a prefix of the transactions: WAL frames
// carry cumulative checksums, so recovery stops at the first frame that
// did not reach the disk); with FULL every transaction fsyncs the WAL
// (https://www.sqlite.org/pragma.html#pragma_synchronous). Local commits
// go to the redo log, at the same durability (redolog.go).
func openSidecar(ctx context.Context, path string, d Durability) (*sidecar, error) {
	sync := "NORMAL"
	if d == DurabilityFull {
		sync = "FULL"
	}
	dsn := fmt.Sprintf("file:%s?_sync=%s&_busy_timeout=%d&_foreign_keys=1",
		path, sync, sidecarBusyTimeout.Milliseconds())
	c, err := (&sqlite3.SQLiteDriver{}).Open(dsn)
	if err != nil {
		return nil, sidecarOpenErr(path, err)
	}
	s := &sidecar{durability: d, c: c.(*sqlite3.SQLiteConn)}
	s.db = sql.OpenDB(sidecarConnector{s})
	s.db.SetMaxOpenConns(1)
	s.db.SetMaxIdleConns(1)
	// Exclusive first, so WAL is entered with the WAL index in heap memory;
	// the first read takes the file's EXCLUSIVE lock, or fails with BUSY
	// after the busy timeout while another process holds it.
	if _, err := s.c.Exec("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL", nil); err != nil {
		s.close(false)
		return nil, sidecarOpenErr(path, err)
	}
	if _, err := s.db.ExecContext(ctx, sidecarSchema); err != nil {
		s.close(false)
		return nil, fmt.Errorf("sidecar schema: %w", err)
	}
	// Sidecars written before pages moved into the pending row have a
	// pending_page table instead; they are not migrated.
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('pending') WHERE name = 'pages'").Scan(&n); err != nil || n != 1 {
		s.close(false)
		return nil, fmt.Errorf("sidecar %s has an older format (%v): %w", path, err, ErrMismatch)
	}
	// Sidecars written before deltas (pageset.go) get the column: their
	// rows, with no deltas, are valid as they are.
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('pending') WHERE name = 'deltas'").Scan(&n); err != nil {
		s.close(false)
		return nil, fmt.Errorf("sidecar schema: %w", err)
	}
	if n == 0 {
		if _, err := s.db.ExecContext(ctx, "ALTER TABLE pending ADD COLUMN deltas BLOB NOT NULL DEFAULT x''"); err != nil {
			s.close(false)
			return nil, fmt.Errorf("sidecar schema: %w", err)
		}
	}
	if s.log, err = openRedoLog(path+"-log", d); err != nil {
		s.close(false)
		return nil, fmt.Errorf("redo log: %w", err)
	}
	if err := s.recoverLog(ctx); err != nil {
		s.close(false)
		return nil, fmt.Errorf("redo log: %w", err)
	}
	return s, nil
}

// sidecarOpenErr reports a failure to open the sidecar; SQLITE_BUSY there
// means another process holds it, i.e. has the replica open.
func sidecarOpenErr(path string, err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrBusy {
		return fmt.Errorf("sidecar %s is locked by another process: %w (%w)", path, ErrAlreadyOpen, err)
	}
	return fmt.Errorf("sidecar %s: %w", path, err)
}

// close closes the sidecar. removeLog deletes the redo log first, which
// must then be empty: a clean Close leaves the sidecar one SQLite file.
func (s *sidecar) close(removeLog bool) error {
	var errs []error
	if s.log != nil {
		if removeLog && s.log.size == 0 {
			errs = append(errs, os.Remove(s.log.f.Name()))
		}
		errs = append(errs, s.log.close())
	}
	errs = append(errs, s.db.Close(), s.c.Close())
	return errors.Join(errs...)
}

// sidecarConnector hands database/sql the sidecar's one connection, whose
// Close it ignores: the connection lives as long as the sidecar.
type sidecarConnector struct{ s *sidecar }

func (k sidecarConnector) Connect(context.Context) (driver.Conn, error) {
	return sharedConn{k.s.c}, nil
}

func (k sidecarConnector) Driver() driver.Driver { return &sqlite3.SQLiteDriver{} }

type sharedConn struct{ *sqlite3.SQLiteConn }

func (sharedConn) Close() error { return nil }

// pendingRow is one row of the pending table.
type pendingRow struct {
	seq, base, pageCount, createdAt             int64
	readSet, pageNumbers, deltas, record, pages []byte
}

// insertPending inserts rows into the pending table within tx.
func insertPending(ctx context.Context, tx *sql.Tx, rows []pendingRow) error {
	st, err := tx.PrepareContext(ctx, `INSERT INTO pending(seq, base_version, page_count, created_at,
		read_set, page_numbers, deltas, record, pages) VALUES(?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, row := range rows {
		if _, err := st.ExecContext(ctx, row.seq, row.base, row.pageCount, row.createdAt,
			row.readSet, row.pageNumbers, row.deltas, row.record, row.pages); err != nil {
			return fmt.Errorf("insert pending %d: %w", row.seq, err)
		}
	}
	return nil
}

// withLog runs fn with the redo log's lock held.
func (s *sidecar) withLog(fn func(l *redoLog) error) error {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return fn(s.log)
}

// recoverLog folds what the redo log holds at Open. Its commits must
// continue the sidecar's: a gap would mean a commit lost with later ones kept.
func (s *sidecar) recoverLog(ctx context.Context) error {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	synced, err := getMetaInt(ctx, s.db, metaSyncedSeq)
	if err != nil {
		return err
	}
	s.log.synced = uint64(synced)
	rows, err := s.log.rows(s.log.synced)
	if err != nil {
		return err
	}
	if len(rows) > 0 {
		var next, maxSeq int64
		if next, err = getMetaInt(ctx, s.db, metaNextSeq); err != nil {
			return err
		}
		if err := s.db.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) FROM pending").Scan(&maxSeq); err != nil {
			return err
		}
		if want := max(next, maxSeq+1, 1); rows[0].seq != want {
			return fmt.Errorf("log starts at commit %d, the sidecar expects %d: %w", rows[0].seq, want, ErrCorruptLog)
		}
	}
	_, err = s.foldLocked(ctx)
	return err
}

// fold moves the redo log's commits into the pending table, in one
// transaction with an fsync that also records the last one as synced_seq,
// then empties the log; it says whether there was anything to fold. The
// fsync covers every earlier commit too, so the main file may then receive
// their pages. A crash before the log is emptied leaves frames at or below
// synced_seq, which are skipped.
func (s *sidecar) fold(ctx context.Context) (bool, error) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.foldLocked(ctx)
}

func (s *sidecar) foldLocked(ctx context.Context) (bool, error) {
	l := s.log
	if l.frames == 0 {
		return false, nil
	}
	rows, err := l.rows(l.synced)
	if err != nil {
		return false, fmt.Errorf("fold redo log: %w", err)
	}
	if len(rows) > 0 {
		last := rows[len(rows)-1].seq
		if err := s.durableTxNoFold(ctx, func(tx *sql.Tx) error {
			if err := insertPending(ctx, tx, rows); err != nil {
				return err
			}
			return setMeta(ctx, tx, metaSyncedSeq, last)
		}); err != nil {
			return false, fmt.Errorf("fold redo log: %w", err)
		}
		l.synced = uint64(last)
	}
	return true, l.reset()
}

// tx runs fn in a sidecar transaction at the replica's durability, after
// folding the redo log.
func (s *sidecar) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if _, err := s.fold(ctx); err != nil {
		return err
	}
	return inTx(ctx, s.db, fn)
}

// inTx runs fn in a transaction begun on b (a pool or one connection),
// committing when fn returns nil.
func inTx(ctx context.Context, b interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, fn func(tx *sql.Tx) error) error {
	tx, err := b.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// durableTx runs fn in a sidecar transaction whose commit fsyncs the WAL,
// whatever the replica's durability. The WAL is appended in order and one
// fsync covers the whole file, so every earlier commit is durable too.
//
// Checked with strace on SQLite 3.54.1: in WAL mode a commit under
// synchronous=FULL calls fsync on the -wal file once; under NORMAL it calls
// none. PRAGMA wal_checkpoint fsyncs the WAL and then the database, but
// only when it has frames to copy, and PASSIVE (or FULL past its busy
// timeout) copies only what no reader pins, skipping the WAL fsync when it
// copies nothing, so with a reader pinning the sidecar it would not make it
// durable (the exclusive lock keeps other readers out, but the protocol does
// not rely on that). A commit that writes nothing writes no frame and does
// not fsync, so fn must write.
func (s *sidecar) durableTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if _, err := s.fold(ctx); err != nil {
		return err
	}
	return s.durableTxNoFold(ctx, fn)
}

func (s *sidecar) durableTxNoFold(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if s.durability == DurabilityFull {
		return inTx(ctx, s.db, fn)
	}
	c, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// synchronous is per connection, and local commits share this one:
	// restore it even if fn fails. Should that fail too, commits stay at
	// FULL (slower, never less durable) and the error fails the caller.
	if _, err := c.ExecContext(ctx, "PRAGMA synchronous=FULL"); err != nil {
		return err
	}
	defer func() {
		if _, rerr := c.ExecContext(context.Background(), "PRAGMA synchronous=NORMAL"); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore synchronous: %w", rerr))
		}
	}()
	return inTx(ctx, c, fn)
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
