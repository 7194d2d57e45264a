package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
)

// Limits on one push request; a longer queue of pending commits goes in
// several requests, in order.
const (
	MaxPushCommits = 512
	MaxPushBytes   = 16 << 20
)

// PushResult is the server's decision on one pending commit.
type PushResult struct {
	Seq       uint64
	Decision  commit.Decision
	Version   uint64 // the version it became; 0 when rejected
	Duplicate bool   // the server had stored it already: an earlier push's answer was lost
	Reason    string
	Err       error // when rejected: the typed reason, e.g. *commit.StaleBaseError
}

// Push sends the pending commits to the server in order, in batches, and
// reports the server's decision on each (also to Options.OnDecision).
//
// While the server takes them as they are (fast-path), each is dropped
// from the pending queue and the replica advances with it. At the first
// batch where it does not — a commit merged on top of others' work,
// replayed on head, or rejected — the replica rebases: it goes to the
// server's head and re-runs the commits still pending there from their
// logical records. A commit rejected because its base was stale (the
// volume's policy is strict) is one of those: it is re-run on head and
// stays pending for the next Push. Any other rejected commit is dropped,
// its reason kept (Rejected). Push returns after that batch, so a caller
// that wants everything sent pushes until Status reports nothing pending.
//
// An error return means the outcome of the batch in flight is unknown, and
// pushing again is always safe (the server recognises commits it stored).
func (r *Replica) Push(ctx context.Context, c *api.Client) ([]PushResult, error) {
	pending, err := r.Pending(ctx)
	if err != nil {
		return nil, err
	}
	var out []PushResult
	for len(pending) > 0 {
		n, size := 0, 0
		for n < len(pending) && n < r.pushBatch() && (n == 0 || size < MaxPushBytes) {
			size += len(pending[n].Pages) * r.pageSize
			n++
		}
		batch := pending[:n]
		pending = pending[n:]
		reqs := make([]commit.Request, len(batch))
		for i, p := range batch {
			reqs[i] = r.request(p, batch, i)
		}
		results, err := c.Push(ctx, r.volume, reqs)
		if err != nil {
			return out, fmt.Errorf("push: %w", err)
		}
		answered := make(map[uint64]PushResult, len(results))
		diverged := false
		var pushed []uint64 // the leading fast-path commits, marked pushed together
		var pushedAt uint64
		for i, res := range results {
			pr := PushResult{Seq: batch[i].Seq, Decision: res.Decision, Version: uint64(res.Version), Duplicate: res.Duplicate, Reason: res.Reason, Err: res.Err}
			out = append(out, pr)
			answered[pr.Seq] = pr
			if r.opts.OnDecision != nil {
				r.opts.OnDecision(pr)
			}
			switch {
			case res.Decision == commit.FastPath && !diverged:
				pushed = append(pushed, pr.Seq)
				pushedAt = pr.Version
			default:
				// Merged or replayed (stored, but not as the pages this
				// replica has) or rejected: its state and the server's part
				// here, and the rebase sorts out each commit's fate.
				diverged = true
			}
		}
		if err := r.MarkPushedRun(ctx, pushed, pushedAt); err != nil {
			return out, fmt.Errorf("push: mark commits %v pushed: %w", pushed, err)
		}
		if diverged {
			if err := r.rebase(ctx, c, answered); err != nil {
				return out, fmt.Errorf("push: %w", err)
			}
			return out, nil
		}
		// The whole batch went fast-path: the commits still to send are now
		// based on the version its last one became (MarkPushed rebased their
		// rows; these copies were read before).
		if n := len(out); n > 0 {
			for i := range pending {
				pending[i].BaseVersion = out[n-1].Version
			}
		}
	}
	return out, nil
}

// request turns pending commit p (batch[i]) into a commit request: the
// first of the batch is based on its server version; each later one is made
// on top of the one before it, which the server has not acknowledged.
func (r *Replica) request(p PendingCommit, batch []PendingCommit, i int) commit.Request {
	req := commit.Request{
		ClientID: r.clientID, Seq: int64(p.Seq), Base: int64(p.BaseVersion),
		PageSize: r.pageSize, PageCount: p.PageCount, ReadSet: commit.RangesOf(p.ReadSet),
	}
	if i > 0 {
		req.Parent = int64(batch[i-1].Seq)
		req.Base = int64(batch[0].BaseVersion)
	}
	nos := make([]uint32, 0, len(p.Pages))
	for no := range p.Pages {
		if no <= p.PageCount {
			nos = append(nos, no)
		}
	}
	slices.Sort(nos)
	for _, no := range nos {
		req.Pages = append(req.Pages, commit.Page{No: no, Data: p.Pages[no]})
	}
	if p.Record != nil {
		req.Record = p.Record.Encode()
	}
	return req
}

// Pull brings the replica to the server's head, fetching each page changed
// since the replica's version once and applying them atomically. With local
// commits pending and the server moved on, it rebases: the replica goes to
// head and re-runs its pending transactions there from their logical
// records (a commit the server stored meanwhile, from a push whose answer
// was lost, is not re-run), so the application sees head plus its own
// pending work.
func (r *Replica) Pull(ctx context.Context, c *api.Client) (Status, error) {
	st, err := r.Status(ctx)
	if err != nil {
		return st, err
	}
	if st.Pending > 0 {
		v, err := c.Volume(ctx, r.volume)
		if err != nil {
			return st, fmt.Errorf("pull: %w", err)
		}
		if uint64(v.Head) > st.BaseVersion {
			if err := r.rebase(ctx, c, nil); err != nil {
				return st, fmt.Errorf("pull: %w", err)
			}
		}
		return r.Status(ctx)
	}
	rs, err := r.fetchAt(ctx, c, nil)
	if err != nil {
		return st, err
	}
	if rs.version == st.BaseVersion {
		return st, nil
	}
	if err := r.remote(ctx, rs, false); err != nil {
		if errors.Is(err, ErrPendingCommits) {
			// A local transaction committed while we fetched: pull again later.
			return st, fmt.Errorf("pull: a local commit arrived meanwhile: %w", err)
		}
		return st, fmt.Errorf("pull: apply version %d: %w", rs.version, err)
	}
	return r.Status(ctx)
}

// PullReset drops every pending local commit and brings the replica to the
// server's head: it fetches the pages changed since the replica's version
// and, at the same head, every page the dropped commits had written, and
// applies them all atomically.
func (r *Replica) PullReset(ctx context.Context, c *api.Client) (Status, error) {
	st, err := r.Status(ctx)
	if err != nil {
		return st, err
	}
	touched, err := r.PendingPageNumbers(ctx)
	if err != nil {
		return st, err
	}
	rs, err := r.fetchAt(ctx, c, touched)
	if err != nil {
		return st, err
	}
	if err := r.remote(ctx, rs, true); err != nil {
		return st, fmt.Errorf("pull: reset to version %d: %w", rs.version, err)
	}
	return r.Status(ctx)
}

// fetchChanged fetches every page changed since version from, each once,
// with the head and page count the server reached.
func (r *Replica) fetchChanged(ctx context.Context, c *api.Client, from uint64) (map[uint32][]byte, api.PageStreamHeader, error) {
	pages := map[uint32][]byte{}
	h, err := c.Pull(ctx, r.volume, int64(from), func(p api.StreamedPage) error {
		pages[p.No] = p.Data
		return nil
	})
	if err != nil {
		return nil, h, fmt.Errorf("pull: %w", err)
	}
	return pages, h, nil
}

func (r *Replica) pushBatch() int {
	if r.opts.PushBatch > 0 {
		return min(r.opts.PushBatch, MaxPushCommits)
	}
	return MaxPushCommits
}
