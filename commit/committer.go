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
	DefaultGroupDelay        = 5 * time.Millisecond // measured: 8 clients 440 -> 560 commits/s here
	DefaultQueueLength       = 4096
	DefaultReplayParallelism = 4
	segmentKeyPrefix         = "segments/"
	segmentKeyRandomBytes    = 16
)

// Committer decides hybrid commits and makes the accepted ones durable.
//
// Group commit: Submit queues a client's batch as one unit; each of Workers
// loops takes every unit queued at that moment (up to MaxGroupUnits or
// MaxGroupBytes of pages) as one group — lingering up to GroupDelay for the
// group to reach the size of the group before it, since those clients are
// likely about to send again — then decides every commit under the volumes'
// locks, uploads the accepted pages as one segment, and stores the accepted
// commits in the same metadata transaction. A lone client adds no delay, and
// a loaded server pays one PUT and one transaction per group rather than per
// commit.
//
// Two orderings are preserved:
//   - Durability (invariant 4): a segment is uploaded before any metadata
//     that references it is committed. A crash in between leaves an orphan
//     segment for garbage collection, never a dangling page-index row.
//   - Per volume, commits are decided in the order their volume row's lock is
//     granted; within a unit, in the order the client sent them.
type Committer struct {
	Workers       int           // group-commit loops; must be set before Open
	MaxGroupBytes int           // page bytes per group before it is cut
	MaxGroupUnits int           // batches per group before it is cut
	GroupTimeout  time.Duration // bound on one group's upload and transaction
	GroupDelay    time.Duration // longest wait for a group to reach the last group's size; 0 never waits
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

	meta  pgschema.Metastore
	store pages.Store
	queue chan *unit
	wg    sync.WaitGroup

	lastGroup atomic.Int64 // batches in the group formed last, the linger target
	mu        struct {
		sync.Mutex
		closed bool
	}
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
	for first := range c.queue {
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
		// Linger (as PostgreSQL's commit_delay does): when the last group
		// was larger than this one, its clients are likely about to send
		// their next commits; wait up to GroupDelay for the group to reach
		// that size, so they share this group's upload and transaction. A
		// lone client's groups have size one and never wait.
		if target := int(c.lastGroup.Load()); c.GroupDelay > 0 && len(group) < target && !full() {
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
		c.lastGroup.Store(int64(len(group)))
		c.commitGroup(group)
	}
}

func unitBytes(u *unit) int {
	n := 0
	for _, r := range u.reqs {
		n += len(r.Pages) * r.PageSize
	}
	return n
}

// commitGroup uploads the group's pages, then decides and stores every
// commit in one metadata transaction, then answers each unit.
func (c *Committer) commitGroup(group []*unit) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.GroupTimeout)
	defer cancel()
	err := c.commitGroupErr(ctx, group)
	for _, u := range group {
		if err != nil {
			u.results, u.err = nil, err
		}
		close(u.done)
	}
	if c.Metrics != nil {
		c.Metrics.observeGroup(group, err, time.Since(start))
	}
	if err != nil {
		c.Logger.Warn("commit group failed", zap.Int("units", len(group)), zap.Error(err))
	}
}

// accepted is a commit decided to be stored, waiting for its pages'
// locations: its request and the NewCommit it becomes.
type accepted struct {
	req *Request
	nc  pgschema.NewCommit
}

// commitGroupErr decides, uploads and stores one group. Deciding comes first,
// under the volume locks, so only accepted pages are uploaded and each page
// is filed in the segment under the version it becomes; the upload then
// happens before the transaction that references it commits.
func (c *Committer) commitGroupErr(ctx context.Context, group []*unit) error {
	var key string
	err := c.meta.Update(ctx, func(tx pgschema.Tx) error {
		acc, err := c.decideGroup(ctx, tx, group)
		if err != nil || len(acc) == 0 {
			return err
		}
		if key, err = c.upload(ctx, acc); err != nil {
			return fmt.Errorf("upload segment: %w", err)
		}
		if c.Hooks.AfterUpload != nil {
			c.Hooks.AfterUpload(key)
		}
		ncs := make([]pgschema.NewCommit, len(acc))
		for i := range acc {
			ncs[i] = acc[i].nc
		}
		if err := tx.AppendAll(ctx, ncs); err != nil {
			return fmt.Errorf("append %d commits: %w", len(ncs), err)
		}
		return nil
	})
	if err != nil {
		for _, u := range group {
			u.results = nil
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if c.Hooks.AfterMeta != nil && key != "" {
		c.Hooks.AfterMeta(key)
	}
	return nil
}

// upload writes the pages of the accepted commits into one segment per page
// size (one in practice) and fills in their locations.
func (c *Committer) upload(ctx context.Context, acc []accepted) (string, error) {
	encoders := map[int]*segment.Encoder{}
	for i := range acc {
		a := &acc[i]
		enc := encoders[a.req.PageSize]
		if enc == nil {
			enc = segment.NewEncoder(a.req.PageSize)
			enc.Grow(pagesOfSize(acc, a.req.PageSize))
			encoders[a.req.PageSize] = enc
		}
		for _, p := range a.req.Pages {
			if err := enc.Add(a.nc.Volume, a.nc.Version, p.No, p.Data); err != nil {
				return "", err
			}
		}
	}
	var lastKey string
	for size, enc := range encoders {
		if enc.Len() == 0 {
			continue
		}
		data, entries, err := enc.Finish()
		if err != nil {
			return "", fmt.Errorf("encode segment: %w", err)
		}
		key, err := newSegmentKey()
		if err != nil {
			return "", err
		}
		if err := c.store.Put(ctx, key, data); err != nil {
			return "", err
		}
		n := 0
		for i := range acc {
			a := &acc[i]
			if a.req.PageSize != size {
				continue
			}
			for j := range a.nc.Pages {
				e := entries[n]
				n++
				a.nc.Pages[j].Location = pages.Location{
					Segment: key, FrameOffset: e.FrameOffset, FrameLength: e.FrameLength,
					PageOffset: e.PageOffset, Hash: e.Hash,
				}
			}
		}
		lastKey = key
	}
	return lastKey, nil
}

// pagesOfSize counts the accepted pages of one page size.
func pagesOfSize(acc []accepted, size int) int {
	n := 0
	for _, a := range acc {
		if a.req.PageSize == size {
			n += len(a.req.Pages)
		}
	}
	return n
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
