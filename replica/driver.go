package replica

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/vfs"
)

// DriverName is the database/sql driver name: sql.Open(DriverName, replica.Path()).
const DriverName = "cambium"

// MaxReplicas is how many replicas one process may have open at once. Each
// needs a VFS name of its own (the clock SQLite reads has no connection
// handle), and names must be registered before any traffic, so a pool is
// registered at init.
const MaxReplicas = 32

var slots struct {
	sync.Mutex
	pool  [MaxReplicas]*vfs.VFS
	owner [MaxReplicas]*Replica
	open  map[string]*Replica // by path
}

func init() {
	for i := range slots.pool {
		v, err := vfs.Register(fmt.Sprintf("cambium-replica-%d", i))
		if err != nil {
			panic(err)
		}
		slots.pool[i] = v
	}
	slots.open = make(map[string]*Replica)
	sql.Register(DriverName, &Driver{})
}

func acquireSlot(r *Replica) (*vfs.VFS, error) {
	slots.Lock()
	defer slots.Unlock()
	if _, ok := slots.open[r.path]; ok {
		return nil, ErrAlreadyOpen
	}
	for i, o := range slots.owner {
		if o == nil {
			slots.owner[i] = r
			slots.open[r.path] = r
			return slots.pool[i], nil
		}
	}
	return nil, ErrTooManyReplicas
}

func releaseSlot(r *Replica) {
	slots.Lock()
	defer slots.Unlock()
	for i, o := range slots.owner {
		if o == r {
			slots.owner[i] = nil
		}
	}
	delete(slots.open, r.path)
}

// Driver is the cambium database/sql driver: mattn/go-sqlite3 on the
// replica's Cambium VFS, journal_mode=MEMORY, normal locking, with each
// write transaction's statements recorded and its clock and random()
// made reproducible. The DSN is the path of a replica opened with Open.
type Driver struct{}

var _ driver.Driver = (*Driver)(nil)

// Open opens a connection on the replica at dsn.
func (d *Driver) Open(dsn string) (driver.Conn, error) {
	slots.Lock()
	r := slots.open[dsn]
	slots.Unlock()
	if r == nil {
		return nil, fmt.Errorf("cambium open %q: %w", dsn, ErrNotOpen)
	}
	return r.connect()
}

// connect opens one mattn connection tagged so the VFS can tell whose
// commit it sees.
func (r *Replica) connect() (*conn, error) {
	r.mu.Lock()
	r.mu.nextID++
	tag := strconv.Itoa(r.mu.nextID)
	r.mu.Unlock()
	c := &conn{r: r, tag: tag, rng: replay.NewRand(0)}
	q := url.Values{}
	q.Set("vfs", r.slot.Name())
	q.Set(vfs.TagParam, tag)
	q.Set("_journal_mode", "MEMORY")
	q.Set("_locking_mode", "NORMAL")
	// NORMAL or FULL: the VFS commits at xSync (see package vfs).
	q.Set("_sync", "NORMAL")
	q.Set("_txlock", "immediate")
	q.Set("_busy_timeout", "5000")
	// Cache prepared statements: Exec and Query of a string prepare it anew
	// otherwise, and a one-row INSERT costs little more than its prepare.
	q.Set("_stmt_cache_size", "32")
	d := &sqlite3.SQLiteDriver{ConnectHook: func(sc *sqlite3.SQLiteConn) error {
		if _, err := sc.Exec(fmt.Sprintf("PRAGMA page_size=%d; PRAGMA temp_store=MEMORY", r.pageSize), nil); err != nil {
			return err
		}
		// SQLite's PRNG is process-global; these per-connection overrides
		// draw from a generator seeded per transaction, the one replay uses.
		return c.rng.Register(sc)
	}}
	dc, err := d.Open("file:" + r.path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	c.sc = dc.(*sqlite3.SQLiteConn)
	r.mu.Lock()
	r.mu.conns[tag] = c
	r.mu.Unlock()
	return c, nil
}

// recordFor returns the record of the connection tagged tag (an empty
// record for an unknown tag).
func (r *Replica) recordFor(tag string) *Record {
	r.mu.Lock()
	c := r.mu.conns[tag]
	r.mu.Unlock()
	if c == nil || c.rec == nil {
		return &Record{}
	}
	return c.rec
}

// conn wraps a mattn connection. A write transaction — an explicit one, or
// one autocommit statement that is not read-only — holds the replica's
// writeMu, fixes the VFS clock and reseeds random() before its first
// statement, and appends every statement to rec; a transaction begun for
// a named mutation (Mutate) records the mutation instead.
type conn struct {
	r   *Replica
	tag string
	sc  *sqlite3.SQLiteConn
	rng *replay.Rand // random() and randomblob(), reseeded per write transaction
	rec *Record      // the current write transaction's record, nil outside one
	tx  bool

	held bool // writeMu is held by a rebase re-running this transaction, not by the transaction
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
)

// mutationKey is the context key under which Mutate hands its mutation to
// the BeginTx of its transaction.
type mutationKey struct{}

// beginWrite starts a write transaction's bookkeeping. A transaction begun
// with a mutation in ctx (Mutate) records that mutation, not its statements.
func (c *conn) beginWrite(ctx context.Context) error {
	if rd, ok := ctx.Value(redoKey{}).(*redoTx); ok {
		// A rebase re-running a pending transaction: it holds writeMu, and
		// the transaction keeps its record's context (time and seed).
		c.held = true
		c.setContextLocked(rd.rec.Context)
		c.rec.Mutation = rd.rec.Mutation
		return nil
	}
	select {
	case c.r.writeMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	var seed [8]byte
	crand.Read(seed[:])
	c.setContextLocked(Context{
		Time: time.Now().Truncate(time.Millisecond).UTC(),
		Seed: binary.LittleEndian.Uint64(seed[:]),
		TZ:   time.Local.String(),
	})
	if m, ok := ctx.Value(mutationKey{}).(*replay.Mutation); ok {
		c.rec.Mutation = m
	}
	return nil
}

// setContextLocked starts a record with ctx and makes SQLite see it: the
// VFS clock and the random() generator. writeMu must be held.
func (c *conn) setContextLocked(ctx Context) {
	c.rec = &Record{Context: ctx}
	c.rng.Reset(ctx.Seed)
	c.r.slot.SetTime(ctx.Time)
}

// endWrite ends it, after COMMIT, ROLLBACK or the autocommit statement.
func (c *conn) endWrite() {
	c.rec = nil
	c.r.slot.SetTime(time.Time{})
	if c.held {
		c.held = false
		return
	}
	<-c.r.writeMu
}

func (c *conn) record(query string, args []driver.NamedValue) error {
	if c.rec == nil || c.rec.Mutation != nil {
		return nil
	}
	st := Statement{SQL: query, Args: make([]Arg, len(args))}
	for i, a := range args {
		v, err := ValueOf(a.Value)
		if err != nil {
			return err
		}
		st.Args[i] = Arg{Name: a.Name, Value: v}
	}
	c.rec.Statements = append(c.rec.Statements, st)
	return nil
}

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	s, err := c.sc.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{c: c, s: s.(*sqlite3.SQLiteStmt), query: query}, nil
}

func (c *conn) Close() error {
	c.r.mu.Lock()
	delete(c.r.mu.conns, c.tag)
	c.r.mu.Unlock()
	return c.sc.Close()
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx treats every explicit transaction as a write transaction: BEGIN
// IMMEDIATE takes SQLite's RESERVED lock anyway (_txlock=immediate).
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.beginWrite(ctx); err != nil {
		return nil, err
	}
	t, err := c.sc.BeginTx(ctx, opts)
	if err != nil {
		c.endWrite()
		return nil, err
	}
	c.tx = true
	return &tx{c: c, t: t}, nil
}

// ExecContext runs query; outside a transaction it is one write transaction.
func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if !c.tx {
		if err := c.beginWrite(ctx); err != nil {
			return nil, err
		}
		defer c.endWrite()
	}
	if err := c.record(query, args); err != nil {
		return nil, err
	}
	return c.sc.ExecContext(ctx, query, args)
}

// QueryContext runs query; outside a transaction, a statement that may
// write (INSERT … RETURNING) is one write transaction.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.tx {
		if err := c.record(query, args); err != nil {
			return nil, err
		}
		return c.sc.QueryContext(ctx, query, args)
	}
	s, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.(*stmt).QueryContext(ctx, args)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &closingRows{Rows: rows, s: s}, nil
}

type closingRows struct {
	driver.Rows
	s driver.Stmt
}

func (r *closingRows) Close() error {
	err := r.Rows.Close()
	if cerr := r.s.Close(); err == nil {
		err = cerr
	}
	return err
}

type tx struct {
	c *conn
	t driver.Tx
}

func (t *tx) Commit() error {
	defer t.end()
	return t.t.Commit()
}

func (t *tx) Rollback() error {
	defer t.end()
	return t.t.Rollback()
}

func (t *tx) end() {
	t.c.tx = false
	t.c.endWrite()
}

type stmt struct {
	c     *conn
	s     *sqlite3.SQLiteStmt
	query string
}

var (
	_ driver.StmtExecContext  = (*stmt)(nil)
	_ driver.StmtQueryContext = (*stmt)(nil)
)

func (s *stmt) Close() error  { return s.s.Close() }
func (s *stmt) NumInput() int { return s.s.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), toNamed(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), toNamed(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if !s.c.tx && !s.s.Readonly() {
		if err := s.c.beginWrite(ctx); err != nil {
			return nil, err
		}
		defer s.c.endWrite()
	}
	if err := s.c.record(s.query, args); err != nil {
		return nil, err
	}
	return s.s.ExecContext(ctx, args)
}

// QueryContext outside a transaction: a read-only statement runs as is; a
// writing one (RETURNING) is a write transaction that ends when its rows
// are closed, since SQLite commits it then.
func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if s.c.tx || s.s.Readonly() {
		if err := s.c.record(s.query, args); err != nil {
			return nil, err
		}
		return s.s.QueryContext(ctx, args)
	}
	if err := s.c.beginWrite(ctx); err != nil {
		return nil, err
	}
	if err := s.c.record(s.query, args); err != nil {
		s.c.endWrite()
		return nil, err
	}
	rows, err := s.s.QueryContext(ctx, args)
	if err != nil {
		s.c.endWrite()
		return nil, err
	}
	return &writeRows{Rows: rows, c: s.c}, nil
}

type writeRows struct {
	driver.Rows
	c    *conn
	done bool
}

func (r *writeRows) Close() error {
	err := r.Rows.Close()
	if !r.done {
		r.done = true
		r.c.endWrite()
	}
	return err
}

func toNamed(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, v := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}
