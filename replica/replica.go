package replica

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cambiumdb/cambium/replay"
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
	// ErrAlreadyOpen is returned by Open for a path already open in this
	// process, or whose sidecar another process holds.
	ErrAlreadyOpen = errors.New("replica: already open")
	// ErrTooManyReplicas is returned by Open when every VFS slot is taken.
	ErrTooManyReplicas = errors.New("replica: too many open replicas")
	// ErrMismatch is returned by Open when Options contradict the sidecar.
	ErrMismatch = errors.New("replica: options do not match the existing replica")
	// ErrOutOfOrder is returned by MarkPushed for a commit that is not the
	// oldest pending one.
	ErrOutOfOrder = errors.New("replica: commits must be marked pushed in order")
	// ErrClosed is returned by every method of a closed Replica.
	ErrClosed = errors.New("replica: closed")
	// ErrBroken is returned after a failure left the main file behind the
	// sidecar; reopening the replica repairs it.
	ErrBroken = errors.New("replica: main file behind its sidecar; reopen to repair")
)

// Durability says what a committed local transaction survives.
type Durability int

const (
	// DurabilityNormal (the default) is SQLite's WAL with
	// synchronous=NORMAL: a commit survives a crash of the process; a power
	// loss may lose the last commits, never an earlier one without the
	// later ones, and never corrupts the replica. COMMIT does no fsync.
	DurabilityNormal Durability = iota
	// DurabilityFull fsyncs every commit before COMMIT returns.
	DurabilityFull
)

func (d Durability) String() string {
	switch d {
	case DurabilityNormal:
		return "normal"
	case DurabilityFull:
		return "full"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// Defaults for the checkpoint bound.
const (
	DefaultCheckpointBytes   = 4 << 20
	DefaultCheckpointCommits = 1000
)

// Options configure Open. Volume and PageSize are recorded when the replica
// is created and must match (or be zero) on later opens; the others may
// change from one open to the next.
type Options struct {
	// Volume is the name of the replicated volume.
	Volume string
	// PageSize is the volume's page size; DefaultPageSize if 0.
	PageSize int
	// Durability is what a commit survives; DurabilityNormal if zero.
	Durability Durability
	// CheckpointBytes bounds the memory the overlay's pages take: a commit
	// that brings it to this size checkpoints before COMMIT returns. The
	// overlay may exceed it by one transaction's pages.
	// DefaultCheckpointBytes if 0.
	CheckpointBytes int
	// CheckpointCommits bounds how many commits the overlay holds, and so
	// how many Open may have to re-apply after a crash.
	// DefaultCheckpointCommits if 0.
	CheckpointCommits int
	// Mutators resolves named mutations: Mutate runs them, and a rebase
	// re-runs pending ones on a new head. The server must run the same
	// definitions. May be nil when the application uses none.
	Mutators replay.Mutators
	// OnDecision, if set, is called with the server's decision on each
	// pushed commit, in order, from Push.
	OnDecision func(PushResult)
	// PushBatch is the most commits one push request carries;
	// MaxPushCommits if 0 (and at most that).
	PushBatch int

	// Lazy, when the replica is created, makes it lazy: it starts with no
	// page and fetches each from the server the first time SQLite reads
	// it (lazy.go). It is recorded; later opens need not repeat it.
	Lazy bool
	// Fetcher reads the pages a lazy replica does not hold (an
	// *api.Client). Without one, reading such a page fails with
	// ErrNoFetcher.
	Fetcher Fetcher
	// ReadAhead is how many pages a lazy replica fetches per miss: the
	// page read and the next ones it does not hold. DefaultReadAhead if 0.
	ReadAhead int
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
	// afterSidecarCommit runs after a local commit, or a remote state, is
	// stored in the sidecar and before it goes any further. An error
	// simulates a crash there.
	afterSidecarCommit func() error
	// step runs before each named step (stepCommit, stepSidecarSync, ...)
	// with the last commit sequence number the step covers (0 for a remote
	// state). An error simulates a crash just before the step.
	step func(name string, seq uint64) error
}

// Replica is a client replica: a plain SQLite main file as of the last
// checkpoint, a sidecar holding pending commits and metadata, and an
// in-memory overlay with the pages committed since that checkpoint.
//
// Invariants, in the order they matter:
//  1. A local commit is stored in the sidecar before COMMIT returns, and
//     joins the overlay only then; the overlay over the main file is the
//     latest local state, and is what SQLite reads.
//  2. The main file never holds a page of a commit the sidecar could lose:
//     a checkpoint fsyncs the sidecar before it writes the main file, and a
//     remote state is stored with an fsync before the main file is written.
//  3. applied_seq is recorded only after the main file holding those
//     commits is fsynced; Open re-applies the pending commits after it.
//     Re-applying commits in order over a file that already has some of
//     them yields the same file, so any crash is repaired by Open.
//  4. A failure that may leave the main file behind sets broken, and the
//     replica refuses work until a reopen repairs it.
//
// Local write transactions are serialized by writeMu, so the per-replica
// VFS clock belongs to one transaction at a time. state's lock serializes
// everything that changes the sidecar's pending rows, the overlay or the
// main file: commits, checkpoints, MarkPushed, ApplyRemote and Reset.
// Lock order: the VFS's locks (a commit runs inside SQLite's COMMIT;
// ApplyRemote takes Exclusive), then state, then the sidecar's connection.
type Replica struct {
	path     string
	pageSize int
	clientID string
	volume   string
	opts     Options
	slot     *vfs.VFS
	side     *sidecar
	main     *os.File
	faults   faults
	ov       overlay
	lz       lazyState

	// writeMu is a one-slot semaphore held by the connection running a write
	// transaction, or by a rebase.
	writeMu chan struct{}

	// resetExtra, when set (by a rebase holding writeMu), runs inside the
	// sidecar transaction of Reset, so what it stores commits with it.
	resetExtra func(ctx context.Context, tx *sql.Tx) error
	// noRedo is set once the sidecar is known to hold no transaction
	// waiting to be re-run (rebase.go), so a rebase skips looking.
	noRedo atomic.Bool

	// state caches the sidecar's bookkeeping so a commit does not read it.
	state struct {
		sync.Mutex
		nextSeq       uint64 // sequence number of the next local commit
		base          uint64 // server version the replica is based on
		basePageCount uint32 // its page count
		applied       uint64 // last commit recorded as in the main file
		enc           pageSetEncoder
	}

	mu struct {
		sync.Mutex
		db     *sql.DB // the replica's own pool (Mutate), opened on first use
		conns  map[string]*conn
		nextID int
		broken error
		closed bool // Close was called: every method returns ErrClosed
	}
}

// Open opens or creates the replica whose main file is path, re-applying
// whatever a crash left unfinished.
func Open(ctx context.Context, path string, opts Options) (*Replica, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if opts.Durability != DurabilityNormal && opts.Durability != DurabilityFull {
		return nil, fmt.Errorf("open %s: unknown durability %v", path, opts.Durability)
	}
	if opts.CheckpointBytes <= 0 {
		opts.CheckpointBytes = DefaultCheckpointBytes
	}
	if opts.CheckpointCommits <= 0 {
		opts.CheckpointCommits = DefaultCheckpointCommits
	}
	// Checked again when the slot is taken; this early check keeps a second
	// Open from touching the files, whose sidecar the first one locks.
	slots.Lock()
	_, taken := slots.open[abs]
	slots.Unlock()
	if taken {
		return nil, fmt.Errorf("open %s: %w", path, ErrAlreadyOpen)
	}
	r := &Replica{path: abs, opts: opts, writeMu: make(chan struct{}, 1)}
	r.mu.conns = make(map[string]*conn)
	if err := r.open(ctx, opts); err != nil {
		r.closeFiles(false)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return r, nil
}

func (r *Replica) open(ctx context.Context, opts Options) error {
	var err error
	if r.side, err = openSidecar(ctx, r.path+"-cambium", opts.Durability); err != nil {
		return err
	}
	if err := r.initMeta(ctx, opts); err != nil {
		return err
	}
	if r.main, err = os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return err
	}
	r.state.Lock()
	err = r.loadLazyLocked(ctx)
	if err == nil {
		err = r.recoverLocked(ctx)
	}
	r.state.Unlock()
	if err != nil {
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
	return r.side.tx(ctx, func(tx *sql.Tx) error {
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
				metaNextSeq: 1, metaBaseVersion: 0, metaBasePageCount: 0,
			} {
				if err := setMeta(ctx, tx, k, v); err != nil {
					return err
				}
			}
			if opts.Lazy {
				if err := setMeta(ctx, tx, metaLazy, "1"); err != nil {
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
		return nil
	})
}

// Close checkpoints, unmounts the replica and closes its files. Connections
// opened with the cambium driver must be closed first. A broken replica is
// closed without a checkpoint; the next Open repairs it.
func (r *Replica) Close(ctx context.Context) error {
	var errs []error
	r.mu.Lock()
	db := r.mu.db
	r.mu.db = nil
	r.mu.Unlock()
	if db != nil {
		errs = append(errs, db.Close())
	}
	if r.slot != nil {
		r.slot.Unmount(r.path)
		releaseSlot(r)
		r.slot = nil
	}
	clean := false
	if r.side != nil && r.main != nil && r.brokenErr() == nil {
		if err := r.Checkpoint(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		} else if err := r.saveFetched(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		} else {
			clean = true
		}
	}
	errs = append(errs, r.closeFiles(clean))
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	return errors.Join(errs...)
}

// checkOpen returns ErrClosed once Close has been called.
func (r *Replica) checkOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return ErrClosed
	}
	return nil
}

// closeFiles closes the main file and the sidecar; clean (the overlay was
// checkpointed, so the redo log is empty) removes the redo log.
func (r *Replica) closeFiles(clean bool) error {
	var errs []error
	if r.main != nil {
		errs = append(errs, r.main.Close())
		r.main = nil
	}
	if r.side != nil {
		errs = append(errs, r.side.close(clean))
		r.side = nil
	}
	return errors.Join(errs...)
}

// Path is the absolute path of the main file, the DSN for sql.Open("cambium", …).
func (r *Replica) Path() string { return r.path }

// PageSize implements vfs.PageSource.
func (r *Replica) PageSize() int { return r.pageSize }

func (r *Replica) brokenErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return ErrClosed
	}
	return r.mu.broken
}

func (r *Replica) setBroken(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.broken == nil {
		r.mu.broken = fmt.Errorf("%w: %v", ErrBroken, err)
	}
}

// commit is the VFS CommitFunc. The sidecar transaction inserting the
// pending commit is the commit point; its pages then join the overlay, and
// a checkpoint follows when the overlay reaches its bound.
func (r *Replica) commit(ctx context.Context, c *vfs.Capture) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	rec := r.recordFor(c.Tag)
	r.state.Lock()
	defer r.state.Unlock()
	seq := r.state.nextSeq
	if err := r.insertPendingLocked(ctx, seq, c, rec); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	r.state.nextSeq++
	// From here on the transaction is committed: failing COMMIT would lie.
	// A failure makes the replica refuse further work until a reopen
	// re-applies the sidecar.
	if f := r.faults.afterSidecarCommit; f != nil {
		if err := f(); err != nil {
			r.setBroken(err)
			return nil
		}
	}
	if err := r.step(stepCommit, seq); err != nil {
		r.setBroken(err)
		return nil
	}
	r.ov.add(seq, c.PageCount, c.Pages)
	r.side.withLog(func(l *redoLog) error { l.wrote(c.PageCount, c.Pages); return nil })
	if r.overBoundLocked() {
		// A failure sets broken; the commit itself stands.
		_ = r.checkpointLocked(ctx)
	}
	return nil
}

// insertPendingLocked appends the commit to the redo log; it becomes a
// pending row when the log is folded.
func (r *Replica) insertPendingLocked(ctx context.Context, seq uint64, c *vfs.Capture, rec *Record) error {
	e := &r.state.enc
	return r.side.withLog(func(l *redoLog) error {
		// A page is a delta of its latest version if a commit of the log's
		// current generation wrote it (see pageset.go): that version is in
		// the overlay, which a checkpoint empties only after a fold.
		numbers, deltas, packed := e.encode(c.Pages, func(pgno uint32) []byte {
			if _, ok := l.pages[pgno]; !ok {
				return nil
			}
			return r.ov.pages[pgno]
		})
		return l.append(pendingRow{
			seq: int64(seq), base: int64(r.state.base), pageCount: int64(c.PageCount), createdAt: time.Now().UnixMilli(),
			readSet: e.encodeReadSet(c.ReadSet), pageNumbers: numbers, deltas: deltas, record: e.encodeRecord(rec), pages: packed,
		})
	})
}

// Pending returns the local commits not yet marked pushed, oldest first.
func (r *Replica) Pending(ctx context.Context) ([]PendingCommit, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.state.Lock()
	defer r.state.Unlock()
	var out []PendingCommit
	chain := make(pageChain)
	err := r.pendingRowsLocked(ctx, "SELECT seq, base_version, page_count, read_set, page_numbers, deltas, record, pages FROM pending ORDER BY seq",
		func(row pendingRow) error {
			pc := PendingCommit{Seq: uint64(row.seq), BaseVersion: uint64(row.base), PageCount: uint32(row.pageCount)}
			var err error
			if pc.ReadSet, err = DecodeReadSet(row.readSet); err != nil {
				return fmt.Errorf("pending %d read set: %w", pc.Seq, err)
			}
			if pc.Record, err = DecodeRecord(row.record); err != nil {
				return fmt.Errorf("pending %d record: %w", pc.Seq, err)
			}
			if pc.Pages, err = chain.decode(row.pageNumbers, row.deltas, row.pages, r.pageSize); err != nil {
				return fmt.Errorf("pending %d: %w", pc.Seq, err)
			}
			out = append(out, pc)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	return out, nil
}

// pendingRowsLocked calls fn with each pending commit, oldest first: the
// rows q selects from the pending table (seq, base_version, page_count,
// read_set, page_numbers, deltas, record, pages, in seq order), then the frames of
// the redo log. The blobs are valid during the call only.
func (r *Replica) pendingRowsLocked(ctx context.Context, q string, fn func(pendingRow) error) error {
	// The log's lock keeps a fold from moving commits between the two.
	return r.side.withLog(func(l *redoLog) error { return r.pendingRowsLogLocked(ctx, l, q, fn) })
}

func (r *Replica) pendingRowsLogLocked(ctx context.Context, l *redoLog, q string, fn func(pendingRow) error) error {
	rows, err := r.side.db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var row pendingRow
		if err := rows.Scan(&row.seq, &row.base, &row.pageCount, &row.readSet, &row.pageNumbers, &row.deltas, &row.record, &row.pages); err != nil {
			return err
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	logged, err := l.rows(l.synced)
	if err != nil {
		return err
	}
	for _, row := range logged {
		if err := fn(row); err != nil {
			return err
		}
	}
	return nil
}

// MarkPushed records that the server accepted pending commit seq, the
// oldest pending one, as version: it is dropped, and the replica and the
// remaining pending commits are now based on version. Use it when the
// server stored exactly this commit's pages (fast-path); after a
// replay the caller must bring the replica to the server's state instead.
// A commit still in the overlay is checkpointed first, so its pages are in
// the main file before its row goes.
func (r *Replica) MarkPushed(ctx context.Context, seq, version uint64) error {
	return r.MarkPushedRun(ctx, []uint64{seq}, version)
}

// MarkPushedRun is MarkPushed for the oldest pending commits seqs, in
// order, the last of which became version: one sidecar transaction for the
// run rather than one per commit (a push of n fast-path commits would
// otherwise rewrite the remaining rows n times).
func (r *Replica) MarkPushedRun(ctx context.Context, seqs []uint64, version uint64) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	last := seqs[len(seqs)-1]
	r.state.Lock()
	defer r.state.Unlock()
	if last > r.state.applied {
		if err := r.checkpointLocked(ctx); err != nil {
			return fmt.Errorf("mark pushed %d: %w", last, err)
		}
	}
	var count uint32
	err := r.side.tx(ctx, func(tx *sql.Tx) error {
		for _, seq := range seqs {
			var oldest uint64
			err := tx.QueryRowContext(ctx, "SELECT seq, page_count FROM pending ORDER BY seq LIMIT 1").Scan(&oldest, &count)
			if err == sql.ErrNoRows {
				return fmt.Errorf("no commit pending: %w", ErrOutOfOrder)
			}
			if err != nil {
				return err
			}
			if oldest != seq {
				return fmt.Errorf("oldest pending %d: %w", oldest, ErrOutOfOrder)
			}
			if err := r.rebaseSuccessors(ctx, tx, seq); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM pending WHERE seq = ?", seq); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, "UPDATE pending SET base_version = ?", version); err != nil {
			return err
		}
		for k, v := range map[string]any{metaBaseVersion: version, metaBasePageCount: count, metaNextSeq: r.state.nextSeq} {
			if err := setMeta(ctx, tx, k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark pushed %d: %w", last, err)
	}
	r.state.base, r.state.basePageCount = version, count
	return nil
}

// rebaseSuccessors keeps the oldest pending row free of deltas when
// pending commit seq, the oldest, is about to be deleted: each of its pages
// that the next commit writing it stores as a delta of it is rewritten
// there as a whole page (see pageset.go).
func (r *Replica) rebaseSuccessors(ctx context.Context, tx *sql.Tx, seq uint64) error {
	var nums, deltas, packed []byte
	if err := tx.QueryRowContext(ctx, "SELECT page_numbers, deltas, pages FROM pending WHERE seq = ?", seq).Scan(&nums, &deltas, &packed); err != nil {
		return err
	}
	open, delta, err := decodePageSet(nums, deltas, packed, r.pageSize)
	if err != nil {
		return fmt.Errorf("pending %d: %w", seq, err)
	}
	if len(delta) > 0 {
		return fmt.Errorf("pending %d, the oldest, has deltas: %w", seq, ErrCorruptRecord)
	}
	// Find, for each page, the next commit that writes it.
	type fix struct {
		seq   uint64
		bases map[uint32][]byte
	}
	var fixes []fix
	rows, err := tx.QueryContext(ctx, "SELECT seq, page_numbers, deltas FROM pending WHERE seq > ? ORDER BY seq", seq)
	if err != nil {
		return err
	}
	defer rows.Close()
	for len(open) > 0 && rows.Next() {
		var next uint64
		if err := rows.Scan(&next, &nums, &deltas); err != nil {
			return err
		}
		written, err := DecodeReadSet(nums)
		if err != nil {
			return fmt.Errorf("pending %d: %w", next, err)
		}
		ds, err := DecodeReadSet(deltas)
		if err != nil {
			return fmt.Errorf("pending %d: %w", next, err)
		}
		f := fix{seq: next}
		for _, pgno := range written {
			base, ok := open[pgno]
			if !ok {
				continue
			}
			delete(open, pgno)
			if _, isDelta := slices.BinarySearch(ds, pgno); isDelta {
				if f.bases == nil {
					f.bases = make(map[uint32][]byte)
				}
				f.bases[pgno] = base
			}
		}
		if f.bases != nil {
			fixes = append(fixes, f)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	for _, f := range fixes {
		if err := tx.QueryRowContext(ctx, "SELECT page_numbers, deltas, pages FROM pending WHERE seq = ?", f.seq).Scan(&nums, &deltas, &packed); err != nil {
			return err
		}
		pages, delta, err := decodePageSet(nums, deltas, packed, r.pageSize)
		if err != nil {
			return fmt.Errorf("pending %d: %w", f.seq, err)
		}
		for pgno, base := range f.bases {
			subtle.XORBytes(pages[pgno], pages[pgno], base)
		}
		delta = slices.DeleteFunc(delta, func(pgno uint32) bool { _, ok := f.bases[pgno]; return ok })
		_, deltas, packed := packPageSet(pages, delta)
		if _, err := tx.ExecContext(ctx, "UPDATE pending SET deltas = ?, pages = ? WHERE seq = ?", deltas, packed, f.seq); err != nil {
			return err
		}
	}
	return nil
}

// Status reports the replica's bookkeeping.
func (r *Replica) Status(ctx context.Context) (Status, error) {
	if err := r.checkOpen(); err != nil {
		return Status{}, err
	}
	s := Status{Volume: r.volume, ClientID: r.clientID, PageSize: r.pageSize}
	r.state.Lock()
	s.BaseVersion, s.NextSeq = r.state.base, r.state.nextSeq
	err := r.side.withLog(func(l *redoLog) error {
		s.Pending = l.frames
		var n int
		err := r.side.db.QueryRowContext(ctx, "SELECT count(*) FROM pending").Scan(&n)
		s.Pending += n
		return err
	})
	r.state.Unlock()
	if err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	if s.PageCount, err = r.PageCount(ctx); err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	return s, nil
}
