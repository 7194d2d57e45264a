package replay

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/vfs"
)

// Defaults for Engine's options.
const (
	DefaultTimeout         = 2 * time.Second
	DefaultMaxBlobBytes    = 16 << 20
	DefaultMaxSQLBytes     = 1 << 20
	DefaultMaxDirtyBytes   = 64 << 20
	DefaultMaxScratchBytes = 64 << 20
)

// MaxConcurrentReplays is how many replays one process runs at once; a
// Replay beyond it waits for one to finish. SQLite reads the clock through
// the VFS with no connection handle, so each running replay needs a VFS
// name of its own, and names cannot be unregistered: the package registers
// a fixed pool of names at init, before any traffic (see package vfs).
const MaxConcurrentReplays = 16

// cacheKiB is the page cache of a replay connection: small, since the VFS
// makes the pager drop it at every transaction anyway, and what spills
// from it is bounded by MaxDirtyBytes.
const cacheKiB = 2048

// slots holds the pool's VFS names not in use.
var slots = make(chan *vfs.VFS, MaxConcurrentReplays)

func init() {
	// At init, not on first use: the binding's registry of VFS names is
	// unsynchronized, so registering while another connection of the
	// process (a replica's, a metastore's) runs would race with it.
	for i := range MaxConcurrentReplays {
		v, err := vfs.Register(fmt.Sprintf("cambium-replay-%d", i))
		if err != nil {
			panic(fmt.Sprintf("replay: %v", err))
		}
		slots <- v
	}
}

// errTimeout is the cause of a replay's context when Engine.Timeout runs out.
var errTimeout = errors.New("replay: timeout")

// ErrSlowSource is wrapped by Replay's error when the replay ran out of
// time mostly waiting for its source's pages: not the record's fault, so
// not a RejectError.
var ErrSlowSource = errors.New("replay: timed out waiting for the snapshot")

// mountSeq names each replay's mount uniquely.
var mountSeq atomic.Uint64

// Engine re-executes logical records on snapshots, deterministically and
// in a sandbox (DESIGN "Logical records and replay").
//
// A replay runs on a fresh SQLite connection through the Cambium VFS over
// Input.Source, read lazily page by page; its writes are captured, never
// applied to the source: the caller stores the Output. The connection runs
// with journal_mode=MEMORY, the VFS clock fixed at the record's time,
// random() and randomblob() drawn from the record's seed (Rand), in UTC,
// and the record's statements (or its mutation) in one BEGIN IMMEDIATE …
// COMMIT. Every replay leaves nothing behind: its mount is removed and
// its connection closed, whether it succeeds or fails.
//
// Replays are independent: up to MaxConcurrentReplays run in parallel. The
// engine does not order replays of one volume; the caller serializes them
// (each must run on the head its predecessor produced).
//
// The sandbox (DESIGN "Sandbox"): an authorizer (see sandbox) denies
// ATTACH, load_extension, PRAGMAs off a read-only allow-list and, unless
// Input.AllowDDL, schema changes; time is bounded by Timeout, enforced by
// mattn's interrupt on the context and by a progress handler that stops
// any statement once the time is up; memory by MaxBlobBytes, MaxSQLBytes,
// a small page cache, MaxDirtyBytes and MaxScratchBytes (temporary storage
// goes through the VFS, in Go memory, never to disk). Extension loading
// stays off.
//
// Limitations: 'localtime' follows the server process's time zone (the C
// library's), not the record's Context.TZ, so a record that uses it
// replays identically only if the server runs in the client's zone (run
// the server with TZ=UTC and have clients avoid 'localtime' in writes).
// Connection state outside the transaction is not in the record: replay
// runs with SQLite's defaults (foreign_keys, recursive_triggers and
// case_sensitive_like off, as on a replica connection) on a fresh
// connection, so total_changes(), and last_insert_rowid() or changes()
// before the record's first write, may differ from the client's.
//
// Options are read by every Replay: set them before the first one.
type Engine struct {
	// Timeout bounds one replay's run (not its wait for a slot): SQLite is
	// interrupted when it runs out, and the record rejected (CodeTimeout),
	// unless the replay spent most of that time waiting for its source's
	// pages: that error wraps ErrSlowSource instead.
	Timeout time.Duration
	// MaxBlobBytes is SQLITE_LIMIT_LENGTH: the largest string or blob a
	// replay may build (zeroblob, randomblob, concatenation, a row).
	MaxBlobBytes int
	// MaxSQLBytes is SQLITE_LIMIT_SQL_LENGTH: the longest SQL text.
	MaxSQLBytes int
	// MaxDirtyBytes bounds the pages one replay may write, which the VFS
	// holds in memory until the commit.
	MaxDirtyBytes int64
	// MaxScratchBytes bounds SQLite's temporary files (temp tables, sorter
	// spill, transient indexes), which the VFS holds in memory.
	MaxScratchBytes int64
	// Logger receives a debug line per rejection; a no-op logger if nil.
	Logger *zap.Logger
}

// NewEngine returns an engine with the default options.
func NewEngine() *Engine {
	return &Engine{
		Timeout:         DefaultTimeout,
		MaxBlobBytes:    DefaultMaxBlobBytes,
		MaxSQLBytes:     DefaultMaxSQLBytes,
		MaxDirtyBytes:   DefaultMaxDirtyBytes,
		MaxScratchBytes: DefaultMaxScratchBytes,
		Logger:          zap.NewNop(),
	}
}

// Input is one replay to run.
type Input struct {
	// Source is the snapshot to replay on (the volume's head), read lazily
	// page by page. The replay never changes it.
	Source vfs.PageSource
	// Record is the logical record to run.
	Record *Record
	// AllowDDL lets the record change the schema (the volume's policy).
	AllowDDL bool
	// Mutators resolves a mutation record's name; may be nil, and then a
	// mutation record is rejected with CodeUnknownMutation.
	Mutators Mutators
}

// Output is what a replay wrote, as vfs.Capture has it.
type Output struct {
	// PageCount is the database's page count after the replay.
	PageCount uint32
	// Pages maps each page number written to its bytes (page 1 carries the
	// replay connection's change counters; compare with Compare). Empty
	// when the record changed nothing.
	Pages map[uint32][]byte
	// ReadSet lists, ascending, the pages the replay read; nil when the
	// record changed nothing.
	ReadSet []uint32
}

func (e *Engine) timeout() time.Duration { return orDefault(e.Timeout, DefaultTimeout) }
func (e *Engine) maxBlobBytes() int      { return orDefault(e.MaxBlobBytes, DefaultMaxBlobBytes) }
func (e *Engine) maxSQLBytes() int       { return orDefault(e.MaxSQLBytes, DefaultMaxSQLBytes) }
func (e *Engine) maxDirtyBytes() int64   { return orDefault(e.MaxDirtyBytes, DefaultMaxDirtyBytes) }
func (e *Engine) maxScratchBytes() int64 { return orDefault(e.MaxScratchBytes, DefaultMaxScratchBytes) }
func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

func (e *Engine) logger() *zap.Logger {
	if e.Logger == nil {
		return zap.NewNop()
	}
	return e.Logger
}

// Replay runs in.Record on in.Source and returns the pages it wrote.
//
// Errors: a *RejectError when the record is at fault (see the Code
// constants), which replaying again on the same snapshot would repeat;
// otherwise a plain error — reading the source failed (the source's error
// is wrapped), the source was too slow (ErrSlowSource), ctx ended, the
// engine could not open its connection — after which the caller may retry
// or fail the commit. Replay waits for a free slot (MaxConcurrentReplays)
// as long as ctx allows.
func (e *Engine) Replay(ctx context.Context, in Input) (*Output, error) {
	if err := in.Record.Validate(); err != nil {
		return nil, e.rejected(&RejectError{Code: CodeRecord, Reason: err.Error(), Statement: -1, Err: err})
	}
	if in.Record.Context.Time.IsZero() {
		return nil, e.rejected(&RejectError{Code: CodeRecord, Reason: "record has no replay time", Statement: -1})
	}
	if in.Source == nil {
		return nil, errors.New("replay: no source")
	}
	var slot *vfs.VFS
	select {
	case slot = <-slots:
	case <-ctx.Done():
		return nil, fmt.Errorf("replay: wait for a slot: %w", ctx.Err())
	}
	defer func() { slots <- slot }()

	rctx, cancel := context.WithTimeoutCause(ctx, e.timeout(), errTimeout)
	defer cancel()
	r := &run{
		e:    e,
		in:   in,
		v:    slot,
		name: fmt.Sprintf("/cambium-replay/%d", mountSeq.Add(1)),
		sb:   &sandbox{allowDDL: in.AllowDDL},
		rng:  NewRand(in.Record.Context.Seed),
		stop: newStopFlag(),
		src:  &timedSource{PageSource: in.Source},
	}
	defer r.stop.free() // after run closed the connection
	defer context.AfterFunc(rctx, r.stop.set)()
	r.started = time.Now()
	out, err := r.run(ctx, rctx)
	if re := (*RejectError)(nil); errors.As(err, &re) {
		return nil, e.rejected(re)
	}
	return out, err
}

func (e *Engine) rejected(re *RejectError) error {
	e.logger().Debug("replay rejected",
		zap.String("code", string(re.Code)), zap.String("reason", re.Reason), zap.Int("statement", re.Statement))
	return re
}

// run is one replay on one slot.
type run struct {
	e    *Engine
	in   Input
	v    *vfs.VFS
	name string
	sb   *sandbox
	rng  *Rand
	stop *stopFlag // set when the replay's context ends
	src  *timedSource

	started time.Time
	capture *vfs.Capture // set by commit
}

// timedSource measures the time a replay spends reading its source, so a
// replay that runs out of time waiting for pages is not blamed on its
// record.
type timedSource struct {
	vfs.PageSource
	nanos atomic.Int64
}

func (s *timedSource) PageCount(ctx context.Context) (uint32, error) {
	defer s.since(time.Now())
	return s.PageSource.PageCount(ctx)
}

func (s *timedSource) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	defer s.since(time.Now())
	return s.PageSource.ReadPage(ctx, pgno, p)
}

func (s *timedSource) since(t time.Time) { s.nanos.Add(int64(time.Since(t))) }

// waited is the time spent reading the source so far.
func (s *timedSource) waited() time.Duration { return time.Duration(s.nanos.Load()) }

// commit is the mount's CommitFunc: it keeps the capture and applies
// nothing.
func (r *run) commit(_ context.Context, c *vfs.Capture) error {
	if r.capture != nil {
		return errors.New("replay: second commit in one replay")
	}
	r.capture = c
	return nil
}

// run mounts the source, opens the connection and runs the record, then
// explains a failure while the mount's last error is still there.
func (r *run) run(parent, ctx context.Context) (*Output, error) {
	ps := r.in.Source.PageSize()
	if err := r.v.Mount(r.name, r.src, r.commit); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer r.v.Unmount(r.name)
	if err := r.v.SetDirtyLimit(r.name, int(max(1, r.e.maxDirtyBytes()/int64(ps)))); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	r.v.SetScratchLimit(r.e.maxScratchBytes())
	r.v.SetTime(r.in.Record.Context.Time)
	defer r.v.SetTime(time.Time{})

	q := url.Values{}
	q.Set("vfs", r.v.Name())
	q.Set("_journal_mode", "MEMORY")
	q.Set("_locking_mode", "NORMAL")
	q.Set("_sync", "NORMAL") // the VFS commits at xSync (see package vfs)
	db := sql.OpenDB(&connector{dsn: "file:" + r.name + "?" + q.Encode(), hook: r.setup})
	defer db.Close()
	db.SetMaxOpenConns(1)

	out, err := r.exec(ctx, db)
	if err != nil {
		return nil, r.explain(parent, ctx, err)
	}
	return out, nil
}

// setup is the connection's ConnectHook, run after mattn's own PRAGMAs.
func (r *run) setup(sc *sqlite3.SQLiteConn) error {
	sc.SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, r.e.maxBlobBytes())
	sc.SetLimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, r.e.maxSQLBytes())
	sc.SetLimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
	sc.SetLimit(sqlite3.SQLITE_LIMIT_WORKER_THREADS, 0)
	// temp_store=FILE sends temp tables, transient indexes and sorter
	// spill through the VFS's scratch files, bounded by MaxScratchBytes;
	// in MEMORY they would grow in SQLite's heap without a bound.
	// trusted_schema=ON (the default) lets triggers and DEFAULTs call the
	// random() override. The extension loader is off: mattn enables it
	// only while loading the extensions a DSN names, and there are none.
	pragmas := fmt.Sprintf("PRAGMA page_size=%d; PRAGMA cache_size=-%d; PRAGMA temp_store=FILE; PRAGMA trusted_schema=ON",
		r.in.Source.PageSize(), cacheKiB)
	if _, err := sc.Exec(pragmas, nil); err != nil {
		return err
	}
	if err := r.rng.Register(sc); err != nil {
		return err
	}
	if err := r.stop.install(sc); err != nil {
		return err
	}
	sc.RegisterAuthorizer(r.sb.authorize)
	return nil
}

// exec runs the record in one transaction and returns the capture.
func (r *run) exec(ctx context.Context, db *sql.DB) (*Output, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, &statementError{index: -1, err: fmt.Errorf("open: %w", err)}
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return nil, &statementError{index: -1, err: fmt.Errorf("begin: %w", err)}
	}
	r.sb.active.Store(true)
	err = Apply(ctx, conn, r.in.Record, r.in.Mutators)
	r.sb.active.Store(false)
	if err == nil {
		if _, cerr := conn.ExecContext(ctx, "COMMIT"); cerr != nil {
			err = classify(ctx, fmt.Errorf("commit: %w", cerr), CodeSQL, -1)
		}
	}
	if err != nil {
		// Closing would roll back too; this keeps the order explicit.
		r.stop.clear()
		conn.ExecContext(context.Background(), "ROLLBACK")
		return nil, err
	}
	if c := r.capture; c != nil {
		return &Output{PageCount: c.PageCount, Pages: c.Pages, ReadSet: c.ReadSet}, nil
	}
	n, err := r.in.Source.PageCount(ctx)
	if err != nil {
		return nil, &statementError{index: -1, err: fmt.Errorf("page count: %w", err)}
	}
	return &Output{PageCount: n, Pages: map[uint32][]byte{}}, nil
}

// explain sorts a failure: the snapshot's I/O first (whatever SQLite or a
// handler made of it), then a memory limit, the engine's timeout, the
// caller's context, and last the record's own faults, with the sandbox's
// reason for a denial.
func (r *run) explain(parent, ctx context.Context, err error) error {
	stmt := -1
	if se := (*statementError)(nil); errors.As(err, &se) {
		stmt = se.index
	}
	if re := (*RejectError)(nil); errors.As(err, &re) {
		stmt = re.Statement
	}
	verr := r.v.LastError(r.name)
	if verr == nil {
		verr = r.v.ScratchError()
	}
	if le := (*vfs.LimitError)(nil); errors.As(verr, &le) {
		// The binding reports every failed write to SQLite as an I/O error.
		return &RejectError{Code: CodeTooBig, Reason: fmt.Sprintf("replay needs more memory than allowed: %v", le), Statement: stmt, Err: err}
	}
	if verr != nil {
		return fmt.Errorf("replay: %w (%v)", verr, err)
	}
	if context.Cause(ctx) == errTimeout && parent.Err() == nil {
		// Blame the record only for a replay that spent at least half its
		// time running, not waiting for pages.
		elapsed, waited := time.Since(r.started), r.src.waited()
		if elapsed-waited < r.e.timeout()/2 {
			return fmt.Errorf("replay: %w after %v, %v of it reading the snapshot (%v)", ErrSlowSource, elapsed.Round(time.Millisecond), waited.Round(time.Millisecond), err)
		}
		return &RejectError{Code: CodeTimeout, Reason: fmt.Sprintf("replay ran past %v", r.e.timeout()), Statement: stmt, Err: err}
	}
	if parent.Err() != nil {
		return fmt.Errorf("replay: %w", err)
	}
	re := (*RejectError)(nil)
	if !errors.As(err, &re) {
		return fmt.Errorf("replay: %w", err)
	}
	if why := r.sb.deniedReason(); why != "" {
		// A denial fails the statement's prepare, with SQLITE_AUTH or, for
		// a function, SQLITE_ERROR.
		re.Code, re.Reason = CodeSandbox, why
	}
	return re
}

// connector opens replay connections for database/sql, so a mutation's Go
// handler gets *sql.Rows like anywhere else.
type connector struct {
	dsn  string
	hook func(*sqlite3.SQLiteConn) error
}

var _ driver.Connector = (*connector)(nil)

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	return c.Driver().Open(c.dsn)
}

func (c *connector) Driver() driver.Driver { return &sqlite3.SQLiteDriver{ConnectHook: c.hook} }
