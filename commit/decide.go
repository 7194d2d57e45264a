package commit

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/cambiumdb/cambium/pgschema"
)

// seqKey is a commit's idempotency key.
type seqKey = pgschema.CommitKey

// decideGroup runs under the metadata transaction: it locks the group's
// volumes in ascending id order and decides each commit in order, filling
// each unit's results. It returns the commits to store, in version order per
// volume, without their pages' locations.
//
// Fast-path decisions cost two queries however large the group: one
// LockVolumes, and one LookupCommits for every request's idempotency key
// and every parent's. Nothing is appended until every commit is decided, so
// that one lookup sees exactly what a lookup per commit would have seen.
// Stale commits read the page index and pages (merge) or replay their
// records; those run per volume, volumes in parallel, since everything they
// read up to the locked head is committed and immutable.
func (c *Committer) decideGroup(ctx context.Context, tx pgschema.Tx, group []*unit) ([]accepted, error) {
	var ids []int64
	var keys []seqKey
	for _, u := range group {
		ids = append(ids, u.vol.ID)
		for i := range u.reqs {
			r := &u.reqs[i]
			keys = append(keys, seqKey{Volume: u.vol.ID, ClientID: r.ClientID, Seq: r.Seq})
			if r.Parent != 0 {
				keys = append(keys, seqKey{Volume: u.vol.ID, ClientID: r.ClientID, Seq: r.Parent})
			}
		}
	}
	vols, err := tx.LockVolumes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("lock volumes: %w", err)
	}
	for _, v := range vols {
		c.heads.note(v.ID, v.Head, v.Policy)
	}
	found, err := tx.LookupCommits(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("look up commits: %w", err)
	}
	stored := make(map[seqKey]pgschema.Commit, len(found))
	for _, sc := range found {
		stored[seqKey{Volume: sc.Volume, ClientID: sc.ClientID, Seq: sc.ClientSeq}] = sc
	}

	// One decider per volume, holding the volume as locked (head, policy)
	// and what this group has accepted for it so far.
	received := time.Now()
	deciders := make(map[int64]*volumeDecider, len(vols))
	for _, v := range vols {
		deciders[v.ID] = &volumeDecider{c: c, vol: v, head: v.Head, count: v.PageCount,
			stored: stored, decided: map[seqKey]Result{}, received: received}
	}
	for _, u := range group {
		d := deciders[u.vol.ID]
		d.units = append(d.units, u)
		for i := range u.reqs {
			if r := &u.reqs[i]; r.Base < d.vol.Head || r.Parent != 0 {
				d.maybeStale = true
			}
		}
	}
	// Volumes whose commits are all at head are decided in place; the
	// others may read pages or replay, which is worth a goroutine each.
	var slow []*volumeDecider
	for _, v := range vols {
		d := deciders[v.ID]
		if d.maybeStale {
			slow = append(slow, d)
			continue
		}
		if err := d.decideUnits(ctx); err != nil {
			return nil, err
		}
	}
	switch len(slow) {
	case 0:
	case 1:
		if err := slow[0].decideUnits(ctx); err != nil {
			return nil, err
		}
	default:
		p := pool.New().WithErrors().WithContext(ctx).WithMaxGoroutines(c.replayParallelism())
		for _, d := range slow {
			p.Go(d.decideUnits)
		}
		if err := p.Wait(); err != nil {
			return nil, err
		}
	}

	// Per volume in version order; volumes in ascending id order.
	var acc []accepted
	sort.Slice(vols, func(i, j int) bool { return vols[i].ID < vols[j].ID })
	for _, v := range vols {
		acc = append(acc, deciders[v.ID].acc...)
	}
	return acc, nil
}

// volumeDecider decides one volume's commits of a group, in order. Its
// state is its own, so deciders of different volumes run in parallel; stored
// is shared and only read.
type volumeDecider struct {
	c          *Committer
	vol        pgschema.Volume // as locked: Head is the stored head
	units      []*unit
	maybeStale bool

	head    int64  // the head counting this group's accepted commits
	count   uint32 // the page count at head
	stored  map[seqKey]pgschema.Commit
	decided map[seqKey]Result // this group's decisions on this volume
	acc     []accepted        // accepted, in version order

	received time.Time
	snap     *snapshot // the volume at head for merge and replay, made on first use
}

func (d *volumeDecider) decideUnits(ctx context.Context) error {
	for _, u := range d.units {
		u.results = make([]Result, len(u.reqs))
		for ri := range u.reqs {
			r := &u.reqs[ri]
			res, a, err := d.decide(ctx, r)
			if err != nil {
				return err
			}
			if a != nil {
				d.accept(*a)
			}
			u.results[ri] = res
			if !res.Duplicate {
				d.decided[seqKey{Volume: d.vol.ID, ClientID: r.ClientID, Seq: r.Seq}] = res
			}
		}
	}
	return nil
}

// accept records an accepted commit as the volume's new head.
func (d *volumeDecider) accept(a accepted) {
	d.acc = append(d.acc, a)
	d.head, d.count = a.nc.Version, a.nc.PageCount
	if d.snap != nil {
		d.snap.push(a.nc.Version, a.nc.PageCount, a.req.Pages)
	}
}

// decide decides one commit (DESIGN.md, the commit protocol, steps 1-6)
// against the commits stored before the group (stored, holding at least
// every key of the group and of its parents) and the group's decisions so
// far. An accepted commit comes back as the commit to append; a rejection is
// a Result. An error means the group cannot be decided now (the page store
// or metastore failed).
func (d *volumeDecider) decide(ctx context.Context, r *Request) (Result, *accepted, error) {
	reject := func(err error) (Result, *accepted, error) {
		return Result{Seq: r.Seq, Decision: Rejected, Reason: err.Error(), Err: err}, nil, nil
	}

	// 1. An idempotent retry gets the stored decision, never a second version.
	// A retry of a batch whose first attempt is still in this group is found
	// in decided (same unit) or, once committed, in the commit log.
	key := seqKey{Volume: d.vol.ID, ClientID: r.ClientID, Seq: r.Seq}
	if res, ok := d.decided[key]; ok && res.Decision != Rejected {
		res.Duplicate = true
		return res, nil, nil
	}
	if prev, ok := d.stored[key]; ok {
		return Result{Seq: r.Seq, Decision: Decision(prev.Decision), Version: prev.Version, Reason: prev.Reason, Duplicate: true}, nil, nil
	}

	// The effective base of a commit made on top of an unacknowledged one is
	// the version its parent became — when the parent became exactly what
	// the client had (fast-path). A parent merged, replayed or rejected
	// means this commit's pages were computed on a state the server never
	// had: only its record can carry it over.
	base := r.Base
	mustReplay := ""
	if r.Parent != 0 {
		pv, pd, ok := d.parent(r)
		switch {
		case !ok:
			return reject(&ParentMissingError{Seq: r.Seq, Parent: r.Parent})
		case pd == FastPath:
			base = pv
		case pd == Rejected && d.c.Replayer == nil:
			return reject(&ParentMissingError{Seq: r.Seq, Parent: r.Parent})
		default:
			mustReplay = fmt.Sprintf("its parent commit %d was %s", r.Parent, pd)
		}
	}

	if d.c.ReplayAll && len(r.Record) > 0 && mustReplay == "" {
		mustReplay = "the server replays every commit (ReplayAll)"
	}

	// 2-3. A base the server never had is an error; base == head is the fast path.
	switch {
	case base > d.head:
		return reject(&BaseAheadError{Seq: r.Seq, Base: base, Head: d.head})
	case base == d.head && mustReplay == "":
		return Result{Seq: r.Seq, Decision: FastPath, Version: d.head + 1}, d.newCommit(r, base, FastPath, "", r), nil
	}
	return d.stale(ctx, r, base, mustReplay)
}

// parent finds the version and decision of r's parent, decided earlier in
// this group or stored before it. A parent never stored is not found.
func (d *volumeDecider) parent(r *Request) (int64, Decision, bool) {
	key := seqKey{Volume: d.vol.ID, ClientID: r.ClientID, Seq: r.Parent}
	if res, ok := d.decided[key]; ok {
		return res.Version, res.Decision, true
	}
	p, ok := d.stored[key]
	return p.Version, Decision(p.Decision), ok
}

// newCommit makes the accepted commit of r: stored as the next version with
// the pages of as (r itself, or r with the pages merge or replay produced).
func (d *volumeDecider) newCommit(r *Request, base int64, dec Decision, reason string, as *Request) *accepted {
	nc := pgschema.NewCommit{
		Volume: d.vol.ID, Version: d.head + 1, Base: base,
		ClientID: r.ClientID, ClientSeq: r.Seq,
		Decision: pgschema.Decision(dec), Reason: reason, PageCount: as.PageCount,
		Pages: make([]pgschema.PageWrite, len(as.Pages)), Record: r.Record,
		Checksum: checksumBytes(r.Checksum), ReceivedAt: d.received,
	}
	for i, p := range as.Pages {
		nc.Pages[i].PageNo = p.No
	}
	return &accepted{req: as, nc: nc}
}

func (c *Committer) replayParallelism() int {
	if c.ReplayParallelism > 0 {
		return c.ReplayParallelism
	}
	return DefaultReplayParallelism
}
