package commit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/conflict"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/replay"
)

// Proposal is a decision on a stale commit that the server is about to
// make, shown to the application's Resolver before anything is stored.
type Proposal struct {
	Volume   pgschema.Volume
	Request  *Request
	Base     int64            // the commit's effective base
	Head     int64            // the head it would go on top of
	Decision Decision         // Merged, Replayed or Rejected
	Conflict *conflict.Report // what changed under it; nil when detection did not run
	Err      error            // for Rejected: the typed reason
}

// Verdict is a Resolver's answer. The zero Verdict keeps the proposal.
type Verdict struct {
	Reject bool   // reject the commit with Reason (a *ResolverError)
	Replay bool   // replay instead of merging (ignored unless the proposal is Merged)
	Reason string // why, for the client
}

// Resolver lets an application that embeds the server override decisions on
// stale commits (DESIGN.md, policies): it may reject a merge or a replay, or
// ask for a replay instead of a merge. It runs under the volume's lock, so
// it must be quick and must not call back into the server.
type Resolver func(ctx context.Context, p *Proposal) Verdict

// Replayer re-executes a logical record on a snapshot (package replay's
// Engine). A *replay.RejectError means the record failed on that snapshot;
// any other error means it could not be tried.
type Replayer interface {
	Replay(ctx context.Context, in replay.Input) (*replay.Output, error)
}

// stale decides a commit whose effective base is behind the head (steps 4-6
// of the commit protocol): merged when nothing it read or wrote changed,
// else replayed from its record, else rejected. mustReplay, when not empty,
// says why merging is out of the question.
func (d *volumeDecider) stale(ctx context.Context, r *Request, base int64, mustReplay string) (Result, *accepted, error) {
	reject := func(err error) (Result, *accepted, error) {
		return Result{Seq: r.Seq, Decision: Rejected, Reason: err.Error(), Err: err}, nil, nil
	}
	policy := d.vol.Policy
	if policy == pgschema.PolicyStrict || d.c.Pages == nil && d.c.Replayer == nil {
		// Strict, or a committer without conflict resolution: the client
		// must pull and redo the commit.
		return reject(&StaleBaseError{Seq: r.Seq, Base: base, Head: d.head})
	}
	prop := &Proposal{Volume: d.vol, Request: r, Base: base, Head: d.head}

	// 4. Merge: the client's pages are still exactly right on head.
	why := mustReplay
	if why == "" && policy == pgschema.PolicyNoMerge {
		why = "the volume's policy is no-merge"
	}
	if why == "" && d.c.Pages != nil && len(r.Record) > 0 && d.c.Replayer != nil && d.conflictsInGroup(r, base) {
		// Known without a query: a commit of this group wrote a page it
		// read or wrote (on a hot row, most stale commits).
		d.c.merges.note(d.vol.ID, false)
		why = fmt.Sprintf("a commit in versions %d..%d wrote a page it read or wrote", base+1, d.head)
	}
	if why == "" && d.c.Pages != nil && len(r.Record) > 0 && d.c.Replayer != nil && !d.c.merges.worthTrying(d.vol.ID) {
		why = "recent stale commits of this volume all conflicted; replayed without a merge check"
	}
	if why == "" && d.c.Pages != nil {
		rep, err := d.detect(ctx, r, base)
		if err != nil {
			return Result{}, nil, err
		}
		d.c.merges.note(d.vol.ID, rep.Mergeable())
		prop.Conflict = rep
		if rep.Mergeable() {
			prop.Decision = Merged
			v := d.resolve(ctx, prop)
			switch {
			case v.Reject:
				return reject(&ResolverError{Seq: r.Seq, Reason: v.Reason})
			case !v.Replay:
				merged := *r
				merged.PageCount = rep.Merge.PageCount
				merged.Pages = mergedPages(r.Pages, rep.Merge.Page1)
				reason := fmt.Sprintf("nothing it read or wrote changed in versions %d..%d", base+1, d.head)
				return Result{Seq: r.Seq, Decision: Merged, Version: d.head + 1, Reason: reason},
					d.newCommit(r, base, Merged, reason, &merged), nil
			default:
				why = "the application asked for a replay: " + v.Reason
			}
		} else {
			why = rep.Reason()
		}
	} else if why == "" {
		why = fmt.Sprintf("versions %d..%d may have changed what it read", base+1, d.head)
	}

	// 5. Replay the record on head.
	if len(r.Record) == 0 || d.c.Replayer == nil {
		// The client gets only this reason to go on: name the tables. (Not
		// for replays: it costs page reads under the volume's lock.)
		if prop.Conflict != nil && !prop.Conflict.Mergeable() {
			d.nameTables(ctx, prop.Conflict)
			why = prop.Conflict.Reason()
		}
		return reject(&ConflictError{Seq: r.Seq, Base: base, Head: d.head, Reason: why + "; it has no logical record to replay"})
	}
	started := time.Now()
	out, err := d.replay(ctx, r)
	var rej *replay.RejectError
	switch {
	case errors.As(err, &rej):
		d.c.Metrics.observeReplay("rejected", time.Since(started))
		prop.Decision, prop.Err = Rejected, &ReplayError{Seq: r.Seq, Kind: string(rej.Code), Reason: rej.Reason}
		if v := d.resolve(ctx, prop); v.Reject {
			return reject(&ResolverError{Seq: r.Seq, Reason: v.Reason})
		}
		return reject(prop.Err)
	case err != nil:
		d.c.Metrics.observeReplay("error", time.Since(started))
		return Result{}, nil, fmt.Errorf("replay commit %d of %s: %w", r.Seq, r.ClientID, err)
	}
	d.c.Metrics.observeReplay("replayed", time.Since(started))
	prop.Decision = Replayed
	if v := d.resolve(ctx, prop); v.Reject {
		return reject(&ResolverError{Seq: r.Seq, Reason: v.Reason})
	}
	replayed := *r
	replayed.PageCount = out.PageCount
	replayed.Pages = make([]Page, 0, len(out.Pages))
	for _, no := range sortedPageNos(out.Pages) {
		replayed.Pages = append(replayed.Pages, Page{No: no, Data: out.Pages[no]})
	}
	reason := "replayed on head: " + why
	return Result{Seq: r.Seq, Decision: Replayed, Version: d.head + 1, Reason: reason},
		d.newCommit(r, base, Replayed, reason, &replayed), nil
}

func (d *volumeDecider) resolve(ctx context.Context, p *Proposal) Verdict {
	if d.c.Resolver == nil {
		return Verdict{}
	}
	return d.c.Resolver(ctx, p)
}

// detect runs conflict detection for r against versions base+1..head.
func (d *volumeDecider) detect(ctx context.Context, r *Request, base int64) (*conflict.Report, error) {
	snap := d.snapshot()
	changed, err := snap.changedSince(ctx, base)
	if err != nil {
		return nil, err
	}
	in := d.input(r, base, changed)
	if conflict.Overlaps(in) {
		// It cannot merge whatever page 1 says: page 1's stored copies
		// are not read (on a hot row, most of the cost of finding out).
		in.Page1Unread = true
		return conflict.Detect(in), nil
	}
	if in.BaseCount, in.BasePage1, err = snap.page1At(ctx, base); err != nil {
		return nil, err
	}
	if _, in.HeadPage1, err = snap.page1At(ctx, d.head); err != nil {
		return nil, err
	}
	return conflict.Detect(in), nil
}

// conflictsInGroup reports whether a commit this group accepted on the
// volume after r's base wrote a page (page 1 aside) that r read or wrote:
// then r cannot merge (conflict.Overlaps), and finding out needs no query
// of the page index.
func (d *volumeDecider) conflictsInGroup(r *Request, base int64) bool {
	var changed []conflict.Change
	for _, a := range d.acc {
		if a.nc.Version > base {
			for _, p := range a.req.Pages {
				changed = append(changed, conflict.Change{Page: p.No, Version: a.nc.Version})
			}
		}
	}
	return len(changed) > 0 && conflict.Overlaps(d.input(r, base, changed))
}

// input is the conflict.Input of r against changed, without page 1's
// stored copies.
func (d *volumeDecider) input(r *Request, base int64, changed []conflict.Change) conflict.Input {
	in := conflict.Input{
		Base: base, Head: d.head,
		Changed:     changed,
		ReadSet:     make([]conflict.Range, len(r.ReadSet)),
		Written:     make([]uint32, len(r.Pages)),
		HeadCount:   d.count,
		ClientCount: r.PageCount,
	}
	for i, rg := range r.ReadSet {
		in.ReadSet[i] = conflict.Range{First: rg.First, Count: rg.Count}
	}
	for i, p := range r.Pages {
		in.Written[i] = p.No
		if p.No == 1 {
			in.ClientPage1 = p.Data
		}
	}
	return in
}

// nameTables names the tables and indexes of a report's conflicting pages
// from head's b-trees, for the reason the client reads. It is best effort:
// names cost a few interior-page reads (cached), and a failure leaves the
// pages unnamed.
func (d *volumeDecider) nameTables(ctx context.Context, rep *conflict.Report) {
	if len(rep.Conflicts) == 0 {
		return
	}
	src := d.snapshot().source(ctx, nil)
	read := func(ctx context.Context, pgno uint32) ([]byte, error) {
		p := make([]byte, d.vol.PageSize)
		return p, src.ReadPage(ctx, pgno, p)
	}
	count, _ := src.PageCount(ctx)
	if err := rep.NameTables(ctx, read, d.vol.PageSize, count); err != nil {
		d.c.Logger.Debug("name conflicting tables", zap.Int64("volume", d.vol.ID), zap.Error(err))
	}
}

// replay re-executes r's record on the head snapshot.
func (d *volumeDecider) replay(ctx context.Context, r *Request) (*replay.Output, error) {
	rec, err := replay.DecodeRecord(r.Record)
	if err != nil {
		return nil, &replay.RejectError{Code: replay.CodeRecord, Reason: err.Error()}
	}
	return d.c.Replayer.Replay(ctx, replay.Input{
		Source:   d.snapshot().source(ctx, readSetHint(r.ReadSet)),
		Record:   rec,
		AllowDDL: d.vol.AllowDDL,
		Mutators: &volumeMutators{meta: d.c.meta, volume: d.vol.ID, registry: d.c.Mutators},
	})
}

func (d *volumeDecider) snapshot() *snapshot {
	if d.snap == nil {
		d.snap = newSnapshot(d.c, d.vol)
		for _, a := range d.acc {
			d.snap.push(a.nc.Version, a.nc.PageCount, a.req.Pages)
		}
	}
	return d.snap
}

// mergedPages is the client's pages with page 1 replaced by the merged one.
func mergedPages(ps []Page, page1 []byte) []Page {
	out := make([]Page, 0, len(ps)+1)
	if page1 != nil {
		out = append(out, Page{No: 1, Data: page1})
	}
	for _, p := range ps {
		if p.No != 1 {
			out = append(out, p)
		}
	}
	return out
}

// volumeMutators resolves named mutations for replay: the application's Go
// handlers first, then the volume's SQL mutators.
type volumeMutators struct {
	meta     pgschema.Metastore
	volume   int64
	registry *replay.Registry
}

func (m *volumeMutators) Mutator(ctx context.Context, name string) (replay.Mutator, error) {
	if m.registry != nil {
		mu, err := m.registry.Mutator(ctx, name)
		if err == nil {
			return mu, nil
		}
		if !errors.Is(err, replay.ErrUnknownMutation) {
			return replay.Mutator{}, err
		}
	}
	sm, err := m.meta.Mutator(ctx, m.volume, name)
	if errors.Is(err, pgschema.ErrMutatorNotFound) {
		return replay.Mutator{}, &replay.UnknownMutationError{Name: name}
	}
	if err != nil {
		return replay.Mutator{}, err
	}
	return replay.Mutator{Name: sm.Name, SQL: sm.SQL}, nil
}

func sortedPageNos(m map[uint32][]byte) []uint32 {
	out := make([]uint32, 0, len(m))
	for no := range m {
		out = append(out, no)
	}
	slices.Sort(out)
	return out
}

// readSetHint expands the first pages of a read set, the pages a replay of
// the commit will most likely read again.
func readSetHint(rs []PageRange) []uint32 {
	var out []uint32
	for _, r := range rs {
		for p := r.First; p <= r.Last() && len(out) < maxHint; p++ {
			out = append(out, p)
			if p == r.Last() {
				break // r.Last() may be the largest uint32
			}
		}
	}
	return out
}

// mergeOdds skips the merge check (a page-index query and page reads under
// the volume's lock) for volumes whose stale commits keep conflicting — a
// hot row, where every stale commit ends in a replay anyway — and probes
// again now and then, backing off exponentially while the checks keep
// failing: after n conflicts in a row (n >= mergeStreak), it checks one
// stale commit in min(2^(n/mergeStreak), maxMergeSkip+1). One merge resets
// it. A replay where a merge was possible costs time, never correctness.
type mergeOdds struct {
	mu    sync.Mutex
	state map[int64]*mergeState
}

type mergeState struct {
	conflicts int // merge checks in a row that found a conflict
	skipped   int // stale commits replayed unchecked since the last check
}

const (
	mergeStreak  = 8  // conflicts in a row before checks are skipped
	maxMergeSkip = 63 // the most stale commits replayed between two checks
)

// worthTrying reports whether the next stale commit of volume should be
// checked for a merge.
func (m *mergeOdds) worthTrying(volume int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[volume]
	if st == nil || st.conflicts < mergeStreak {
		return true
	}
	if st.skipped >= min(1<<min(st.conflicts/mergeStreak, 6)-1, maxMergeSkip) {
		st.skipped = 0
		return true
	}
	st.skipped++
	return false
}

// note records the outcome of a merge check.
func (m *mergeOdds) note(volume int64, merged bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		m.state = map[int64]*mergeState{}
	}
	st := m.state[volume]
	if st == nil {
		st = &mergeState{}
		m.state[volume] = st
	}
	if merged {
		st.conflicts = 0
		return
	}
	st.conflicts++
}
