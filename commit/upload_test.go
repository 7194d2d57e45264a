package commit_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/dirstore"
	"github.com/cambiumdb/cambium/pages/segment"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/sqlitestore"
	"github.com/cambiumdb/cambium/replay"
)

// countingStore is a page store that records the segments put and deleted
// and can be told to fail puts.
type countingStore struct {
	pages.Store
	mu      sync.Mutex
	puts    []string
	deletes []string
	failPut error
}

func (s *countingStore) Put(ctx context.Context, key string, data []byte) error {
	s.mu.Lock()
	err := s.failPut
	if err == nil {
		s.puts = append(s.puts, key)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Put(ctx, key, data)
}

// Delete records key once it is deleted.
func (s *countingStore) Delete(ctx context.Context, key string) error {
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	s.mu.Lock()
	s.deletes = append(s.deletes, key)
	s.mu.Unlock()
	return nil
}

// counts returns how many segments were put and deleted so far.
func (s *countingStore) counts() (puts, deletes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.puts), len(s.deletes)
}

func (s *countingStore) setFailPut(err error) {
	s.mu.Lock()
	s.failPut = err
	s.mu.Unlock()
}

// heldMeta is a metastore whose first Update waits, before it begins its
// transaction, until held is closed: a group in flight that holds no lock
// (the embedded metastore has one writer, so a group held inside its
// transaction would hold up every other).
type heldMeta struct {
	pgschema.Metastore
	first         atomic.Bool
	holding, held chan struct{}
}

func (m *heldMeta) Update(ctx context.Context, fn func(tx pgschema.Tx) error) error {
	if m.first.CompareAndSwap(false, true) {
		close(m.holding)
		<-m.held
	}
	return m.Metastore.Update(ctx, fn)
}

// newCountingFixture is newFixture over a countingStore, with the metastore
// the committer uses wrapped by wrap if it is not nil.
func newCountingFixture(t *testing.T, wrap func(pgschema.Metastore) pgschema.Metastore, configure func(*commit.Committer)) (*fixture, *countingStore) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := sqlitestore.Open(ctx, filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dirstore.Open(filepath.Join(dir, "pages"))
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: ds}
	var cmeta pgschema.Metastore = meta
	if wrap != nil {
		cmeta = wrap(meta)
	}
	c := commit.New(cmeta, store)
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
	return &fixture{meta: meta, store: store, c: c}, store
}

// mustIndexMatchesSegments checks, for every page of versions 1..head of v,
// that the segment the page index points at files that page under the same
// (volume, page, version): a segment's own index must agree with the
// metastore's, whichever path uploaded it.
func (f *fixture) mustIndexMatchesSegments(t *testing.T, v pgschema.Volume) {
	t.Helper()
	ctx := context.Background()
	head := f.head(t, v)
	cs, err := f.meta.Commits(ctx, v.ID, 0, head)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(cs)) != head {
		t.Fatalf("%d commits stored for head %d", len(cs), head)
	}
	decoded := map[string]*segment.Segment{}
	for _, c := range cs {
		for no := uint32(1); no <= c.PageCount; no++ {
			ref, err := f.meta.PageAt(ctx, v.ID, no, c.Version)
			if err != nil || ref.Version != c.Version {
				continue // page no was not written by this version
			}
			seg := decoded[ref.Segment]
			if seg == nil {
				data, err := f.store.Read(ctx, ref.Segment)
				if err != nil {
					t.Fatalf("read segment of page %d@%d: %v", no, c.Version, err)
				}
				if seg, err = segment.Decode(data); err != nil {
					t.Fatalf("decode segment %s: %v", ref.Segment, err)
				}
				decoded[ref.Segment] = seg
			}
			found := false
			for _, e := range seg.Entries {
				if e.FrameOffset == ref.FrameOffset && e.PageOffset == ref.PageOffset {
					found = true
					if e.Volume != v.ID || e.Version != c.Version || e.PageNo != no {
						t.Fatalf("page %d@%d: segment files it as page %d@%d of volume %d", no, c.Version, e.PageNo, e.Version, e.Volume)
					}
				}
			}
			if !found {
				t.Fatalf("page %d@%d: no entry at its location in %s", no, c.Version, ref.Segment)
			}
		}
	}
}

func TestCommitter_UploadAhead(t *testing.T) {
	ctx := context.Background()
	t.Run("FastPath", func(t *testing.T) {
		// A chain of fast-path commits: one segment, uploaded ahead, whose
		// pages are filed under the versions they became.
		f, store := newCountingFixture(t, nil, nil)
		v := f.volume(t, "v")
		res, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 2, 1, 2), req("a", 2, 1, 0, 3, 1, 3), req("a", 3, 2, 0, 3, 2)})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Decision != commit.FastPath || r.Version != int64(i+1) {
				t.Fatalf("result %d = %+v, want fast-path at %d", i, r, i+1)
			}
		}
		if puts, deletes := store.counts(); puts != 1 || deletes != 0 {
			t.Fatalf("%d segments put, %d deleted, want 1 and 0", puts, deletes)
		}
		f.mustIndexMatchesSegments(t, v)
		if got, want := f.readPage(t, v, 2, 3), page(3*16+2); !bytes.Equal(got, want) {
			t.Fatal("page 2 at version 3 differs from what commit 3 wrote")
		}
	})
	t.Run("NotPredicted", func(t *testing.T) {
		// A commit on top of a parent stored by an earlier request has no
		// predicted version: its pages are uploaded under the lock.
		f, store := newCountingFixture(t, nil, nil)
		v := f.volume(t, "v")
		if _, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		res, err := f.c.Submit(ctx, v, []commit.Request{req("a", 2, 1, 0, 2, 1, 2)})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Decision != commit.FastPath || res[0].Version != 2 {
			t.Fatalf("result = %+v, want fast-path at 2", res[0])
		}
		if puts, deletes := store.counts(); puts != 2 || deletes != 0 {
			t.Fatalf("%d segments put, %d deleted, want 2 and 0", puts, deletes)
		}
		f.mustIndexMatchesSegments(t, v)
	})
	t.Run("KnownStale", func(t *testing.T) {
		// A commit based below a head this committer has seen is stale
		// whatever happens: nothing is uploaded ahead for it.
		f, store := newCountingFixture(t, nil, nil)
		v := f.volume(t, "v")
		if _, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		res, err := f.c.Submit(ctx, v, []commit.Request{req("b", 1, 0, 0, 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Decision != commit.Rejected {
			t.Fatalf("stale commit: %+v, want rejected", res[0])
		}
		if puts, deletes := store.counts(); puts != 1 || deletes != 0 {
			t.Fatalf("%d segments put, %d deleted, want 1 and 0", puts, deletes)
		}
	})
	t.Run("UnusedDeleted", func(t *testing.T) {
		// A stale commit looks like a fast-path one to a server that has
		// not seen the newer head (another server stored it): its segment,
		// uploaded ahead and used by nothing, is deleted.
		f, store := newCountingFixture(t, nil, nil)
		v := f.volume(t, "v")
		other := commit.New(f.meta, f.store)
		other.Open()
		defer other.Close(ctx)
		if _, err := other.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		res, err := f.c.Submit(ctx, v, []commit.Request{req("b", 1, 0, 0, 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Decision != commit.Rejected {
			t.Fatalf("stale commit: %+v, want rejected", res[0])
		}
		// Deleted after the client is answered.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, deletes := store.counts(); deletes == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the unused segment was not deleted")
			}
		}
		store.mu.Lock()
		stale, deleted := store.puts[1], store.deletes[0]
		store.mu.Unlock()
		if deleted != stale {
			t.Fatalf("deleted %s, want the stale commit's segment %s", deleted, stale)
		}
		if _, err := f.store.Read(ctx, stale); !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("Read(unused segment) = %v, want ErrNotFound", err)
		}
		if got := f.head(t, v); got != 1 {
			t.Fatalf("head = %d, want 1", got)
		}
		f.mustIndexMatchesSegments(t, v)
	})
	t.Run("UploadFails", func(t *testing.T) {
		// The transaction has appended the commit when the upload fails:
		// it must roll back, and a retry must then store the commit once.
		f, store := newCountingFixture(t, nil, nil)
		v := f.volume(t, "v")
		store.setFailPut(errors.New("injected: store down"))
		batch := []commit.Request{req("a", 1, 0, 0, 1, 1)}
		if _, err := f.c.Submit(ctx, v, batch); !errors.Is(err, commit.ErrUnavailable) {
			t.Fatalf("Submit with the store down = %v, want ErrUnavailable", err)
		}
		if got := f.head(t, v); got != 0 {
			t.Fatalf("head = %d after a failed upload, want 0", got)
		}
		store.setFailPut(nil)
		res, err := f.c.Submit(ctx, v, batch)
		if err != nil || res[0].Decision != commit.FastPath || res[0].Version != 1 || res[0].Duplicate {
			t.Fatalf("retry = %+v, %v; want fast-path at 1, not a duplicate", res, err)
		}
		f.mustIndexMatchesSegments(t, v)
	})
	t.Run("Hooks", func(t *testing.T) {
		// AfterUpload: every segment the group names is readable and the
		// metadata is not committed. AfterMeta: it is.
		var f *fixture
		var v pgschema.Volume
		var mu sync.Mutex
		var steps []string
		step := func(name, key string, wantHead int64) {
			_, rerr := f.store.Read(ctx, key)
			got, err := f.meta.VolumeByID(ctx, v.ID)
			mu.Lock()
			defer mu.Unlock()
			steps = append(steps, name)
			if rerr != nil || err != nil || got.Head != wantHead {
				t.Errorf("%s(%s): read %v, head %d (%v); want the segment and head %d", name, key, rerr, got.Head, err, wantHead)
			}
		}
		f, _ = newCountingFixture(t, nil, func(c *commit.Committer) {
			c.Hooks.AfterUpload = func(key string) { step("AfterUpload", key, 0) }
			c.Hooks.AfterMeta = func(key string) { step("AfterMeta", key, 1) }
		})
		v = f.volume(t, "v")
		if _, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(steps) != 2 || steps[0] != "AfterUpload" || steps[1] != "AfterMeta" {
			t.Fatalf("hooks ran %v, want [AfterUpload AfterMeta]", steps)
		}
	})
	t.Run("AheadAndLocked", func(t *testing.T) {
		// One group holds a predicted commit and one that is not: two
		// segments, both uploaded before the transaction commits.
		hold := newGroupHold()
		var afterUpload atomic.Int64
		f, store := newCountingFixture(t, nil, func(c *commit.Committer) {
			c.Workers = 1
			c.Hooks.AfterUpload = func(key string) {
				afterUpload.Add(1)
				hold.hook(key)
			}
		})
		x, w, z := f.volume(t, "x"), f.volume(t, "w"), f.volume(t, "z")
		if _, err := f.c.Submit(ctx, w, []commit.Request{req("p", 1, 0, 0, 1, 1)}); err != nil {
			t.Fatal(err)
		}
		// Hold the next group at its upload, so that the two batches below
		// queue up behind it and form one group.
		first := hold.submitHeld(ctx, f.c, z, []commit.Request{req("z", 1, 0, 0, 1, 1)})
		var wg sync.WaitGroup
		for _, b := range []struct {
			vol pgschema.Volume
			r   commit.Request
		}{
			{x, req("a", 1, 0, 0, 2, 1, 2)}, // predicted: version 1 of x
			{w, req("p", 2, 1, 0, 1, 1)},    // parent stored before: not predicted
		} {
			wg.Go(func() {
				res, err := f.c.Submit(ctx, b.vol, []commit.Request{b.r})
				if err != nil || res[0].Decision != commit.FastPath {
					t.Errorf("submit %s/%d: %v %+v", b.r.ClientID, b.r.Seq, err, res)
				}
			})
		}
		waitFor(func() bool { return f.c.Queued() == 2 })
		putsBefore, _ := store.counts()
		hooksBefore := afterUpload.Load()
		close(hold.release)
		wg.Wait()
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		puts, deletes := store.counts()
		if puts-putsBefore != 2 || deletes != 0 {
			t.Fatalf("the mixed group put %d segments and deleted %d, want 2 and 0", puts-putsBefore, deletes)
		}
		if n := afterUpload.Load() - hooksBefore; n != 2 {
			t.Fatalf("AfterUpload ran %d times for the mixed group, want once per segment, 2", n)
		}
		f.mustIndexMatchesSegments(t, x)
		f.mustIndexMatchesSegments(t, w)
	})
}

// TestCommitter_LingerForInFlight: with two loops, the loop gathering while
// another group is being stored lingers for that group's clients too, so
// that clients answered together go on sharing one group instead of being
// split between the loops.
func TestCommitter_LingerForInFlight(t *testing.T) {
	ctx := context.Background()
	hm := &heldMeta{holding: make(chan struct{}), held: make(chan struct{})}
	f, _ := newCountingFixture(t, func(m pgschema.Metastore) pgschema.Metastore {
		hm.Metastore = m
		return hm
	}, func(c *commit.Committer) {
		c.Workers = 2
		c.GroupDelay = time.Hour
	})
	holding := hm.holding
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hm.held) }) }
	t.Cleanup(release) // before the fixture's, which waits for the held group
	v0, v1 := f.volume(t, "v0"), f.volume(t, "v1")
	submit := func(v pgschema.Volume, client string, seq int64) chan error {
		done := make(chan error, 1)
		go func() {
			res, err := f.c.Submit(ctx, v, []commit.Request{req(client, seq, 0, seq-1, 1, 1)})
			if err == nil && res[0].Decision != commit.FastPath {
				err = errors.New(res[0].Reason)
			}
			done <- err
		}()
		return done
	}
	// One loop stores client 0's group and is held there.
	c0 := submit(v0, "c0", 1)
	<-holding
	// The other loop takes client 1's commit alone: nothing else is queued
	// and the last group had one batch.
	if err := <-submit(v1, "c1", 1); err != nil {
		t.Fatal(err)
	}
	// Client 1 again: one batch is still in flight, so the loop waits for a
	// second (GroupDelay is an hour here).
	c1 := submit(v1, "c1", 2)
	select {
	case err := <-c1:
		t.Fatalf("client 1's commit was stored alone (%v) while client 0's was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-c0; err != nil {
		t.Fatal(err)
	}
	// Client 0, answered, sends again and joins client 1's group.
	if err := <-submit(v0, "c0", 2); err != nil {
		t.Fatal(err)
	}
	if err := <-c1; err != nil {
		t.Fatal(err)
	}
	r0, err := f.meta.PageAt(ctx, v0.ID, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := f.meta.PageAt(ctx, v1.ID, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r0.Segment != r1.Segment {
		t.Fatalf("the second commits of both clients are in segments %s and %s, want one group's", r0.Segment, r1.Segment)
	}
}

// TestCommitter_CachesStoredPages: the pages of a stored commit go to the
// page cache under the version they became; a group that fails stores
// nothing and caches nothing, as its versions go to other commits later.
func TestCommitter_CachesStoredPages(t *testing.T) {
	ctx := context.Background()
	cache := pages.NewCache(1 << 20)
	f, store := newCountingFixture(t, nil, func(c *commit.Committer) { c.Cache = cache })
	v := f.volume(t, "v")
	key := func(no uint32, version int64) pages.PageKey {
		return pages.PageKey{Volume: v.ID, PageNo: no, Version: version}
	}

	store.setFailPut(errors.New("injected: store down"))
	if _, err := f.c.Submit(ctx, v, []commit.Request{req("a", 1, 0, 0, 2, 1, 2)}); !errors.Is(err, commit.ErrUnavailable) {
		t.Fatalf("Submit with the store down = %v, want ErrUnavailable", err)
	}
	if st := cache.Stats(); st.Pages != 0 {
		t.Fatalf("a failed group cached %d pages", st.Pages)
	}
	store.setFailPut(nil)

	batch := []commit.Request{req("a", 1, 0, 0, 2, 1, 2), req("a", 2, 1, 0, 2, 2)}
	if _, err := f.c.Submit(ctx, v, batch); err != nil {
		t.Fatal(err)
	}
	for _, k := range []pages.PageKey{key(1, 1), key(2, 1), key(2, 2)} {
		got, ok := cache.Get(k)
		if !ok {
			t.Fatalf("page %d of version %d is not cached", k.PageNo, k.Version)
		}
		if want := f.readPage(t, v, k.PageNo, k.Version); !bytes.Equal(got, want) {
			t.Fatalf("cached page %d of version %d differs from the stored one", k.PageNo, k.Version)
		}
	}
	if _, ok := cache.Get(key(1, 2)); ok {
		t.Fatal("page 1 cached under version 2, which did not write it")
	}
}

// fakeReplayer "replays" any record by writing pages 1 and 2 with fill
// bytes of its own: enough to take the replay path of a stale commit.
type fakeReplayer struct{ calls atomic.Int64 }

func (f *fakeReplayer) Replay(ctx context.Context, in replay.Input) (*replay.Output, error) {
	f.calls.Add(1)
	n, err := in.Source.PageCount(ctx)
	if err != nil {
		return nil, err
	}
	return &replay.Output{PageCount: max(n, 2), Pages: map[uint32][]byte{1: page(0xee), 2: page(0xef)}}, nil
}

// changedCounting counts the page-index queries of conflict detection.
type changedCounting struct {
	pgschema.Metastore
	calls atomic.Int64
}

func (m *changedCounting) ChangedPages(ctx context.Context, volume, from, to int64) ([]pgschema.PageRef, error) {
	m.calls.Add(1)
	return m.Metastore.ChangedPages(ctx, volume, from, to)
}

// storePages is commit.PageReader over a page store, uncached; the store
// may be set after the committer is made.
type storePages struct{ store pages.Store }

func (s *storePages) ReadPages(ctx context.Context, pageSize int, keys []pages.PageKey, locs []pages.Location) ([][]byte, error) {
	return pages.NewReader(s.store, nil, pageSize).ReadPages(ctx, keys, locs)
}

// TestCommitter_ContestedVolume: when a group holds two commits racing for
// one version of a volume whose stale commits are replayed, the loser's
// replayed pages go up under the lock anyway, so the winner's go with them:
// one PUT for the group, not an upload ahead as well. (Under policy strict
// the loser is rejected, stores nothing, and the winner's pages go up
// ahead: one PUT too.) And the loser, which wrote a page the winner wrote,
// is known not to merge without a query of the page index.
func TestCommitter_ContestedVolume(t *testing.T) {
	ctx := context.Background()
	rec := (&replay.Record{Statements: []replay.Statement{{SQL: "UPDATE c SET n = n + 1"}}}).Encode()
	for _, tc := range []struct {
		name      string
		policy    string
		base      int64             // of both racers; the head is 1
		decisions []commit.Decision // of the two
		puts      int
		queries   int // of the pages changed since a base
	}{
		{"AtHead", pgschema.PolicyReplay, 1, []commit.Decision{commit.FastPath, commit.Replayed}, 1, 0},
		{"AtHeadStrict", pgschema.PolicyStrict, 1, []commit.Decision{commit.FastPath, commit.Rejected}, 1, 0},
		// Both stale: the first is checked for a merge (one query); the
		// second wrote a page the first wrote, which needs none.
		{"Stale", pgschema.PolicyReplay, 0, []commit.Decision{commit.Replayed, commit.Replayed}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := newGroupHold()
			rp := &fakeReplayer{}
			sp := &storePages{}
			counted := &changedCounting{}
			f, store := newCountingFixture(t, func(m pgschema.Metastore) pgschema.Metastore {
				counted.Metastore = m
				return counted
			}, func(c *commit.Committer) {
				c.Workers = 1
				c.Replayer = rp
				c.Pages = sp
				c.Hooks.AfterUpload = hold.hook
			})
			sp.store = f.store
			x, z := f.volume(t, "x"), f.volume(t, "z")
			if _, err := f.meta.Configure(ctx, x.ID, pgschema.Settings{Policy: tc.policy}); err != nil {
				t.Fatal(err)
			}
			seed := req("s", 1, 0, 0, 1, 1)
			if _, err := f.c.Submit(ctx, x, []commit.Request{seed}); err != nil {
				t.Fatal(err)
			}
			first := hold.submitHeld(ctx, f.c, z, []commit.Request{req("z", 1, 0, 0, 1, 1)})
			results := make(chan commit.Result, 2)
			var wg sync.WaitGroup
			for _, client := range []string{"a", "b"} {
				r := req(client, 1, 0, tc.base, 2, 1, 2)
				r.Record = rec
				wg.Go(func() {
					res, err := f.c.Submit(ctx, x, []commit.Request{r})
					if err != nil {
						t.Error(err)
						return
					}
					results <- res[0]
				})
			}
			waitFor(func() bool { return f.c.Queued() == 2 })
			putsBefore, _ := store.counts()
			queriesBefore := counted.calls.Load()
			close(hold.release)
			wg.Wait()
			close(results)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			var got []commit.Decision
			for r := range results {
				got = append(got, r.Decision)
			}
			slices.Sort(got)
			want := slices.Clone(tc.decisions)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("decisions %v, want %v", got, want)
			}
			if puts, deletes := store.counts(); puts-putsBefore != tc.puts || deletes != 0 {
				t.Fatalf("the racing group put %d segments and deleted %d, want %d and 0", puts-putsBefore, deletes, tc.puts)
			}
			if n := counted.calls.Load() - queriesBefore; n != int64(tc.queries) {
				t.Fatalf("the racing group queried the pages changed %d times, want %d", n, tc.queries)
			}
			f.mustIndexMatchesSegments(t, x)
		})
	}
}
