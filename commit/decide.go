package commit

import (
	"context"
	"fmt"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

// seqKey is a commit's idempotency key.
type seqKey = pgschema.CommitKey

// decideGroup runs under the metadata transaction: it locks the group's
// volumes in ascending id order and decides each commit in order, filling
// each unit's results. It returns the commits to store, in version order per
// volume, without their pages' locations.
//
// It costs two queries however large the group: one LockVolumes, and one
// LookupCommits for every request's idempotency key and every parent's.
// Nothing is appended until every commit is decided, so that one lookup sees
// exactly what a lookup per commit would have seen.
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
	heads := make(map[int64]int64, len(vols))
	for _, v := range vols {
		heads[v.ID] = v.Head
	}
	found, err := tx.LookupCommits(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("look up commits: %w", err)
	}
	stored := make(map[seqKey]pgschema.Commit, len(found))
	for _, sc := range found {
		stored[seqKey{Volume: sc.Volume, ClientID: sc.ClientID, Seq: sc.ClientSeq}] = sc
	}
	received := time.Now()
	var acc []accepted
	// The group's decisions so far: a retry can share a group with its first
	// attempt, and a commit's parent can be decided earlier in the group.
	decided := map[seqKey]Result{}
	for _, u := range group {
		u.results = make([]Result, len(u.reqs))
		for ri := range u.reqs {
			r := &u.reqs[ri]
			res, nc := decide(u.vol, r, heads, stored, decided, received)
			if nc != nil {
				acc = append(acc, accepted{req: r, nc: *nc})
			}
			u.results[ri] = res
			if !res.Duplicate {
				decided[seqKey{Volume: u.vol.ID, ClientID: r.ClientID, Seq: r.Seq}] = res
			}
		}
	}
	return acc, nil
}

// decide decides one commit (DESIGN.md, the commit protocol, steps 1-6)
// against the commits stored before the group (stored, holding at least
// every key of the group and of its parents) and the group's decisions so
// far. An accepted commit comes back as the NewCommit to append, the
// volume's head in heads already advanced past it; a rejection is a Result.
func decide(vol pgschema.Volume, r *Request, heads map[int64]int64, stored map[seqKey]pgschema.Commit,
	decided map[seqKey]Result, received time.Time) (Result, *pgschema.NewCommit) {
	head := heads[vol.ID]
	reject := func(err error) (Result, *pgschema.NewCommit) {
		return Result{Seq: r.Seq, Decision: Rejected, Reason: err.Error(), Err: err}, nil
	}

	// 1. An idempotent retry gets the stored decision, never a second version.
	// A retry of a batch whose first attempt is still in this group is found
	// in decided (same unit) or, once committed, in the commit log.
	key := seqKey{Volume: vol.ID, ClientID: r.ClientID, Seq: r.Seq}
	if res, ok := decided[key]; ok && res.Decision != Rejected {
		res.Duplicate = true
		return res, nil
	}
	if prev, ok := stored[key]; ok {
		return Result{Seq: r.Seq, Decision: Decision(prev.Decision), Version: prev.Version, Reason: prev.Reason, Duplicate: true}, nil
	}

	// The effective base of a commit made on top of an unacknowledged one is
	// the version its parent became.
	base := r.Base
	if r.Parent != 0 {
		parentVersion, ok := parentVersion(vol.ID, r, stored, decided)
		if !ok {
			return reject(&ParentMissingError{Seq: r.Seq, Parent: r.Parent})
		}
		base = parentVersion
	}

	// 2-3. A base the server never had is an error; base == head is the fast path.
	switch {
	case base > head:
		return reject(&BaseAheadError{Seq: r.Seq, Base: base, Head: head})
	case base < head:
		// Merging and replaying stale commits arrive with packages conflict
		// and replay; until then a stale commit is rejected, as Graft does.
		return reject(&StaleBaseError{Seq: r.Seq, Base: base, Head: head})
	}
	nc := &pgschema.NewCommit{
		Volume: vol.ID, Version: head + 1, Base: base,
		ClientID: r.ClientID, ClientSeq: r.Seq,
		Decision: pgschema.FastPath, PageCount: r.PageCount,
		Pages: make([]pgschema.PageWrite, len(r.Pages)), Record: r.Record,
		Checksum: checksumBytes(r.Checksum), ReceivedAt: received,
	}
	for i, p := range r.Pages {
		nc.Pages[i].PageNo = p.No
	}
	heads[vol.ID] = nc.Version
	return Result{Seq: r.Seq, Decision: FastPath, Version: nc.Version}, nc
}

// parentVersion finds the version r's parent became, decided earlier in
// this group or stored before it. A parent that was rejected or never
// arrived is not found.
func parentVersion(volume int64, r *Request, stored map[seqKey]pgschema.Commit, decided map[seqKey]Result) (int64, bool) {
	key := seqKey{Volume: volume, ClientID: r.ClientID, Seq: r.Parent}
	if res, ok := decided[key]; ok {
		return res.Version, res.Decision != Rejected
	}
	p, ok := stored[key]
	return p.Version, ok
}
