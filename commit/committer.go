package commit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/segment"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/replay"
)

// Defaults for the Committer's options.
const (
	DefaultWorkers           = 2
	DefaultMaxGroupBytes     = 16 << 20
	DefaultMaxGroupUnits     = 512
	DefaultGroupTimeout      = 30 * time.Second
	DefaultGroupDelay        = 5 * time.Millisecond // with the in-flight-aware target, 2, 5 and 10 ms measured alike for 8 clients
	DefaultQueueLength       = 4096
	DefaultReplayParallelism = 4
	segmentKeyPrefix         = "segments/"
	segmentKeyRandomBytes    = 16
)

// Committer decides hybrid commits and makes the accepted ones durable.
//
// Group commit: Submit queues a client's batch as one unit. The Workers
// loops take turns gathering: one at a time takes every unit queued (up to
// MaxGroupUnits, or MaxGroupBytes of pages) as a group, lingering up to
// GroupDelay while it is smaller than expected (see nextGroup), and stores
// it while the next loop gathers. Storing a group:
//  1. encodes the pages of the commits that look like fast-path commits
//     into one segment, filed under the versions they are predicted to
//     become (a fast-path commit becomes its base + 1), and starts its upload;
//  2. meanwhile, in one metadata transaction, locks the group's volumes,
//     decides every commit, uploads under the locks the pages of accepted
//     commits the prediction missed (merged, replayed), and appends the
//     accepted commits;
//  3. waits for the upload, then commits.
//
// A lone client adds no delay, and a loaded server pays one PUT and one
// transaction per group rather than per commit, the PUT overlapping the
// transaction's round trips. A segment uploaded ahead that no accepted
// commit uses is deleted once the group is answered.
//
// Two orderings are preserved:
//   - Durability (invariant 4): a segment is uploaded before any metadata
//     that references it is committed. A crash in between leaves an orphan
//     segment for garbage collection, never a dangling page-index row.
//   - Per volume, commits are decided in the order their volume row's lock is
//     granted; within a unit, in the order the client sent them.
type Committer struct {
	Workers       int           // group-commit loops, one gathering while the others store; must be set before Open
	MaxGroupBytes int           // page bytes per group before it is cut
	MaxGroupUnits int           // batches per group before it is cut
	GroupTimeout  time.Duration // bound on one group's upload and transaction
	GroupDelay    time.Duration // longest wait for a group to reach its expected size (see nextGroup); 0 never waits
	Logger        *zap.Logger
	Metrics       *Metrics // optional

	Hooks Hooks // fault seams; must be set before Open

	// Conflict resolution (DESIGN.md, steps 4-6); set before Open. Without
	// Pages no commit merges and without Replayer none is replayed; with
	// neither, a stale commit is rejected with a *StaleBaseError (pull and
	// redo), else one that cannot be resolved with a *ConflictError.
	Pages             PageReader       // reads stored pages for the page-1 rule and replay
	Replayer          Replayer         // re-executes logical records on head
	Mutators          *replay.Registry // the application's Go mutation handlers; may be nil
	Resolver          Resolver         // may override decisions on stale commits; may be nil
	ReplayParallelism int              // volumes decided in parallel when they need pages or replay; DefaultReplayParallelism if 0
	// ReplayAll replays every commit that has a record, at head or not, the
	// way server-reconciliation systems (SQLSync) do: for benchmarks that
	// compare strategies, never for production.
	ReplayAll bool

	// Cache, when set, is given the pages of every commit stored, keyed by
	// the version that wrote them: replays on head, merge checks and pulls
	// of recent versions then read no segment back from the page store.
	Cache PageCache

	merges mergeOdds  // per volume: whether stale commits have lately merged
	heads  knownHeads // per volume: the newest head and policy seen, for uploadAhead

	meta  pgschema.Metastore
	store pages.Store
	queue chan *unit
	wg    sync.WaitGroup

	gather   sync.Mutex   // held by the loop gathering a group
	inFlight atomic.Int64 // units in the groups being stored
	expected atomic.Int64 // the size the next group lingers for (see nextGroup)
	mu       struct {
		sync.Mutex
		closed bool
	}
}

// PageCache holds verified page bytes by key (pages.Cache). A PageKey's
// bytes never change once its commit is stored.
type PageCache interface {
	Add(key pages.PageKey, page []byte)
}

// knownHeads remembers the newest head of each volume this process has
// locked or stored, and its policy as last locked. Heads only grow, so the
// head is a lower bound of the real one whatever other servers do: a
// commit based below it cannot be fast-path.
type knownHeads struct {
	mu sync.Mutex
	m  map[int64]knownHead
}

type knownHead struct {
	head   int64
	policy string // "" until the volume was locked here
}

func (k *knownHeads) note(volume, head int64, policy string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[int64]knownHead{}
	}
	h := k.m[volume]
	h.head = max(h.head, head)
	if policy != "" {
		h.policy = policy
	}
	k.m[volume] = h
}

func (k *knownHeads) get(volume int64) knownHead {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[volume]
}

// Hooks are fault seams for crash tests, called at the named step of each
// group commit that stores something; nil in production.
type Hooks struct {
	AfterUpload func(segmentKey string) // segment uploaded, metadata not committed
	AfterMeta   func(segmentKey string) // metadata committed, no client answered
}

// unit is one client's batch for one volume, decided in order.
type unit struct {
	vol     pgschema.Volume
	reqs    []Request
	results []Result
	err     error
	done    chan struct{}
}

// New returns a Committer over a metastore and a page store. Call Open to
// start it.
func New(meta pgschema.Metastore, store pages.Store) *Committer {
	return &Committer{
		Workers:       DefaultWorkers,
		MaxGroupBytes: DefaultMaxGroupBytes,
		MaxGroupUnits: DefaultMaxGroupUnits,
		GroupTimeout:  DefaultGroupTimeout,
		GroupDelay:    DefaultGroupDelay,
		Logger:        zap.NewNop(),
		meta:          meta,
		store:         store,
	}
}

// Open starts the group-commit loops.
func (c *Committer) Open() {
	c.queue = make(chan *unit, DefaultQueueLength)
	for range c.Workers {
		c.wg.Go(c.loop)
	}
}

// Close stops accepting commits, lets queued groups finish, and waits for
// the loops to end or ctx to expire.
func (c *Committer) Close(ctx context.Context) error {
	c.mu.Lock()
	if !c.mu.closed {
		c.mu.closed = true
		close(c.queue)
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Submit decides a client's batch of commits to one volume, in order, and
// returns one Result per request. A malformed request fails the whole batch
// with an *InvalidCommitError before anything is stored. An error return
// (ErrUnavailable, a context error) means the batch's outcome is unknown or
// nothing was decided; retrying the same batch is always safe, because
// stored commits are recognised by their idempotency key.
func (c *Committer) Submit(ctx context.Context, vol pgschema.Volume, reqs []Request) ([]Result, error) {
	for i := range reqs {
		if err := reqs[i].Validate(vol.PageSize); err != nil {
			return nil, err
		}
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	u := &unit{vol: vol, reqs: reqs, done: make(chan struct{})}
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	select {
	case c.queue <- u:
	default:
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: commit queue full", ErrUnavailable)
	}
	c.mu.Unlock()
	select {
	case <-u.done:
		return u.results, u.err
	case <-ctx.Done():
		// The group goes on: the batch may still be stored, and a retry
		// will find it by its idempotency key.
		return nil, ctx.Err()
	}
}

// Queued returns how many batches wait for a group-commit loop.
func (c *Committer) Queued() int { return len(c.queue) }

func (c *Committer) loop() {
	for {
		// One loop gathers at a time, so that the batches arriving together
		// form one group instead of being split between idle loops; the
		// others meanwhile store the groups they gathered.
		c.gather.Lock()
		group := c.nextGroup()
		c.gather.Unlock()
		if group == nil {
			return
		}
		c.commitGroup(group)
		c.inFlight.Add(-int64(len(group)))
	}
}

// nextGroup gathers the next group: every unit queued now, then, while the
// group is smaller than expected, those arriving within GroupDelay. It
// returns nil once the queue is closed and drained.
//
// Lingering is PostgreSQL's commit_delay, aimed: the expected size is the
// last group's plus the units then in flight in other groups. Their clients
// are likely to send again as soon as they are answered, and waiting for
// them keeps them in one group — one upload and one transaction — where two
// loops would otherwise each take half. A lone client's groups have size one
// and never wait.
func (c *Committer) nextGroup() []*unit {
	first, ok := <-c.queue
	if !ok {
		return nil
	}
	group := []*unit{first}
	size := unitBytes(first)
	full := func() bool { return len(group) >= c.MaxGroupUnits || size >= c.MaxGroupBytes }
fill:
	for !full() {
		select {
		case u, ok := <-c.queue:
			if !ok {
				break fill
			}
			group = append(group, u)
			size += unitBytes(u)
		default:
			break fill
		}
	}
	if target := int(c.expected.Load()); c.GroupDelay > 0 && len(group) < target && !full() {
		timer := time.NewTimer(c.GroupDelay)
	linger:
		for len(group) < target && !full() {
			select {
			case u, ok := <-c.queue:
				if !ok {
					break linger
				}
				group = append(group, u)
				size += unitBytes(u)
			case <-timer.C:
				break linger
			}
		}
		timer.Stop()
	}
	c.expected.Store(int64(len(group)) + c.inFlight.Load())
	c.inFlight.Add(int64(len(group)))
	return group
}

func unitBytes(u *unit) int {
	n := 0
	for _, r := range u.reqs {
		n += len(r.Pages) * r.PageSize
	}
	return n
}

// commitGroup stores one group, then answers each unit.
func (c *Committer) commitGroup(group []*unit) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.GroupTimeout)
	defer cancel()
	up, err := c.commitGroupErr(ctx, group)
	if err != nil {
		for _, u := range group {
			u.results, u.err = nil, err
		}
	}
	// Count the decisions before answering anyone: a client that reads
	// /metrics after its push returned must find its commits there.
	if c.Metrics != nil {
		c.Metrics.observeGroup(group, up, err, time.Since(start))
	}
	for _, u := range group {
		close(u.done)
	}
	if err != nil {
		c.Logger.Warn("commit group failed", zap.Int("units", len(group)), zap.Error(err))
	}
	// No statement ever named these: deleting them cannot leave a page-index
	// row pointing at nothing, whatever became of the transaction.
	for _, key := range up.unused {
		if err := c.store.Delete(ctx, key); err != nil {
			c.Logger.Warn("delete unused segment", zap.String("segment", key), zap.Error(err))
		}
	}
}

// accepted is a commit decided to be stored, waiting for its pages'
// locations: its request and the NewCommit it becomes.
type accepted struct {
	req *Request
	nc  pgschema.NewCommit
}

// uploads says which segments one group uploaded.
type uploads struct {
	ahead  int      // uploaded ahead of the decisions, named by the group's metadata
	locked int      // uploaded under the volume locks, named by the group's metadata
	unused []string // uploaded ahead, named by no statement: to delete
}

// commitGroupErr stores one group. The segment of the commits that look
// like fast-path commits is encoded and its upload started first (see
// uploadAhead); meanwhile one metadata transaction locks the volumes,
// decides every commit, uploads under the locks the pages of accepted
// commits whose version was not predicted (merged, replayed), and appends
// the accepted commits. It commits only once every segment it names is
// uploaded (invariant 4), so the upload costs the group the longer of the
// PUT and the transaction's first round trips rather than their sum.
func (c *Committer) commitGroupErr(ctx context.Context, group []*unit) (up uploads, err error) {
	ahead, err := c.uploadAhead(ctx, group)
	if err != nil {
		return up, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var keys []string     // the segments the transaction names
	var stored []accepted // what it appends
	err = c.meta.Update(ctx, func(tx pgschema.Tx) error {
		stored = nil
		acc, err := c.decideGroup(ctx, tx, group)
		if err != nil || len(acc) == 0 {
			return err
		}
		if rest := ahead.take(acc); len(rest) > 0 {
			if keys, err = c.upload(ctx, acc, rest); err != nil {
				return fmt.Errorf("upload segment: %w", err)
			}
			up.locked = len(keys)
		}
		ncs := make([]pgschema.NewCommit, len(acc))
		for i := range acc {
			ncs[i] = acc[i].nc
		}
		if ahead != nil && ahead.used {
			ahead.named = true
		}
		if err := tx.AppendAll(ctx, ncs); err != nil {
			return fmt.Errorf("append %d commits: %w", len(ncs), err)
		}
		if ahead != nil && ahead.used {
			if err := ahead.wait(); err != nil {
				return fmt.Errorf("upload segment: %w", err)
			}
			keys = append(keys, ahead.keys...)
			up.ahead = len(ahead.keys)
		}
		if c.Hooks.AfterUpload != nil {
			for _, key := range keys {
				c.Hooks.AfterUpload(key)
			}
		}
		stored = acc
		return nil
	})
	if ahead != nil {
		// Never leave the upload running past the group.
		if perr := ahead.wait(); perr == nil && !ahead.named {
			up.unused = ahead.keys
		}
	}
	if err != nil {
		for _, u := range group {
			u.results = nil
		}
		return up, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	c.noteStored(stored)
	if c.Hooks.AfterMeta != nil && len(keys) > 0 {
		c.Hooks.AfterMeta(keys[len(keys)-1])
	}
	return up, nil
}

// noteStored notes the commits a group stored: their volumes' new heads, and
// their pages in the cache. Only now: until the transaction commits, a
// version may still go to another commit.
func (c *Committer) noteStored(acc []accepted) {
	for i := range acc {
		a := &acc[i]
		c.heads.note(a.nc.Volume, a.nc.Version, "")
		if c.Cache == nil {
			continue
		}
		for _, p := range a.req.Pages {
			c.Cache.Add(pages.PageKey{Volume: a.nc.Volume, PageNo: p.No, Version: a.nc.Version}, p.Data)
		}
	}
}

// aheadUpload is a segment of a group's pages filed under predicted
// versions, uploading while the group is decided.
type aheadUpload struct {
	filed map[seqKey]*filing // by idempotency key
	keys  []string
	done  chan struct{} // closed when the upload has ended
	err   error         // the upload's, once done is closed
	used  bool          // an accepted commit took locations in it
	named bool          // AppendAll was given those locations
}

// uploadAhead encodes the pages of the group's commits that look like
// fast-path commits into a segment, filing each under the version it is
// predicted to become, and starts uploading it; nil when it predicted none.
//
// A fast-path commit becomes its effective base + 1 (DESIGN.md, the commit
// protocol, step 3), so the prediction needs no read of the heads and is
// right whenever the decision is fast-path: r.Base + 1 for a commit on its
// own, its parent's predicted version + 1 for one made on top of the commit
// before it in the batch. Other commits are not filed: their parent's
// version is unknown until the group is decided, nor are commits based
// below a head this process has seen (stale whatever happens), nor, under
// ReplayAll, commits with a record. Two commits of the group
// may claim one version of a volume (clients racing, a retry beside its
// first attempt): only the first is filed, as a segment holds a (volume,
// version, page) once, and at most one of them can be fast-path anyway.
func (c *Committer) uploadAhead(ctx context.Context, group []*unit) (*aheadUpload, error) {
	type slot struct{ volume, version int64 }
	claimed := map[slot]bool{}
	contested := c.contested(group)
	var fs []filing
	for _, u := range group {
		if contested[u.vol.ID] {
			continue
		}
		// A commit based below a head already seen is stale: uploading its
		// pages ahead would only cost a PUT and a DELETE.
		floor := max(u.vol.Head, c.heads.get(u.vol.ID).head)
		prev := int64(0) // the predicted version of the batch's previous commit, 0 if none
		for i := range u.reqs {
			r := &u.reqs[i]
			v := int64(0)
			switch {
			case c.ReplayAll && len(r.Record) > 0:
				// Replayed whatever its base: its own pages are never stored.
			case r.Parent == 0 && r.Base >= floor:
				v = r.Base + 1
			case i > 0 && u.reqs[i-1].Seq == r.Parent && prev != 0:
				v = prev + 1
			}
			prev = 0
			if v == 0 || claimed[slot{u.vol.ID, v}] {
				continue
			}
			claimed[slot{u.vol.ID, v}] = true
			prev = v
			fs = append(fs, filing{
				key:    seqKey{Volume: u.vol.ID, ClientID: r.ClientID, Seq: r.Seq},
				volume: u.vol.ID, version: v, pageSize: r.PageSize, pages: r.Pages,
			})
		}
	}
	if len(fs) == 0 {
		return nil, nil
	}
	segs, err := encodeSegments(fs)
	if err != nil {
		return nil, err
	}
	a := &aheadUpload{filed: make(map[seqKey]*filing, len(fs)), done: make(chan struct{})}
	for i := range fs {
		if _, dup := a.filed[fs[i].key]; !dup {
			a.filed[fs[i].key] = &fs[i]
		}
	}
	for _, s := range segs {
		a.keys = append(a.keys, s.key)
	}
	go func() {
		defer close(a.done)
		a.err = c.put(ctx, segs)
	}()
	return a, nil
}

// contested returns the volumes of the group for which an upload ahead
// would only add a PUT: those where the group also holds a commit that
// will be stored from other pages than its own — stale (based below a head
// seen, or racing another of the group for one version) — on a volume
// whose stale commits are merged or replayed rather than rejected. Its
// pages go up in the upload under the lock, and the fast-path commit's can
// go with them at no cost in latency.
func (c *Committer) contested(group []*unit) map[int64]bool {
	if c.Pages == nil && c.Replayer == nil {
		return nil // stale commits are rejected: nothing else is uploaded
	}
	type slot struct{ volume, version int64 }
	claims := map[slot]int{}
	out := map[int64]bool{}
	for _, u := range group {
		k := c.heads.get(u.vol.ID)
		if k.policy == "" || k.policy == pgschema.PolicyStrict {
			continue // unknown here yet, or stale commits rejected
		}
		floor := max(u.vol.Head, k.head)
		for i := range u.reqs {
			r := &u.reqs[i]
			if r.Parent != 0 {
				continue
			}
			claims[slot{u.vol.ID, r.Base + 1}]++
			if r.Base < floor || claims[slot{u.vol.ID, r.Base + 1}] > 1 {
				out[u.vol.ID] = true
			}
		}
	}
	return out
}

// wait waits for the upload to end and returns its error.
func (a *aheadUpload) wait() error {
	<-a.done
	return a.err
}

// take gives each accepted commit that was filed under the version it
// became, and is fast-path (the only decision that stores the client's
// pages as sent), the locations of its pages in the segment, and returns the
// indexes in acc of the others. a may be nil: nothing was filed.
func (a *aheadUpload) take(acc []accepted) (rest []int) {
	for i := range acc {
		nc := &acc[i].nc
		var f *filing
		if a != nil {
			f = a.filed[seqKey{Volume: nc.Volume, ClientID: nc.ClientID, Seq: nc.ClientSeq}]
		}
		if f == nil || nc.Decision != pgschema.FastPath || nc.Version != f.version || !samePages(nc.Pages, f.pages) {
			rest = append(rest, i)
			continue
		}
		for j := range nc.Pages {
			nc.Pages[j].Location = f.locs[j]
		}
		a.used = true
	}
	return rest
}

func samePages(ws []pgschema.PageWrite, ps []Page) bool {
	if len(ws) != len(ps) {
		return false
	}
	for i := range ws {
		if ws[i].PageNo != ps[i].No {
			return false
		}
	}
	return true
}

// upload writes the pages of the accepted commits acc[i], i in which, into
// one segment per page size (one in practice), fills in their locations, and
// returns the segments' keys.
func (c *Committer) upload(ctx context.Context, acc []accepted, which []int) ([]string, error) {
	fs := make([]filing, len(which))
	for k, i := range which {
		a := &acc[i]
		fs[k] = filing{volume: a.nc.Volume, version: a.nc.Version, pageSize: a.req.PageSize, pages: a.req.Pages}
	}
	segs, err := encodeSegments(fs)
	if err != nil {
		return nil, err
	}
	if err := c.put(ctx, segs); err != nil {
		return nil, err
	}
	for k, i := range which {
		nc := &acc[i].nc
		for j := range nc.Pages {
			nc.Pages[j].Location = fs[k].locs[j]
		}
	}
	keys := make([]string, len(segs))
	for i, s := range segs {
		keys[i] = s.key
	}
	return keys, nil
}

// filing is one commit's pages to file in a segment under (volume,
// version), and, once encoded, where each went.
type filing struct {
	key             seqKey
	volume, version int64
	pageSize        int
	pages           []Page
	locs            []pages.Location
}

// encodedSegment is a segment ready to upload.
type encodedSegment struct {
	key  string
	data []byte
}

// encodeSegments encodes the filings' pages into one segment per page size,
// names each segment, and fills in every filing's locations.
func encodeSegments(fs []filing) ([]encodedSegment, error) {
	var sizes []int
	count := map[int]int{}
	for _, f := range fs {
		if _, ok := count[f.pageSize]; !ok {
			sizes = append(sizes, f.pageSize)
		}
		count[f.pageSize] += len(f.pages)
	}
	var segs []encodedSegment
	for _, size := range sizes {
		if count[size] == 0 {
			continue
		}
		enc := segment.NewEncoder(size)
		enc.Grow(count[size])
		for _, f := range fs {
			if f.pageSize != size {
				continue
			}
			for _, p := range f.pages {
				if err := enc.Add(f.volume, f.version, p.No, p.Data); err != nil {
					return nil, fmt.Errorf("encode segment: %w", err)
				}
			}
		}
		data, entries, err := enc.Finish()
		if err != nil {
			return nil, fmt.Errorf("encode segment: %w", err)
		}
		key, err := newSegmentKey()
		if err != nil {
			return nil, err
		}
		n := 0
		for i := range fs {
			f := &fs[i]
			if f.pageSize != size {
				continue
			}
			f.locs = make([]pages.Location, len(f.pages))
			for j := range f.pages {
				e := entries[n]
				n++
				f.locs[j] = pages.Location{
					Segment: key, FrameOffset: e.FrameOffset, FrameLength: e.FrameLength,
					PageOffset: e.PageOffset, Hash: e.Hash,
				}
			}
		}
		segs = append(segs, encodedSegment{key: key, data: data})
	}
	return segs, nil
}

// put uploads the segments, one after another.
func (c *Committer) put(ctx context.Context, segs []encodedSegment) error {
	for _, s := range segs {
		if err := c.store.Put(ctx, s.key, s.data); err != nil {
			return err
		}
	}
	return nil
}

func newSegmentKey() (string, error) {
	b := make([]byte, segmentKeyRandomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("segment key: %w", err)
	}
	return segmentKeyPrefix + hex.EncodeToString(b), nil
}

func checksumBytes(sum uint32) []byte {
	return []byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)}
}
