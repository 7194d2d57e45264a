package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/pgschema"
)

// Update implements pgschema.Metastore. fn runs in a READ COMMITTED
// transaction; the volume row locks it takes serialize appends.
//
// BEGIN is not sent on its own: it travels in one pipeline with the
// transaction's first statement, which saves a round trip per Update.
func (s *Store) Update(ctx context.Context, fn func(tx pgschema.Tx) error) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Release destroys a connection left inside a transaction, so a failed
	// ROLLBACK cannot leak one into the pool.
	defer conn.Release()
	t := &tx{conn: conn.Conn(), locked: map[int64]*lockedVolume{}}
	rollback := func() {
		if t.begun {
			// Even when ctx is done, so the connection goes back clean.
			_, _ = t.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}
	defer func() {
		t.done = true
		if p := recover(); p != nil {
			rollback()
			panic(p)
		}
	}()
	if err := fn(t); err != nil {
		rollback()
		return err
	}
	if t.broken != nil {
		// fn ignored a failed Append whose statements had already run:
		// committing could store half of it.
		rollback()
		return fmt.Errorf("commit: an earlier append failed: %w", t.broken)
	}
	if !t.begun {
		return nil
	}
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err != nil {
		rollback()
		return fmt.Errorf("commit: %w", err)
	}
	if tag.String() == "ROLLBACK" {
		// The transaction had failed (fn ignored an error): PostgreSQL
		// rolled it back instead.
		return fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
	}
	return nil
}

// tx implements pgschema.Tx over one connection. It remembers the volumes it
// locked and their heads, which only its own Appends move.
type tx struct {
	conn   *pgx.Conn
	begun  bool // BEGIN has been sent
	locked map[int64]*lockedVolume
	broken error // set when an Append failed after sending statements
	done   bool  // set when Update returns: a retained tx is an error
}

// send sends b, preceded by BEGIN if the transaction has not begun, in one
// round trip, and returns the first error.
func (t *tx) send(ctx context.Context, b *pgx.Batch) error {
	if !t.begun {
		b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, b.QueuedQueries...)
		t.begun = true
	}
	return t.conn.SendBatch(ctx, b).Close()
}

// queryRow runs one single-row query in the transaction and scans it;
// pgx.ErrNoRows if it returns no row.
func (t *tx) queryRow(ctx context.Context, scan func(pgx.Row) error, sql string, args ...any) error {
	// pgx drops its prepared statements for a batch whose callback fails,
	// so "no row", a normal answer here, must not fail the batch.
	noRows := false
	var b pgx.Batch
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
		err := scan(row)
		if errors.Is(err, pgx.ErrNoRows) {
			noRows = true
			return nil
		}
		return err
	})
	if err := t.send(ctx, &b); err != nil {
		return err
	}
	if noRows {
		return pgx.ErrNoRows
	}
	return nil
}

// query runs one query in the transaction and hands its rows to fn, which
// must read them all.
func (t *tx) query(ctx context.Context, fn func(pgx.Rows) error, sql string, args ...any) error {
	var b pgx.Batch
	b.Queue(sql, args...).Query(fn)
	return t.send(ctx, &b)
}

type lockedVolume struct {
	head      int64
	pageCount uint32
}

var errTxDone = errors.New("transaction already ended")

var _ pgschema.Tx = (*tx)(nil)

// LockVolume implements pgschema.Tx with SELECT ... FOR NO KEY UPDATE: it
// excludes other lockers and writers of the row, but not inserts of rows
// that reference the volume by foreign key.
func (t *tx) LockVolume(ctx context.Context, id int64) (pgschema.Volume, error) {
	if t.done {
		return pgschema.Volume{}, fmt.Errorf("lock volume %d: %w", id, errTxDone)
	}
	var v pgschema.Volume
	err := t.queryRow(ctx, func(row pgx.Row) (err error) {
		v, err = scanVolume(row)
		return err
	}, `SELECT `+volumeColumns+` FROM volumes WHERE id = $1 FOR NO KEY UPDATE`, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("lock volume %d: %w", id, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("lock volume %d: %w", id, err)
	}
	t.locked[id] = &lockedVolume{head: v.Head, pageCount: v.PageCount}
	return v, nil
}

// lockVolumesSQL locks in the order of the sort below it: LockRows runs
// above the Sort node, so two transactions locking overlapping sets take
// their common rows in one order.
const lockVolumesSQL = `SELECT ` + volumeColumns + ` FROM volumes WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`

// LockVolumes implements pgschema.Tx in one query.
func (t *tx) LockVolumes(ctx context.Context, ids []int64) ([]pgschema.Volume, error) {
	if t.done {
		return nil, fmt.Errorf("lock volumes: %w", errTxDone)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	want = slices.Compact(want)
	var vols []pgschema.Volume
	err := t.query(ctx, func(rows pgx.Rows) (err error) {
		vols, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Volume, error) { return scanVolume(r) })
		return err
	}, lockVolumesSQL, want)
	if err != nil {
		return nil, fmt.Errorf("lock volumes %v: %w", want, err)
	}
	if len(vols) != len(want) {
		for i, id := range want {
			if i >= len(vols) || vols[i].ID != id {
				return nil, fmt.Errorf("lock volume %d: %w", id, pgschema.ErrVolumeNotFound)
			}
		}
	}
	for _, v := range vols {
		t.locked[v.ID] = &lockedVolume{head: v.Head, pageCount: v.PageCount}
	}
	return vols, nil
}

// lookupCommitsSQL probes the idempotency key's index once per distinct
// key: LIMIT 1 keeps the lateral subquery from being flattened into a join
// that a generic plan might run as a scan of the whole commit log.
const lookupCommitsSQL = `
SELECT c.* FROM (
	SELECT DISTINCT vol, cid, seq FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS k (vol, cid, seq)
) k
CROSS JOIN LATERAL (
	SELECT ` + commitColumns + ` FROM commits
	WHERE volume_id = k.vol AND client_id = k.cid AND client_seq = k.seq
	LIMIT 1
) c`

// LookupCommits implements pgschema.Tx in one query.
func (t *tx) LookupCommits(ctx context.Context, keys []pgschema.CommitKey) ([]pgschema.Commit, error) {
	if t.done {
		return nil, fmt.Errorf("look up commits: %w", errTxDone)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	vols, clients, seqs := make([]int64, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
	for i, k := range keys {
		vols[i], clients[i], seqs[i] = k.Volume, k.ClientID, k.Seq
	}
	var cs []pgschema.Commit
	err := t.query(ctx, func(rows pgx.Rows) (err error) {
		cs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Commit, error) { return scanCommit(r) })
		return err
	}, lookupCommitsSQL, vols, clients, seqs)
	if err != nil {
		return nil, fmt.Errorf("look up %d commits: %w", len(keys), err)
	}
	return cs, nil
}

// CommitBySeq implements pgschema.Tx.
func (t *tx) CommitBySeq(ctx context.Context, volume int64, clientID string, seq int64) (pgschema.Commit, error) {
	if t.done {
		return pgschema.Commit{}, fmt.Errorf("commit by sequence: %w", errTxDone)
	}
	var c pgschema.Commit
	err := t.queryRow(ctx, func(row pgx.Row) (err error) {
		c, err = scanCommit(row)
		return err
	}, `SELECT `+commitColumns+` FROM commits WHERE volume_id = $1 AND client_id = $2 AND client_seq = $3`,
		volume, clientID, seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("commit %s/%d of volume %d: %w", clientID, seq, volume, pgschema.ErrCommitNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("commit %s/%d of volume %d: %w", clientID, seq, volume, err)
	}
	return c, nil
}

// ChangedPages implements pgschema.Tx.
func (t *tx) ChangedPages(ctx context.Context, volume, from, to int64) ([]pgschema.PageRef, error) {
	if t.done {
		return nil, fmt.Errorf("changed pages: %w", errTxDone)
	}
	if from >= to {
		return nil, nil
	}
	if !t.begun {
		if err := t.send(ctx, &pgx.Batch{}); err != nil {
			return nil, fmt.Errorf("begin: %w", err)
		}
	}
	return changedPages(ctx, t.conn, volume, from, to)
}

// insertSegmentsSQL names each segment once. ON CONFLICT DO NOTHING waits
// for a concurrent transaction inserting the same key, so the next
// statement, which takes a new snapshot, sees the committed row. Keys arrive
// sorted, so two appends sharing segments take those waits in one order.
const insertSegmentsSQL = `INSERT INTO segments (key) SELECT k FROM unnest($1::text[]) AS k ON CONFLICT (key) DO NOTHING`

// Append implements pgschema.Tx: AppendAll of one commit, which has
// Append's rules and errors by contract, so the two share one path.
func (t *tx) Append(ctx context.Context, c pgschema.NewCommit) error {
	return t.AppendAll(ctx, []pgschema.NewCommit{c})
}

// nonNil maps nil to an empty slice: the columns are NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
