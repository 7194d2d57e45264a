package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replay"
)

// Rebase (DESIGN.md, client replica): when the server stored some of this
// replica's commits as other pages than the replica has (merged on top of
// others' work, or replayed), or rejected some, or simply moved on while
// commits were pending, the replica goes to the server's head and re-runs
// its still-pending transactions there from their logical records, so the
// application sees head plus its own pending work.
//
// Crash safety: the transactions to re-run are written to the sidecar's
// redo table in the same transaction that drops the pending commits (Reset).
// Before one is re-run, its row notes the sequence number its new local
// commit will get (the next one: the rebase holds the write lock, so no
// other commit can take it); after, the row goes. finishRedo, run again
// after a crash, re-runs exactly the rows whose noted commit is not pending.

// RejectedCommit is a local transaction the server (or a re-run on a newer
// head) rejected: it was dropped from the replica, and its reason kept.
type RejectedCommit struct {
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	Code   string    `json:"code"`   // the wire code, e.g. replay_rejected, conflict, stale_base
	Kind   string    `json:"kind"`   // for replay rejections: constraint, sandbox, timeout, ...
	Reason string    `json:"reason"` // in words
}

// rebase brings the replica to the server's head and re-runs on it the
// pending commits that the server has not stored. results are this push's
// answers, by sequence number: a commit stored (whatever its decision) is
// dropped, its effect being in head; one rejected as stale is re-run; one
// rejected otherwise is dropped with its reason. For pending commits this
// push did not decide, the server is asked which it stored (an earlier
// push whose answer was lost).
func (r *Replica) rebase(ctx context.Context, c *api.Client, results map[uint64]PushResult) error {
	// One rebase at a time, and no application write in the middle: a
	// transaction made on head before the re-runs would be pushed as if
	// made on top of them.
	select {
	case r.writeMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.writeMu }()

	if err := r.finishRedoHeld(ctx); err != nil {
		return err
	}
	pending, err := r.Pending(ctx)
	if err != nil {
		return err
	}
	stored := map[uint64]bool{}
	rejected := map[uint64]error{}
	var unknown []uint64
	for _, p := range pending {
		res, ok := results[p.Seq]
		var stale *commit.StaleBaseError
		switch {
		case !ok:
			unknown = append(unknown, p.Seq)
		case res.Decision != commit.Rejected:
			stored[p.Seq] = true
		case !errors.As(res.Err, &stale):
			rejected[p.Seq] = res.Err
		}
	}
	if len(unknown) > 0 {
		got, err := c.ClientCommits(ctx, r.volume, r.clientID, int64(unknown[0]), int64(unknown[len(unknown)-1]))
		if err != nil {
			return fmt.Errorf("rebase: look up stored commits: %w", err)
		}
		for _, g := range got {
			stored[uint64(g.Seq)] = true
		}
	}
	var redo []PendingCommit
	for _, p := range pending {
		if !stored[p.Seq] && rejected[p.Seq] == nil {
			redo = append(redo, p)
		}
	}

	touched, err := r.PendingPageNumbers(ctx)
	if err != nil {
		return err
	}
	rs, err := r.fetchAt(ctx, c, touched)
	if err != nil {
		return err
	}
	r.resetExtra = func(ctx context.Context, tx *sql.Tx) error {
		for _, p := range pending {
			if err, ok := rejected[p.Seq]; ok {
				code, kind, reason := rejectionOf(err)
				if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO rejected(seq, at, code, kind, reason, record) VALUES(?,?,?,?,?,?)",
					p.Seq, time.Now().UnixMilli(), code, kind, reason, recordBytes(p.Record)); err != nil {
					return err
				}
			}
		}
		for _, p := range redo {
			if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO redo(seq, record) VALUES(?,?)", p.Seq, recordBytes(p.Record)); err != nil {
				return err
			}
		}
		if len(redo) > 0 {
			r.noRedo.Store(false)
		}
		return nil
	}
	err = r.remote(ctx, rs, true)
	r.resetExtra = nil
	if err != nil {
		return fmt.Errorf("rebase: reset to version %d: %w", rs.version, err)
	}
	return r.finishRedoHeld(ctx)
}

// finishRedoHeld re-runs the transactions waiting in the redo table, in
// order, each as a local commit with its own sequence number. One that
// fails on the new head for a reason of its own (a constraint, say) is
// dropped into the rejected table. writeMu must be held.
func (r *Replica) finishRedoHeld(ctx context.Context) (err error) {
	if r.noRedo.Load() {
		return nil
	}
	type row struct {
		seq    uint64
		record []byte
	}
	var rows []row
	err = r.side.tx(ctx, func(tx *sql.Tx) error {
		// A redo row whose new commit is pending was re-run before a crash.
		if _, err := tx.ExecContext(ctx, "DELETE FROM redo WHERE new_seq IN (SELECT seq FROM pending)"); err != nil {
			return err
		}
		rs, err := tx.QueryContext(ctx, "SELECT seq, record FROM redo ORDER BY seq")
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var x row
			if err := rs.Scan(&x.seq, &x.record); err != nil {
				return err
			}
			rows = append(rows, x)
		}
		return rs.Err()
	})
	if err != nil {
		return fmt.Errorf("redo: %w", err)
	}
	defer func() {
		if err == nil {
			r.noRedo.Store(true)
		}
	}()
	for _, x := range rows {
		rec, err := replay.DecodeRecord(x.record)
		if err == nil {
			r.state.Lock()
			next := r.state.nextSeq
			r.state.Unlock()
			err = r.side.tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "UPDATE redo SET new_seq = ? WHERE seq = ?", next, x.seq)
				return err
			})
			if err == nil {
				err = r.redoOne(ctx, rec)
			}
		}
		var rej *replay.RejectError
		var dec *replay.DecodeError
		switch {
		case errors.As(err, &rej), errors.As(err, &dec):
			code, kind, reason := rejectionOf(err)
			err = r.side.tx(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO rejected(seq, at, code, kind, reason, record) VALUES(?,?,?,?,?,?)",
					x.seq, time.Now().UnixMilli(), code, kind, "on rebase: "+reason, x.record); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "DELETE FROM redo WHERE seq = ?", x.seq)
				return err
			})
		case err == nil:
			err = r.side.tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "DELETE FROM redo WHERE seq = ?", x.seq)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("redo commit %d: %w", x.seq, err)
		}
	}
	return nil
}

// fetchAt fetches the pages changed since the replica's base and, at the
// same head, the pages in extra (those its pending commits wrote, which a
// reset must restore). A lazy replica fetches, of the changed pages, only
// those it holds (lazy.go).
func (r *Replica) fetchAt(ctx context.Context, c *api.Client, extra []uint32) (*remoteState, error) {
	st, err := r.Status(ctx)
	if err != nil {
		return nil, err
	}
	if r.lz.on {
		return r.fetchRemote(ctx, c, st.BaseVersion, extra)
	}
	pages, h, err := r.fetchChanged(ctx, c, st.BaseVersion)
	if err != nil {
		return nil, err
	}
	var missing []uint32
	for _, no := range extra {
		if _, ok := pages[no]; !ok && no <= h.PageCount {
			missing = append(missing, no)
		}
	}
	if err := r.readPagesAt(ctx, c, h.Head, missing, pages); err != nil {
		return nil, err
	}
	return &remoteState{version: uint64(h.Head), count: h.PageCount, pages: pages}, nil
}

// Rejected returns the local transactions that were dropped because the
// server rejected them, with their reasons, oldest first.
func (r *Replica) Rejected(ctx context.Context) ([]RejectedCommit, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	var out []RejectedCommit
	err := r.side.tx(ctx, func(tx *sql.Tx) error {
		rs, err := tx.QueryContext(ctx, "SELECT seq, at, code, kind, reason FROM rejected ORDER BY seq")
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var rc RejectedCommit
			var at int64
			if err := rs.Scan(&rc.Seq, &at, &rc.Code, &rc.Kind, &rc.Reason); err != nil {
				return err
			}
			rc.At = time.UnixMilli(at).UTC()
			out = append(out, rc)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("rejected: %w", err)
	}
	return out, nil
}

// rejectionOf splits a rejection into its wire code, kind and reason.
func rejectionOf(err error) (code, kind, reason string) {
	var (
		rep  *commit.ReplayError
		conf *commit.ConflictError
		res  *commit.ResolverError
		st   *commit.StaleBaseError
		rej  *replay.RejectError
	)
	switch {
	case errors.As(err, &rep):
		return commit.CodeReplayRejected, rep.Kind, rep.Reason
	case errors.As(err, &conf):
		return commit.CodeConflict, "", conf.Reason
	case errors.As(err, &res):
		return commit.CodeResolver, "", res.Reason
	case errors.As(err, &st):
		return commit.CodeStaleBase, "", st.Error()
	case errors.As(err, &rej):
		return commit.CodeReplayRejected, string(rej.Code), rej.Reason
	}
	return "rejected", "", err.Error()
}

func recordBytes(rec *Record) []byte {
	if rec == nil {
		return []byte{}
	}
	return rec.Encode()
}

// redoKey carries a rebase's re-run into the driver's BeginTx.
type redoKey struct{}

type redoTx struct{ rec *Record }

// redoOne re-runs rec as one local write transaction with its own context
// (time, random seed), while the caller holds writeMu.
func (r *Replica) redoOne(ctx context.Context, rec *Record) error {
	ctx = context.WithValue(ctx, redoKey{}, &redoTx{rec: rec})
	tx, err := r.sqlDB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := replay.Apply(ctx, tx, rec, r.opts.Mutators); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
