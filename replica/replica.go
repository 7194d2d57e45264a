package replica

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cambiumdb/cambium/vfs"
)

// DefaultPageSize is the page size of a new replica when Options.PageSize is 0.
const DefaultPageSize = 4096

var (
	// ErrPendingCommits is returned by ApplyRemote while local commits wait
	// to be pushed.
	ErrPendingCommits = errors.New("replica: local commits are pending")
	// ErrNotOpen is returned by the cambium driver for a path with no open Replica.
	ErrNotOpen = errors.New("replica: not open; call replica.Open first")
	// ErrAlreadyOpen is returned by Open for a path already open in this process.
	ErrAlreadyOpen = errors.New("replica: already open")
	// ErrTooManyReplicas is returned by Open when every VFS slot is taken.
	ErrTooManyReplicas = errors.New("replica: too many open replicas")
	// ErrMismatch is returned by Open when Options contradict the sidecar.
	ErrMismatch = errors.New("replica: options do not match the existing replica")
	// ErrOutOfOrder is returned by MarkPushed for a commit that is not the
	// oldest pending one.
	ErrOutOfOrder = errors.New("replica: commits must be marked pushed in order")
	// ErrBroken is returned after a failure left the main file behind the
	// sidecar; reopening the replica repairs it.
	ErrBroken = errors.New("replica: main file behind its sidecar; reopen to repair")
)

// Options configure Open. Volume and PageSize are recorded when the replica
// is created and must match (or be zero) on later opens.
type Options struct {
	// Volume is the name of the replicated volume.
	Volume string
	// PageSize is the volume's page size; DefaultPageSize if 0.
	PageSize int
}

// Status is a snapshot of a replica's bookkeeping.
type Status struct {
	Volume      string
	ClientID    string
	PageSize    int
	PageCount   uint32
	BaseVersion uint64 // server version the replica is based on
	NextSeq     uint64 // sequence number of the next local commit
	Pending     int    // local commits not yet marked pushed
}

// PendingCommit is one local commit waiting to be pushed.
type PendingCommit struct {
	Seq         uint64
	BaseVersion uint64
	PageCount   uint32
	Pages       map[uint32][]byte
	ReadSet     []uint32
	Record      *Record
}

// faults are the replica's fault seams: tests replace them to fail or
// "crash" at a named step.
type faults struct {
	// afterSidecarCommit runs after a commit is durable in the sidecar and
	// before its pages reach the main file. An error simulates a crash there.
	afterSidecarCommit func() error
}

// Replica is a client replica: a plain SQLite main file at the latest local
// state, and a sidecar holding pending commits and metadata.
//
// Invariants: every commit is durable in the sidecar before any of its pages
// reach the main file; the main file equals the sidecar's last applied
// state, except after a failure, which sets broken until a reopen re-applies
// what the sidecar holds. Local write transactions are serialized by
// writeMu, so the per-replica VFS clock belongs to one transaction at a time.
type Replica struct {
	path     string
	pageSize int
	clientID string
	volume   string
	slot     *vfs.VFS
	sidecar  *sql.DB
	main     *os.File
	faults   faults

	// writeMu is a one-slot semaphore held by the connection running a write
	// transaction.
	writeMu chan struct{}

	mu struct {
		sync.Mutex
		conns  map[string]*conn
		nextID int
		broken error
		// appliedUpTo is the last commit whose pages reached the main file
		// (fsynced) but whose applied marker may not be stored yet.
		appliedUpTo uint64
	}
}

// Open opens or creates the replica whose main file is path.
func Open(ctx context.Context, path string, opts Options) (*Replica, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r := &Replica{path: abs, writeMu: make(chan struct{}, 1)}
	r.mu.conns = make(map[string]*conn)
	if err := r.open(ctx, opts); err != nil {
		r.closeFiles()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return r, nil
}

func (r *Replica) open(ctx context.Context, opts Options) error {
	var err error
	if r.sidecar, err = openSidecar(ctx, r.path+"-cambium"); err != nil {
		return err
	}
	if err := r.initMeta(ctx, opts); err != nil {
		return err
	}
	if r.main, err = os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return err
	}
	if err := r.recover(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	slot, err := acquireSlot(r)
	if err != nil {
		return err
	}
	r.slot = slot
	if err := slot.Mount(r.path, r, r.commit); err != nil {
		releaseSlot(r)
		r.slot = nil
		return err
	}
	return nil
}

func (r *Replica) initMeta(ctx context.Context, opts Options) error {
	tx, err := r.sidecar.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	vol, ok, err := getMeta(ctx, tx, metaVolume)
	if err != nil {
		return err
	}
	if !ok {
		if opts.PageSize == 0 {
			opts.PageSize = DefaultPageSize
		}
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		for k, v := range map[string]any{
			metaVolume: opts.Volume, metaPageSize: opts.PageSize, metaClientID: hex.EncodeToString(id),
			metaNextSeq: 1, metaBaseVersion: 0,
		} {
			if err := setMeta(ctx, tx, k, v); err != nil {
				return err
			}
		}
		vol = opts.Volume
	}
	ps, err := getMetaInt(ctx, tx, metaPageSize)
	if err != nil {
		return err
	}
	if opts.Volume != "" && opts.Volume != vol {
		return fmt.Errorf("volume %q, replica has %q: %w", opts.Volume, vol, ErrMismatch)
	}
	if opts.PageSize != 0 && int64(opts.PageSize) != ps {
		return fmt.Errorf("page size %d, replica has %d: %w", opts.PageSize, ps, ErrMismatch)
	}
	id, _, err := getMeta(ctx, tx, metaClientID)
	if err != nil {
		return err
	}
	r.volume, r.pageSize, r.clientID = vol, int(ps), id
	return tx.Commit()
}

// Close unmounts the replica and closes its files. Connections opened with
// the cambium driver must be closed first.
func (r *Replica) Close(ctx context.Context) error {
	if r.slot != nil {
		r.slot.Unmount(r.path)
		releaseSlot(r)
		r.slot = nil
	}
	return r.closeFiles()
}

func (r *Replica) closeFiles() error {
	var errs []error
	if r.main != nil {
		errs = append(errs, r.main.Close())
	}
	if r.sidecar != nil {
		errs = append(errs, r.sidecar.Close())
	}
	return errors.Join(errs...)
}

// Path is the absolute path of the main file, the DSN for sql.Open("cambium", …).
func (r *Replica) Path() string { return r.path }

// PageSize implements vfs.PageSource.
func (r *Replica) PageSize() int { return r.pageSize }

// PageCount implements vfs.PageSource from the main file's size.
func (r *Replica) PageCount(ctx context.Context) (uint32, error) {
	if err := r.brokenErr(); err != nil {
		return 0, err
	}
	fi, err := r.main.Stat()
	if err != nil {
		return 0, err
	}
	return uint32(fi.Size() / int64(r.pageSize)), nil
}

// ReadPage implements vfs.PageSource from the main file.
func (r *Replica) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	_, err := r.main.ReadAt(p, int64(pgno-1)*int64(r.pageSize))
	return err
}

func (r *Replica) brokenErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.broken
}

func (r *Replica) setBroken(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.broken == nil {
		r.mu.broken = fmt.Errorf("%w: %v", ErrBroken, err)
	}
}

// commit is the VFS CommitFunc: the sidecar transaction inserting the
// pending commit is the commit point; the main file follows.
func (r *Replica) commit(ctx context.Context, c *vfs.Capture) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	rec := r.recordFor(c.Tag)
	seq, err := r.insertPending(ctx, c, rec)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	// From here on the transaction is durable: failing COMMIT would lie.
	// A failure leaves the main file behind; the replica refuses further
	// work until a reopen re-applies the sidecar.
	if f := r.faults.afterSidecarCommit; f != nil {
		if err := f(); err != nil {
			r.setBroken(err)
			return nil
		}
	}
	if err := r.writeMain(c.PageCount, c.Pages); err != nil {
		r.setBroken(err)
		return nil
	}
	// The applied marker rides on the next sidecar transaction (saving an
	// fsync per commit); until then a reopen re-applies, idempotently.
	r.mu.Lock()
	r.mu.appliedUpTo = seq
	r.mu.Unlock()
	return nil
}

func (r *Replica) insertPending(ctx context.Context, c *vfs.Capture, rec *Record) (uint64, error) {
	tx, err := r.sidecar.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	seq, err := getMetaInt(ctx, tx, metaNextSeq)
	if err != nil {
		return 0, err
	}
	base, err := getMetaInt(ctx, tx, metaBaseVersion)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO pending(seq, base_version, page_count, read_set, record, created_at) VALUES(?,?,?,?,?,?)`,
		seq, base, c.PageCount, EncodeReadSet(c.ReadSet), rec.Encode(), time.Now().UnixMilli()); err != nil {
		return 0, err
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO pending_page(seq, pgno, data) VALUES(?,?,?)")
	if err != nil {
		return 0, err
	}
	defer stmt.Close()
	for pgno, p := range c.Pages {
		if _, err := stmt.ExecContext(ctx, seq, pgno, p); err != nil {
			return 0, err
		}
	}
	if err := setMeta(ctx, tx, metaNextSeq, seq+1); err != nil {
		return 0, err
	}
	r.mu.Lock()
	applied := r.mu.appliedUpTo
	r.mu.Unlock()
	if _, err := tx.ExecContext(ctx, "UPDATE pending SET applied = 1 WHERE seq <= ? AND applied = 0", applied); err != nil {
		return 0, err
	}
	return uint64(seq), tx.Commit()
}

// writeMain writes pages into the main file, sets its size and fsyncs.
// Page writes are idempotent, so a crash midway is repaired by doing it again.
func (r *Replica) writeMain(pageCount uint32, pages map[uint32][]byte) error {
	for pgno, p := range pages {
		if pgno > pageCount {
			continue
		}
		if _, err := r.main.WriteAt(p, int64(pgno-1)*int64(r.pageSize)); err != nil {
			return fmt.Errorf("write main page %d: %w", pgno, err)
		}
	}
	if err := r.main.Truncate(int64(pageCount) * int64(r.pageSize)); err != nil {
		return fmt.Errorf("truncate main: %w", err)
	}
	if err := r.main.Sync(); err != nil {
		return fmt.Errorf("sync main: %w", err)
	}
	return nil
}

// recover re-applies, in order, what the sidecar holds and the main file
// may lack: pending commits not marked applied, then an unfinished remote state.
func (r *Replica) recover(ctx context.Context) error {
	rows, err := r.sidecar.QueryContext(ctx, "SELECT seq, page_count FROM pending WHERE applied = 0 ORDER BY seq")
	if err != nil {
		return err
	}
	type todo struct {
		seq   int64
		count uint32
	}
	var list []todo
	for rows.Next() {
		var t todo
		if err := rows.Scan(&t.seq, &t.count); err != nil {
			rows.Close()
			return err
		}
		list = append(list, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range list {
		pages, err := r.loadPages(ctx, "SELECT pgno, data FROM pending_page WHERE seq = ?", t.seq)
		if err != nil {
			return err
		}
		if err := r.writeMain(t.count, pages); err != nil {
			return err
		}
		if _, err := r.sidecar.ExecContext(ctx, "UPDATE pending SET applied = 1 WHERE seq = ?", t.seq); err != nil {
			return err
		}
	}
	var version int64
	var count uint32
	err = r.sidecar.QueryRowContext(ctx, "SELECT version, page_count FROM remote").Scan(&version, &count)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	return r.finishRemote(ctx, version, count)
}

func (r *Replica) loadPages(ctx context.Context, q string, key int64) (map[uint32][]byte, error) {
	rows, err := r.sidecar.QueryContext(ctx, q, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	pages := make(map[uint32][]byte)
	for rows.Next() {
		var pgno uint32
		var data []byte
		if err := rows.Scan(&pgno, &data); err != nil {
			return nil, err
		}
		pages[pgno] = data
	}
	return pages, rows.Err()
}

// Pending returns the local commits not yet marked pushed, oldest first.
func (r *Replica) Pending(ctx context.Context) ([]PendingCommit, error) {
	rows, err := r.sidecar.QueryContext(ctx,
		"SELECT seq, base_version, page_count, read_set, record FROM pending ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	var out []PendingCommit
	for rows.Next() {
		var pc PendingCommit
		var rs, rec []byte
		if err := rows.Scan(&pc.Seq, &pc.BaseVersion, &pc.PageCount, &rs, &rec); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pending: %w", err)
		}
		if pc.ReadSet, err = DecodeReadSet(rs); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pending %d read set: %w", pc.Seq, err)
		}
		if pc.Record, err = DecodeRecord(rec); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pending %d record: %w", pc.Seq, err)
		}
		out = append(out, pc)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	for i := range out {
		if out[i].Pages, err = r.loadPages(ctx, "SELECT pgno, data FROM pending_page WHERE seq = ?", int64(out[i].Seq)); err != nil {
			return nil, fmt.Errorf("pending %d pages: %w", out[i].Seq, err)
		}
	}
	return out, nil
}

// MarkPushed records that the server accepted pending commit seq, the
// oldest pending one, as version: it is dropped, and the replica and the
// remaining pending commits are now based on version. Use it when the
// server stored exactly this commit's pages (fast-path or merged); after a
// replay the caller must bring the replica to the server's state instead.
func (r *Replica) MarkPushed(ctx context.Context, seq, version uint64) error {
	tx, err := r.sidecar.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("mark pushed %d: %w", seq, err)
	}
	defer tx.Rollback()
	var oldest uint64
	if err := tx.QueryRowContext(ctx, "SELECT min(seq) FROM pending").Scan(&oldest); err != nil {
		return fmt.Errorf("mark pushed %d: %w", seq, err)
	}
	if oldest != seq {
		return fmt.Errorf("mark pushed %d, oldest pending %d: %w", seq, oldest, ErrOutOfOrder)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM pending WHERE seq = ?", seq); err != nil {
		return fmt.Errorf("mark pushed %d: %w", seq, err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE pending SET base_version = ?", version); err != nil {
		return fmt.Errorf("mark pushed %d: %w", seq, err)
	}
	if err := setMeta(ctx, tx, metaBaseVersion, version); err != nil {
		return err
	}
	return tx.Commit()
}

// ApplyRemote atomically brings the main file to server version version,
// given its page count and every page that differs from the replica's
// current state. It waits for open transactions on the replica to finish
// and fails with ErrPendingCommits while local commits are pending.
func (r *Replica) ApplyRemote(ctx context.Context, version uint64, pageCount uint32, pages map[uint32][]byte) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	return r.slot.Exclusive(ctx, r.path, func() error {
		tx, err := r.sidecar.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("apply remote %d: %w", version, err)
		}
		defer tx.Rollback()
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM pending").Scan(&n); err != nil {
			return fmt.Errorf("apply remote %d: %w", version, err)
		}
		if n > 0 {
			return fmt.Errorf("apply remote %d: %d commits: %w", version, n, ErrPendingCommits)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO remote(version, page_count) VALUES(?, ?)", version, pageCount); err != nil {
			return fmt.Errorf("apply remote %d: %w", version, err)
		}
		for pgno, p := range pages {
			if len(p) != r.pageSize {
				return fmt.Errorf("apply remote %d: page %d has %d bytes: %w", version, pgno, len(p), vfs.ErrPartialPage)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO remote_page(version, pgno, data) VALUES(?,?,?)", version, pgno, p); err != nil {
				return fmt.Errorf("apply remote %d: %w", version, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("apply remote %d: %w", version, err)
		}
		if f := r.faults.afterSidecarCommit; f != nil {
			if err := f(); err != nil {
				r.setBroken(err)
				return err
			}
		}
		if err := r.finishRemote(ctx, int64(version), pageCount); err != nil {
			r.setBroken(err)
			return err
		}
		return nil
	})
}

// finishRemote writes a stored remote state into the main file, then drops
// it from the sidecar and records the new base version.
func (r *Replica) finishRemote(ctx context.Context, version int64, pageCount uint32) error {
	pages, err := r.loadPages(ctx, "SELECT pgno, data FROM remote_page WHERE version = ?", version)
	if err != nil {
		return err
	}
	if err := r.writeMain(pageCount, pages); err != nil {
		return err
	}
	tx, err := r.sidecar.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM remote"); err != nil {
		return err
	}
	if err := setMeta(ctx, tx, metaBaseVersion, version); err != nil {
		return err
	}
	return tx.Commit()
}

// Status reports the replica's bookkeeping.
func (r *Replica) Status(ctx context.Context) (Status, error) {
	s := Status{Volume: r.volume, ClientID: r.clientID, PageSize: r.pageSize}
	base, err := getMetaInt(ctx, r.sidecar, metaBaseVersion)
	if err != nil {
		return s, err
	}
	next, err := getMetaInt(ctx, r.sidecar, metaNextSeq)
	if err != nil {
		return s, err
	}
	s.BaseVersion, s.NextSeq = uint64(base), uint64(next)
	if err := r.sidecar.QueryRowContext(ctx, "SELECT count(*) FROM pending").Scan(&s.Pending); err != nil {
		return s, err
	}
	if s.PageCount, err = r.PageCount(ctx); err != nil {
		return s, err
	}
	return s, nil
}
