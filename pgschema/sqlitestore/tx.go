package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

// errTxDone means a Tx was used after the Update that handed it out returned.
var errTxDone = errors.New("metastore transaction already ended")

// Update runs fn in one BEGIN IMMEDIATE transaction on the write connection:
// it holds the database's write lock from the start, which is what makes
// LockVolume's head current until the end. Updates of this Store queue for
// the connection (honouring ctx); another process waits up to the busy
// timeout.
//
// fn's error is returned unchanged after a rollback. A panic in fn (or
// runtime.Goexit, as t.FailNow does) rolls back before it propagates.
//
// fn must not call this Store's CreateVolume or Update: they wait for the
// write connection that fn's own transaction holds. Its read methods work
// but see only committed data, not fn's writes; use Tx for those.
func (s *Store) Update(ctx context.Context, fn func(tx pgschema.Tx) error) error {
	stx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin update: %w", err)
	}
	t := &tx{s: s, tx: stx, locked: map[int64]*pgschema.Volume{}}
	// Roll back on every way out but a commit, a panic or runtime.Goexit
	// included; after a commit, Rollback is a no-op.
	defer func() {
		t.done = true
		stx.Rollback()
	}()
	if err := fn(t); err != nil {
		return err
	}
	t.done = true
	if t.broken != nil {
		// An Append failed and could not undo its own writes, and fn went on
		// regardless: committing could store half a commit.
		return fmt.Errorf("update: %w", t.broken)
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("commit update: %w", err)
	}
	return nil
}

// tx is the pgschema.Tx of one Update. It is used by one goroutine, fn's.
type tx struct {
	s  *Store
	tx *sql.Tx

	// locked holds each volume locked in this transaction as of now: its head
	// and page count advance with each Append. In this backend the lock is
	// the database's write lock, held since BEGIN IMMEDIATE; the map records
	// which volumes fn asked for, so Append can enforce the contract.
	locked map[int64]*pgschema.Volume

	// broken is set when an Append failed and rolling back its savepoint
	// failed too; Update then refuses to commit.
	broken error

	done bool // Update has returned
}

func (t *tx) check() error {
	if t.done {
		return errTxDone
	}
	if t.broken != nil {
		return t.broken
	}
	return nil
}

// LockVolume returns the volume as of now, which no other writer can change
// before the transaction ends, and lets this transaction Append to it.
func (t *tx) LockVolume(ctx context.Context, id int64) (pgschema.Volume, error) {
	if err := t.check(); err != nil {
		return pgschema.Volume{}, fmt.Errorf("lock volume %d: %w", id, err)
	}
	v, err := scanVolume(t.tx.StmtContext(ctx, t.s.stmts.lockVolume).QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Volume{}, fmt.Errorf("lock volume %d: %w", id, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return pgschema.Volume{}, fmt.Errorf("lock volume %d: %w", id, err)
	}
	t.locked[id] = &v
	return v, nil
}

// CommitBySeq returns the stored commit with idempotency key
// (volume, clientID, seq), or pgschema.ErrCommitNotFound.
func (t *tx) CommitBySeq(ctx context.Context, volume int64, clientID string, seq int64) (pgschema.Commit, error) {
	if err := t.check(); err != nil {
		return pgschema.Commit{}, fmt.Errorf("commit by seq: %w", err)
	}
	c, err := scanCommit(t.tx.StmtContext(ctx, t.s.stmts.commitBySeq).QueryRowContext(ctx, volume, clientID, seq))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Commit{}, fmt.Errorf("commit by seq %d/%s/%d: %w", volume, clientID, seq, pgschema.ErrCommitNotFound)
	}
	if err != nil {
		return pgschema.Commit{}, fmt.Errorf("commit by seq %d/%s/%d: %w", volume, clientID, seq, err)
	}
	return c, nil
}

// ChangedPages is Store.ChangedPages as this transaction sees it, its own
// appends included.
func (t *tx) ChangedPages(ctx context.Context, volume, from, to int64) ([]pgschema.PageRef, error) {
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("changed pages: %w", err)
	}
	return changedPages(ctx, t.tx, volume, from, to)
}

// LockVolumes is LockVolume for each of ids, in ascending id order. With no
// network in between, a loop over the prepared statement costs what one
// query would.
func (t *tx) LockVolumes(ctx context.Context, ids []int64) ([]pgschema.Volume, error) {
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("lock volumes: %w", err)
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	want = slices.Compact(want)
	stmt := t.tx.StmtContext(ctx, t.s.stmts.lockVolume)
	vols := make([]pgschema.Volume, 0, len(want))
	for _, id := range want {
		v, err := scanVolume(stmt.QueryRowContext(ctx, id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("lock volume %d: %w", id, pgschema.ErrVolumeNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("lock volume %d: %w", id, err)
		}
		vols = append(vols, v)
	}
	for _, v := range vols {
		t.locked[v.ID] = &v
	}
	return vols, nil
}

// LookupCommits is CommitBySeq for each distinct key, leaving out those not
// found.
func (t *tx) LookupCommits(ctx context.Context, keys []pgschema.CommitKey) ([]pgschema.Commit, error) {
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("look up commits: %w", err)
	}
	stmt := t.tx.StmtContext(ctx, t.s.stmts.commitBySeq)
	seen := make(map[pgschema.CommitKey]struct{}, len(keys))
	var cs []pgschema.Commit
	for _, k := range keys {
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		c, err := scanCommit(stmt.QueryRowContext(ctx, k.Volume, k.ClientID, k.Seq))
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up commit %d/%s/%d: %w", k.Volume, k.ClientID, k.Seq, err)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// Append stores c as the next version of its locked volume: AppendAll of
// one commit.
func (t *tx) Append(ctx context.Context, c pgschema.NewCommit) error {
	return t.AppendAll(ctx, []pgschema.NewCommit{c})
}

// AppendAll stores cs in order, checking each as it goes, so the first
// commit that fails is the one Append in turn would fail on. Its writes run
// inside one savepoint, so a failure at any step (a duplicate idempotency
// key, a cancelled context) undoes all of cs, even if fn then carries on and
// commits.
func (t *tx) AppendAll(ctx context.Context, cs []pgschema.NewCommit) (err error) {
	if err := t.check(); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if len(cs) == 0 {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, `SAVEPOINT append`); err != nil {
		return fmt.Errorf("append to volume %d: savepoint: %w", cs[0].Volume, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Undo all of cs only. A background context: the caller's may be
		// the reason it failed, and the undo must still happen.
		bg := context.WithoutCancel(ctx)
		if _, rerr := t.tx.ExecContext(bg, `ROLLBACK TO append`); rerr != nil {
			t.broken = fmt.Errorf("append failed (%v) and could not be undone: %w", err, rerr)
			return
		}
		if _, rerr := t.tx.ExecContext(bg, `RELEASE append`); rerr != nil {
			t.broken = fmt.Errorf("append: release savepoint: %w", rerr)
		}
	}()
	// Heads as cs moves them, applied to t.locked only once all are stored.
	heads := make(map[int64]pgschema.Volume, 1)
	segIDs := make(map[string]int64, 1)
	now := toMicros(time.Now())
	for i := range cs {
		c := &cs[i]
		if err := pgschema.ValidateNewCommit(c); err != nil {
			return fmt.Errorf("append to volume %d: %w", c.Volume, err)
		}
		v, ok := heads[c.Volume]
		if !ok {
			l, locked := t.locked[c.Volume]
			if !locked {
				return fmt.Errorf("append to volume %d: %w", c.Volume, pgschema.ErrVolumeNotLocked)
			}
			v = *l
		}
		if c.Version != v.Head+1 {
			return &pgschema.StaleHeadError{Volume: c.Volume, Head: v.Head, Version: c.Version}
		}
		if err := t.appendLocked(ctx, c, segIDs, now); err != nil {
			return fmt.Errorf("append version %d to volume %d: %w", c.Version, c.Volume, err)
		}
		v.Head, v.PageCount = c.Version, c.PageCount
		heads[c.Volume] = v
	}
	if _, err := t.tx.ExecContext(ctx, `RELEASE append`); err != nil {
		return fmt.Errorf("append %d commits: release savepoint: %w", len(cs), err)
	}
	for id, v := range heads {
		l := t.locked[id]
		l.Head, l.PageCount = v.Head, v.PageCount
	}
	return nil
}

// appendLocked writes c's rows inside AppendAll's savepoint. segIDs caches
// the ids of segments already named inside it; now is the creation time.
func (t *tx) appendLocked(ctx context.Context, c *pgschema.NewCommit, segIDs map[string]int64, now int64) error {
	// Segments first: the page rows refer to them by id. A group-committed
	// segment holds several commits' pages, so it may be stored already.
	findSeg := t.tx.StmtContext(ctx, t.s.stmts.findSegment)
	addSeg := t.tx.StmtContext(ctx, t.s.stmts.addSegment)
	for _, p := range c.Pages {
		if _, ok := segIDs[p.Segment]; ok {
			continue
		}
		var id int64
		err := findSeg.QueryRowContext(ctx, p.Segment).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			err = addSeg.QueryRowContext(ctx, p.Segment, now).Scan(&id)
		}
		if err != nil {
			return fmt.Errorf("store segment %s: %w", p.Segment, err)
		}
		segIDs[p.Segment] = id
	}

	_, err := t.tx.StmtContext(ctx, t.s.stmts.addCommit).ExecContext(ctx,
		c.Volume, c.Version, c.Base, c.ClientID, c.ClientSeq, string(c.Decision), c.Reason,
		c.PageCount, len(c.Pages), notNil(c.Record), notNil(c.Checksum), toNullMicros(c.ReceivedAt), now)
	if isUnique(err) {
		return fmt.Errorf("client %s sequence %d: %w", c.ClientID, c.ClientSeq, pgschema.ErrDuplicateCommit)
	}
	if err != nil {
		return fmt.Errorf("insert commit: %w", err)
	}

	addPage := t.tx.StmtContext(ctx, t.s.stmts.addPage)
	for _, p := range c.Pages {
		if _, err := addPage.ExecContext(ctx, c.Volume, p.PageNo, c.Version, segIDs[p.Segment],
			p.FrameOffset, p.FrameLength, p.PageOffset, int64(p.Hash)); err != nil {
			return fmt.Errorf("insert page %d: %w", p.PageNo, err)
		}
	}

	if _, err := t.tx.StmtContext(ctx, t.s.stmts.setHead).ExecContext(ctx, c.Version, c.PageCount, c.Volume); err != nil {
		return fmt.Errorf("advance head: %w", err)
	}
	return nil
}

// notNil maps nil to an empty slice: the driver binds a nil []byte as NULL,
// and the record and checksum columns are NOT NULL, empty meaning none.
func notNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
