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

// BehindError says the replica cannot pull because it has local commits
// made on a version older than the server's head: pulling would bury them.
// Push them to have them decided, or pull with reset to drop them.
type BehindError struct {
	Base    uint64 // the version the replica is based on
	Head    uint64 // the server's head
	Pending int    // local commits not yet accepted
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("replica is at version %d, the server at %d, and %d local commit(s) are pending on the old version: push them, or pull --reset to drop them",
		e.Base, e.Head, e.Pending)
}

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
// drops each accepted one from the pending queue. It stops at the first
// rejected commit, which stays pending (with the ones after it) and is the
// last result; an error return means the outcome of the batch in flight is
// unknown, and pushing again is always safe (the server recognises commits
// it already stored).
func (r *Replica) Push(ctx context.Context, c *api.Client) ([]PushResult, error) {
	pending, err := r.Pending(ctx)
	if err != nil {
		return nil, err
	}
	var out []PushResult
	for len(pending) > 0 {
		n, size := 0, 0
		for n < len(pending) && n < MaxPushCommits && (n == 0 || size < MaxPushBytes) {
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
		for i, res := range results {
			pr := PushResult{Seq: batch[i].Seq, Decision: res.Decision, Version: uint64(res.Version), Duplicate: res.Duplicate, Reason: res.Reason, Err: res.Err}
			out = append(out, pr)
			switch res.Decision {
			case commit.FastPath, commit.Merged:
				if err := r.MarkPushed(ctx, pr.Seq, pr.Version); err != nil {
					return out, fmt.Errorf("push: mark commit %d pushed: %w", pr.Seq, err)
				}
			default:
				// Rejected (or a decision this client cannot apply yet):
				// it and everything after it stay pending.
				return out, nil
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
// commits pending it changes nothing: if the server has moved on it returns
// a *BehindError saying what to do, else it reports the replica current.
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
			return st, &BehindError{Base: st.BaseVersion, Head: uint64(v.Head), Pending: st.Pending}
		}
		return st, nil
	}
	pages, h, err := r.fetchChanged(ctx, c, st.BaseVersion)
	if err != nil {
		return st, err
	}
	if uint64(h.Head) == st.BaseVersion {
		return st, nil
	}
	if err := r.ApplyRemote(ctx, uint64(h.Head), h.PageCount, pages); err != nil {
		if errors.Is(err, ErrPendingCommits) {
			// A local transaction committed while we fetched: pull again later.
			return st, fmt.Errorf("pull: a local commit arrived meanwhile: %w", err)
		}
		return st, fmt.Errorf("pull: apply version %d: %w", h.Head, err)
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
	pages, h, err := r.fetchChanged(ctx, c, st.BaseVersion)
	if err != nil {
		return st, err
	}
	var missing []uint32
	for _, no := range touched {
		if _, ok := pages[no]; !ok && no <= h.PageCount {
			missing = append(missing, no)
		}
	}
	for len(missing) > 0 {
		chunk := missing[:min(len(missing), api.DefaultMaxReadPages)]
		missing = missing[len(chunk):]
		if _, err := c.ReadPages(ctx, r.volume, h.Head, chunk, func(p api.StreamedPage) error {
			pages[p.No] = p.Data
			return nil
		}); err != nil {
			return st, fmt.Errorf("pull: read pages at %d: %w", h.Head, err)
		}
		// A page within the page count that no version ever wrote is zeros,
		// as in a file SQLite extended without writing.
		for _, no := range chunk {
			if _, ok := pages[no]; !ok {
				pages[no] = make([]byte, r.pageSize)
			}
		}
	}
	if err := r.Reset(ctx, uint64(h.Head), h.PageCount, pages); err != nil {
		return st, fmt.Errorf("pull: reset to version %d: %w", h.Head, err)
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
