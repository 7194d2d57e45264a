package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replica"
)

// txFunc is one transaction of a workload on a database/sql handle. It
// must do the same thing each time it runs (its arguments are captured):
// the full-file client re-runs it on a newer head.
type txFunc func(ctx context.Context, db *sql.DB) error

// writer is one client of a strategy: a local database whose write
// transactions become commits that go to the server.
type writer interface {
	// Exec runs tx as one local transaction, one local commit.
	Exec(ctx context.Context, tx txFunc) error
	// Sync pushes until no local commit is pending, calling done after each
	// push with how many commits it settled (stored, or finally rejected).
	// It stops early, with commits still pending, once stop (if not zero)
	// has passed; it checks between pushes.
	Sync(ctx context.Context, stop time.Time, done func(n int)) error
	// CatchUp brings the local database to the server's head.
	CatchUp(ctx context.Context) error
	// DB is the local database, for reads.
	DB() *sql.DB
	Close(ctx context.Context) error
}

// maxPushes bounds one Sync: a commit that needs more pushes than this is
// a bug, not contention.
const maxPushes = 100000

// tally counts the server's decisions while active.
type tally struct {
	active                                        atomic.Bool
	fastPath, merged, replayed, rejected, retries atomic.Int64
}

// add counts one decision. A commit rejected because its base was stale
// is re-run on head and pushed again by every strategy that gets one: a
// retry.
func (t *tally) add(d commit.Decision, err error) {
	if !t.active.Load() {
		return
	}
	switch d {
	case commit.FastPath:
		t.fastPath.Add(1)
	case commit.Merged:
		t.merged.Add(1)
	case commit.Replayed:
		t.replayed.Add(1)
	default:
		t.rejected.Add(1)
		var stale *commit.StaleBaseError
		if errors.As(err, &stale) {
			t.retries.Add(1)
		}
	}
}

func (t *tally) accepted() int64 {
	return t.fastPath.Load() + t.merged.Load() + t.replayed.Load()
}

// replicaWriter is a Cambium replica: the hybrid, strict-pages and
// replay-all strategies, which differ only in the server's settings.
type replicaWriter struct {
	r  *replica.Replica
	db *sql.DB
	c  *api.Client
}

func openReplicaWriter(ctx context.Context, path, volume string, c *api.Client, t *tally) (*replicaWriter, error) {
	r, err := replica.Open(ctx, path, replica.Options{
		Volume:     volume,
		OnDecision: func(p replica.PushResult) { t.add(p.Decision, p.Err) },
	})
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		r.Close(ctx)
		return nil, err
	}
	return &replicaWriter{r: r, db: db, c: c}, nil
}

func (w *replicaWriter) Exec(ctx context.Context, tx txFunc) error { return tx(ctx, w.db) }

func (w *replicaWriter) Sync(ctx context.Context, stop time.Time, done func(int)) error {
	st, err := w.r.Status(ctx)
	if err != nil {
		return err
	}
	for i := 0; st.Pending > 0; i++ {
		if i == maxPushes {
			return fmt.Errorf("still %d commits pending after %d pushes", st.Pending, i)
		}
		if !stop.IsZero() && time.Now().After(stop) {
			return nil
		}
		if _, err := w.r.Push(ctx, w.c); err != nil {
			return err
		}
		before := st.Pending
		if st, err = w.r.Status(ctx); err != nil {
			return err
		}
		if done != nil && before > st.Pending {
			done(before - st.Pending)
		}
	}
	return nil
}

func (w *replicaWriter) CatchUp(ctx context.Context) error {
	_, err := w.r.Pull(ctx, w.c)
	return err
}

func (w *replicaWriter) DB() *sql.DB { return w.db }

func (w *replicaWriter) Close(ctx context.Context) error {
	return errors.Join(w.db.Close(), w.r.Close(ctx))
}
