package commit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/dirstore"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/sqlitestore"
)

const pageSize = 4096

type fixture struct {
	meta  pgschema.Metastore
	store pages.Store
	c     *commit.Committer
}

// newFixture is a committer over the embedded backends: a unit test of the
// decision and group-commit logic. The same paths run against PostgreSQL and
// MinIO in the end-to-end tests.
func newFixture(t *testing.T, configure func(*commit.Committer)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := sqlitestore.Open(ctx, filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := dirstore.Open(filepath.Join(dir, "pages"))
	if err != nil {
		t.Fatal(err)
	}
	c := commit.New(meta, store)
	if configure != nil {
		configure(c)
	}
	c.Open()
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Error(err)
		}
		meta.Close()
	})
	return &fixture{meta: meta, store: store, c: c}
}

func (f *fixture) volume(t *testing.T, name string) pgschema.Volume {
	t.Helper()
	v, err := f.meta.CreateVolume(context.Background(), name, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func page(fill byte) []byte { return bytes.Repeat([]byte{fill}, pageSize) }

func req(client string, seq, parent, base int64, count uint32, nos ...uint32) commit.Request {
	r := commit.Request{ClientID: client, Seq: seq, Parent: parent, Base: base, PageSize: pageSize, PageCount: count}
	for _, no := range nos {
		r.Pages = append(r.Pages, commit.Page{No: no, Data: page(byte(seq*16) + byte(no))})
	}
	return r
}

func (f *fixture) head(t *testing.T, v pgschema.Volume) int64 {
	t.Helper()
	got, err := f.meta.VolumeByID(context.Background(), v.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got.Head
}

// readPage reads page no of snapshot (v, version) back from the page store.
func (f *fixture) readPage(t *testing.T, v pgschema.Volume, no uint32, version int64) []byte {
	t.Helper()
	ctx := context.Background()
	ref, err := f.meta.PageAt(ctx, v.ID, no, version)
	if err != nil {
		t.Fatalf("PageAt(%d, %d): %v", no, version, err)
	}
	b, err := pages.NewReader(f.store, nil, pageSize).ReadPage(ctx, pages.PageKey{Volume: v.ID, PageNo: no, Version: ref.Version}, ref.Location)
	if err != nil {
		t.Fatalf("ReadPage(%d@%d): %v", no, ref.Version, err)
	}
	return b
}

func TestCommitter_Submit(t *testing.T) {
	ctx := context.Background()
	t.Run("FastPathChain", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.volume(t, "chain")
		res, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 2, 1, 2), req("a", 2, 1, 0, 3, 1, 3)})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []int64{1, 2} {
			if res[i].Decision != commit.FastPath || res[i].Version != want {
				t.Fatalf("result %d = %+v, want fast-path at %d", i, res[i], want)
			}
		}
		if got := f.head(t, v); got != 2 {
			t.Fatalf("head = %d, want 2", got)
		}
		if got, want := f.readPage(t, v, 2, 2), page(16+2); !bytes.Equal(got, want) {
			t.Fatalf("page 2 at version 2 differs from what commit 1 wrote")
		}
		if got, want := f.readPage(t, v, 1, 2), page(32+1); !bytes.Equal(got, want) {
			t.Fatalf("page 1 at version 2 differs from what commit 2 wrote")
		}
		if got, want := f.readPage(t, v, 1, 1), page(16+1); !bytes.Equal(got, want) {
			t.Fatalf("page 1 at version 1 differs from what commit 1 wrote")
		}
	})
	t.Run("IdempotentRetry", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.volume(t, "retry")
		batch := []commit.Request{req("a", 1, 0, 0, 1, 1), req("a", 2, 1, 0, 1, 1)}
		first, err := f.c.Submit(ctx, v, batch)
		if err != nil {
			t.Fatal(err)
		}
		again, err := f.c.Submit(ctx, v, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range batch {
			if !again[i].Duplicate || again[i].Version != first[i].Version || again[i].Decision != first[i].Decision {
				t.Fatalf("retry result %d = %+v, want duplicate of %+v", i, again[i], first[i])
			}
		}
		if got := f.head(t, v); got != 2 {
			t.Fatalf("head = %d after retry, want 2", got)
		}
	})
	t.Run("StaleBase", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.volume(t, "stale")
		if _, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		res, err := f.c.Submit(ctx, v, []commit.Request{req("b", 1, 0, 0, 1, 1), req("b", 2, 1, 0, 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		var stale *commit.StaleBaseError
		if res[0].Decision != commit.Rejected || !errors.As(res[0].Err, &stale) || stale.Head != 1 || stale.Base != 0 {
			t.Fatalf("result = %+v, want rejected with StaleBaseError{Base: 0, Head: 1}", res[0])
		}
		var parent *commit.ParentMissingError
		if res[1].Decision != commit.Rejected || !errors.As(res[1].Err, &parent) || parent.Parent != 1 {
			t.Fatalf("child of a rejected commit: %+v, want ParentMissingError", res[1])
		}
		if got := f.head(t, v); got != 1 {
			t.Fatalf("head = %d, want 1: a rejected commit must store nothing", got)
		}
		if _, err := f.meta.Commit(ctx, v.ID, 2); !errors.Is(err, pgschema.ErrCommitNotFound) {
			t.Fatalf("Commit(2) = %v, want ErrCommitNotFound", err)
		}
	})
	t.Run("BaseAhead", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.volume(t, "ahead")
		res, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 5, 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		var ahead *commit.BaseAheadError
		if !errors.As(res[0].Err, &ahead) || ahead.Base != 5 || ahead.Head != 0 {
			t.Fatalf("result = %+v, want BaseAheadError{5, 0}", res[0])
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		f := newFixture(t, nil)
		v := f.volume(t, "invalid")
		short := req("a", 1, 0, 0, 1, 1)
		short.Pages[0].Data = short.Pages[0].Data[:100]
		unordered := req("a", 1, 0, 0, 3, 2, 1)
		cases := map[string]commit.Request{
			"PageZero":          req("a", 1, 0, 0, 1, 0),
			"BeyondPageCount":   req("a", 1, 0, 0, 1, 2),
			"WrongPageSize":     short,
			"Unordered":         unordered,
			"NoClient":          req("", 1, 0, 0, 1, 1),
			"SeqZero":           req("a", 0, 0, 0, 1, 1),
			"ParentNotEarlier":  req("a", 2, 2, 0, 1, 1),
			"DeclaredPageSizes": {ClientID: "a", Seq: 1, PageSize: 512, PageCount: 1},
		}
		for name, r := range cases {
			t.Run(name, func(t *testing.T) {
				_, err := f.c.Submit(ctx, v, []commit.Request{req("a", 9, 0, 0, 1, 1), r})
				var invalid *commit.InvalidCommitError
				if !errors.As(err, &invalid) {
					t.Fatalf("Submit = %v, want *InvalidCommitError", err)
				}
			})
		}
		if got := f.head(t, v); got != 0 {
			t.Fatalf("head = %d, want 0: an invalid batch must store nothing", got)
		}
	})
}

// TestCommitter_GroupCommit holds the first group at its upload so that the
// commits arriving meanwhile queue up, and checks they then share one
// segment and one transaction while each gets its own version.
func TestCommitter_GroupCommit(t *testing.T) {
	ctx := context.Background()
	f, uploads, release := holdFirstGroup(t, 0)
	vols := []pgschema.Volume{f.volume(t, "g1"), f.volume(t, "g2"), f.volume(t, "g3")}
	first := make(chan error, 1)
	go func() {
		_, err := f.c.Submit(ctx, vols[0], []commit.Request{req("first", 1, 0, 0, 1, 1)})
		first <- err
	}()
	// Wait until the first group is inside its upload.
	waitFor(func() bool { return uploads() == 1 })
	var wg sync.WaitGroup
	errs := make(chan error, len(vols))
	// Queue one batch per volume while the first group is held.
	results := make([][]commit.Result, len(vols))
	for i, v := range vols {
		wg.Go(func() {
			var batch []commit.Request
			base := int64(0)
			if i == 0 {
				base = 1
			}
			for s := int64(1); s <= 4; s++ {
				parent := s - 1
				batch = append(batch, req(fmt.Sprintf("c%d", i), s, parent, base, 2, 1, 2))
			}
			res, err := f.c.Submit(ctx, v, batch)
			results[i] = res
			errs <- err
		})
	}
	// Release the first group once all three batches wait in the queue.
	waitFor(func() bool { return f.c.Queued() >= len(vols) })
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, res := range results {
		base := int64(0)
		if i == 0 {
			base = 1
		}
		for j, r := range res {
			if r.Decision != commit.FastPath || r.Version != base+int64(j)+1 {
				t.Fatalf("volume %d commit %d: %+v, want fast-path at %d", i, j, r, base+int64(j)+1)
			}
		}
	}
	if n := uploads(); n != 2 {
		t.Fatalf("%d segments uploaded for 13 commits in two groups, want 2", n)
	}
}

// TestCommitter_Concurrent: writers on distinct volumes and racing writers on
// one volume; versions stay contiguous and nothing is stored twice.
func TestCommitter_Concurrent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	const writers, commits = 4, 25
	var wg sync.WaitGroup
	shared := f.volume(t, "shared")
	for w := range writers {
		own := f.volume(t, fmt.Sprintf("own%d", w))
		wg.Go(func() {
			client := fmt.Sprintf("w%d", w)
			for s := int64(1); s <= commits; s++ {
				res, err := f.c.Submit(ctx, own, []commit.Request{req(client, s, 0, s-1, 1, 1)})
				if err != nil || res[0].Version != s {
					t.Errorf("own volume: %v %+v", err, res)
					return
				}
			}
			// Race on the shared volume: pull the head, commit on it, and on
			// a stale rejection do it again with a new sequence number.
			seq := int64(1000)
			for done := 0; done < commits; {
				v, err := f.meta.VolumeByID(ctx, shared.ID)
				if err != nil {
					t.Error(err)
					return
				}
				seq++
				res, err := f.c.Submit(ctx, v, []commit.Request{req(client, seq, 0, v.Head, 1, 1)})
				if err != nil {
					t.Error(err)
					return
				}
				var stale *commit.StaleBaseError
				switch {
				case res[0].Decision == commit.FastPath:
					done++
				case !errors.As(res[0].Err, &stale):
					t.Errorf("shared volume: %+v", res[0])
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := f.head(t, shared), int64(writers*commits); got != want {
		t.Fatalf("shared head = %d, want %d", got, want)
	}
	cs, err := f.meta.Commits(ctx, shared.ID, 0, writers*commits)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range cs {
		if c.Version != int64(i+1) {
			t.Fatalf("commit %d has version %d", i, c.Version)
		}
		key := fmt.Sprintf("%s/%d", c.ClientID, c.ClientSeq)
		if seen[key] {
			t.Fatalf("%s stored twice", key)
		}
		seen[key] = true
	}
}

// groupHold holds one group at its segment upload (install hook as, or
// from, Hooks.AfterUpload), so that batches submitted meanwhile queue up
// behind it, in order, and form the next group.
type groupHold struct {
	on      atomic.Bool
	holding chan struct{}
	release chan struct{}
}

func newGroupHold() *groupHold {
	return &groupHold{holding: make(chan struct{}), release: make(chan struct{})}
}

func (h *groupHold) hook(string) {
	if h.on.CompareAndSwap(true, false) {
		close(h.holding)
		<-h.release
	}
}

// submitHeld submits reqs to vol and returns once their group is held at
// its upload; the channel gets Submit's error once released.
func (h *groupHold) submitHeld(ctx context.Context, c *commit.Committer, vol pgschema.Volume, reqs []commit.Request) <-chan error {
	h.on.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := c.Submit(ctx, vol, reqs)
		done <- err
	}()
	<-h.holding
	return done
}

// TestCommitter_GroupDecisions puts, in one group, a batch and its retry, a
// batch whose parent was decided earlier in the group, one whose parent was
// stored before it, and one whose parent the group rejected: each is decided
// as it would be alone, from one lookup of the group's keys.
func TestCommitter_GroupDecisions(t *testing.T) {
	ctx := context.Background()
	hold := newGroupHold()
	f := newFixture(t, func(c *commit.Committer) {
		c.Workers = 1
		c.Hooks.AfterUpload = hold.hook
	})
	v, w := f.volume(t, "v"), f.volume(t, "w")
	// Stored before the group: w's version 1, client "p" sequence 1.
	if _, err := f.c.Submit(ctx, w, []commit.Request{req("p", 1, 0, 0, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	// Hold the next group at its upload so that the batches below queue up
	// behind it, in order, and form one group.
	held := hold.submitHeld(ctx, f.c, w, []commit.Request{req("p", 2, 1, 0, 1, 1)})
	batches := []struct {
		vol  pgschema.Volume
		reqs []commit.Request
	}{
		{v, []commit.Request{req("a", 1, 0, 0, 1, 1), req("a", 2, 1, 0, 1, 1)}},
		{v, []commit.Request{req("a", 1, 0, 0, 1, 1), req("a", 2, 1, 0, 1, 1)}}, // the retry
		{v, []commit.Request{req("a", 3, 2, 0, 2, 2)}},                          // parent decided in the group
		{w, []commit.Request{req("p", 3, 2, 1, 1, 1)}},                          // parent stored before the group
		{v, []commit.Request{req("b", 1, 0, 0, 1, 1), req("b", 2, 1, 0, 1, 1)}}, // stale, then its child
	}
	results := make([][]commit.Result, len(batches))
	errs := make(chan error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() {
			res, err := f.c.Submit(ctx, b.vol, b.reqs)
			results[i] = res
			errs <- err
		})
		for f.c.Queued() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	close(hold.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	type want struct {
		decision commit.Decision
		version  int64
		dup      bool
	}
	wants := [][]want{
		{{commit.FastPath, 1, false}, {commit.FastPath, 2, false}},
		{{commit.FastPath, 1, true}, {commit.FastPath, 2, true}},
		{{commit.FastPath, 3, false}},
		{{commit.FastPath, 3, false}},
		{{commit.Rejected, 0, false}, {commit.Rejected, 0, false}},
	}
	for i := range wants {
		for j, wt := range wants[i] {
			r := results[i][j]
			if r.Decision != wt.decision || r.Version != wt.version || r.Duplicate != wt.dup {
				t.Errorf("batch %d commit %d: %+v, want %s at %d, duplicate %v", i, j, r, wt.decision, wt.version, wt.dup)
			}
		}
	}
	var stale *commit.StaleBaseError
	var parent *commit.ParentMissingError
	if !errors.As(results[4][0].Err, &stale) || !errors.As(results[4][1].Err, &parent) {
		t.Errorf("stale batch: %+v, want StaleBaseError then ParentMissingError", results[4])
	}
	if got := f.head(t, v); got != 3 {
		t.Fatalf("head of v = %d, want 3", got)
	}
	if got := f.head(t, w); got != 3 {
		t.Fatalf("head of w = %d, want 3", got)
	}
}

// TestCommitter_Linger: after a group of three, a loop that finds a single
// batch waits (up to GroupDelay, here far longer than the test) for two more
// so the three again share one segment.
func TestCommitter_Linger(t *testing.T) {
	ctx := context.Background()
	f, uploads, release := holdFirstGroup(t, time.Hour)
	vols := []pgschema.Volume{f.volume(t, "l1"), f.volume(t, "l2"), f.volume(t, "l3")}
	submit := func(i int, seq int64, wg *sync.WaitGroup) {
		wg.Go(func() {
			res, err := f.c.Submit(ctx, vols[i], []commit.Request{req(fmt.Sprintf("c%d", i), seq, 0, seq-1, 1, 1)})
			if err != nil || res[0].Decision != commit.FastPath {
				t.Errorf("submit %d/%d: %v %+v", i, seq, err, res)
			}
		})
	}
	// Wave 1: hold a first group at its upload, queue three batches behind
	// it, release: they form one group of three.
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := f.c.Submit(ctx, f.volume(t, "l0"), []commit.Request{req("z", 1, 0, 0, 1, 1)}); err != nil {
			t.Error(err)
		}
	})
	waitFor(func() bool { return uploads() == 1 })
	for i := range vols {
		submit(i, 1, &wg)
	}
	waitFor(func() bool { return f.c.Queued() >= len(vols) })
	release()
	wg.Wait()
	// Wave 2: the three arrive one by one; the loop lingers until all are in.
	for i := range vols {
		submit(i, 2, &wg)
		time.Sleep(5 * time.Millisecond) // spread the arrivals; correctness does not depend on it
	}
	wg.Wait()
	if n := uploads(); n != 3 {
		t.Fatalf("%d segments for a group of one and two groups of three, want 3", n)
	}
}

// holdFirstGroup returns a fixture with one group-commit loop whose first
// group stops inside its upload until release is called, so that batches
// submitted meanwhile queue up; uploads counts the segments uploaded.
func holdFirstGroup(t *testing.T, delay time.Duration) (f *fixture, uploads func() int, release func()) {
	held := make(chan struct{})
	var once, releaseOnce sync.Once
	var mu sync.Mutex
	n := 0
	f = newFixture(t, func(c *commit.Committer) {
		c.Workers = 1
		c.GroupDelay = delay
		c.Hooks.AfterUpload = func(string) {
			mu.Lock()
			n++
			mu.Unlock()
			once.Do(func() { <-held })
		}
	})
	uploads = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	release = func() { releaseOnce.Do(func() { close(held) }) }
	t.Cleanup(release)
	return f, uploads, release
}

// waitFor polls cond until it holds: for states the test itself brings
// about, so it never waits long.
func waitFor(cond func() bool) {
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}
