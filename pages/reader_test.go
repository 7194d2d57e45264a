package pages_test

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/segment"
)

// fakeStore is an in-memory pages.Store that counts ranged reads and can
// hold them at a gate, to observe what the Reader asks for and when.
type fakeStore struct {
	mu      sync.Mutex
	objects map[string][]byte

	reads    atomic.Int64  // ReadRange calls
	inFlight atomic.Int64  // ReadRange calls not yet returned
	maxInFl  atomic.Int64  // the most ever in flight at once
	gate     chan struct{} // if set, ReadRange waits for it to close (or ctx)
}

var _ pages.Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{objects: map[string][]byte{}} }

func (s *fakeStore) Put(ctx context.Context, key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = bytes.Clone(data)
	return nil
}

func (s *fakeStore) ReadRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	s.reads.Add(1)
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFl.Load()
		if n <= m || s.maxInFl.CompareAndSwap(m, n) {
			break
		}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	data, err := s.Read(ctx, key)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 || offset+length > int64(len(data)) {
		return nil, &pages.RangeError{Key: key, Offset: offset, Length: length, Size: int64(len(data))}
	}
	return bytes.Clone(data[offset : offset+length]), nil
}

func (s *fakeStore) Read(ctx context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objects[key]
	if !ok {
		return nil, pages.ErrNotFound
	}
	return bytes.Clone(data), nil
}

func (s *fakeStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
	return nil
}

func (s *fakeStore) List(ctx context.Context, prefix string) iter.Seq2[pages.Object, error] {
	return func(yield func(pages.Object, error) bool) {
		s.mu.Lock()
		var objs []pages.Object
		for k, v := range s.objects {
			if strings.HasPrefix(k, prefix) {
				objs = append(objs, pages.Object{Key: k, Size: int64(len(v))})
			}
		}
		s.mu.Unlock()
		for _, o := range objs {
			if !yield(o, nil) {
				return
			}
		}
	}
}

const pageSize = 4096

// fixture is a segment of n random-ish pages of volume 1, version 1, stored
// as "segments/a", with FrameBytes frames.
type fixture struct {
	store *fakeStore
	keys  []pages.PageKey
	locs  []pages.Location
	data  [][]byte
}

func newFixture(t *testing.T, n, frameBytes int) *fixture {
	t.Helper()
	enc := segment.NewEncoder(pageSize)
	enc.FrameBytes = frameBytes
	rng := rand.New(rand.NewPCG(1, 2))
	f := &fixture{store: newFakeStore()}
	for i := range n {
		p := make([]byte, pageSize)
		for j := 0; j < pageSize/2; j++ { // half random, half zeros
			p[j] = byte(rng.IntN(16))
		}
		if err := enc.Add(1, 1, uint32(i+1), p); err != nil {
			t.Fatal(err)
		}
		f.data = append(f.data, p)
	}
	data, entries, err := enc.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Put(t.Context(), "segments/a", data); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		f.keys = append(f.keys, pages.PageKey{Volume: e.Volume, PageNo: e.PageNo, Version: e.Version})
		f.locs = append(f.locs, pages.Location{Segment: "segments/a", FrameOffset: e.FrameOffset,
			FrameLength: e.FrameLength, PageOffset: e.PageOffset, Hash: e.Hash})
	}
	return f
}

func TestReader_ReadPage(t *testing.T) {
	t.Run("MissThenHit", func(t *testing.T) {
		f := newFixture(t, 40, segment.DefaultFrameBytes)
		r := pages.NewReader(f.store, pages.NewCache(1<<20), pageSize)
		for range 2 {
			got, err := r.ReadPage(t.Context(), f.keys[5], f.locs[5])
			if err != nil {
				t.Fatalf("ReadPage()=%v", err)
			}
			if !bytes.Equal(got, f.data[5]) {
				t.Fatal("ReadPage() returned other bytes than were stored")
			}
			got[0] ^= 0xff // must not reach the cache
		}
		if got, want := f.store.reads.Load(), int64(1); got != want {
			t.Fatalf("ReadRange calls=%d, want %d", got, want)
		}
		got, _ := r.ReadPage(t.Context(), f.keys[5], f.locs[5])
		if !bytes.Equal(got, f.data[5]) {
			t.Fatal("a caller's write to a returned page reached the cache")
		}
	})
	t.Run("NilCache", func(t *testing.T) {
		f := newFixture(t, 3, segment.DefaultFrameBytes)
		r := pages.NewReader(f.store, nil, pageSize)
		for range 3 {
			if _, err := r.ReadPage(t.Context(), f.keys[0], f.locs[0]); err != nil {
				t.Fatalf("ReadPage()=%v", err)
			}
		}
		if got, want := f.store.reads.Load(), int64(3); got != want {
			t.Fatalf("ReadRange calls=%d, want %d", got, want)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		f := newFixture(t, 3, segment.DefaultFrameBytes)
		loc := f.locs[0]
		loc.Segment = "segments/missing"
		_, err := pages.NewReader(f.store, nil, pageSize).ReadPage(t.Context(), f.keys[0], loc)
		if !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("ReadPage()=%v, want ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), "read page 1@1") {
			t.Fatalf("ReadPage()=%q, want it to name the page", err)
		}
	})
	t.Run("CorruptFrame", func(t *testing.T) {
		f := newFixture(t, 3, segment.DefaultFrameBytes)
		data, _ := f.store.Read(t.Context(), "segments/a")
		data[f.locs[0].FrameOffset+f.locs[0].FrameLength-1] ^= 1
		f.store.Put(t.Context(), "segments/a", data)
		_, err := pages.NewReader(f.store, nil, pageSize).ReadPage(t.Context(), f.keys[0], f.locs[0])
		if !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage()=%v, want segment.ErrCorrupt", err)
		}
	})
	t.Run("WrongHash", func(t *testing.T) {
		f := newFixture(t, 3, segment.DefaultFrameBytes)
		c := pages.NewCache(1 << 20)
		loc := f.locs[1]
		loc.Hash = f.locs[0].Hash
		_, err := pages.NewReader(f.store, c, pageSize).ReadPage(t.Context(), f.keys[1], loc)
		var hm *segment.HashMismatchError
		if !errors.As(err, &hm) || !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage()=%v, want *segment.HashMismatchError", err)
		}
		if got := c.Stats().Pages; got != 0 {
			t.Fatalf("cache holds %d pages after a failed read, want 0", got)
		}
	})
	t.Run("InvalidLocation", func(t *testing.T) {
		f := newFixture(t, 1, segment.DefaultFrameBytes)
		r := pages.NewReader(f.store, nil, pageSize)
		for name, mutate := range map[string]func(*pages.Location){
			"NoSegment":      func(l *pages.Location) { l.Segment = "" },
			"HugeFrame":      func(l *pages.Location) { l.FrameLength = 10 << 30 },
			"NegativeOffset": func(l *pages.Location) { l.FrameOffset = -1 },
			"InHeader":       func(l *pages.Location) { l.FrameOffset = 0 },
			"PageOffset":     func(l *pages.Location) { l.PageOffset = -pageSize },
		} {
			loc := f.locs[0]
			mutate(&loc)
			if _, err := r.ReadPage(t.Context(), f.keys[0], loc); !errors.Is(err, pages.ErrInvalidLocation) {
				t.Errorf("%s: ReadPage()=%v, want ErrInvalidLocation", name, err)
			}
		}
		if got := f.store.reads.Load(); got != 0 {
			t.Fatalf("ReadRange calls=%d for invalid locations, want 0", got)
		}
	})
	t.Run("BadPageSize", func(t *testing.T) {
		f := newFixture(t, 1, segment.DefaultFrameBytes)
		_, err := pages.NewReader(f.store, nil, 1000).ReadPage(t.Context(), f.keys[0], f.locs[0])
		if !errors.Is(err, segment.ErrInvalidPageSize) {
			t.Fatalf("ReadPage()=%v, want segment.ErrInvalidPageSize", err)
		}
	})
	t.Run("SharedMiss", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, 16, segment.DefaultFrameBytes) // one frame
			f.store.gate = make(chan struct{})
			r := pages.NewReader(f.store, pages.NewCache(1<<20), pageSize)
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					got, err := r.ReadPage(t.Context(), f.keys[i], f.locs[i])
					if err != nil || !bytes.Equal(got, f.data[i]) {
						t.Errorf("ReadPage(page %d)=%v, or wrong bytes", i+1, err)
					}
				})
			}
			synctest.Wait() // all 16 are blocked: on the gate, or on its flight
			if got, want := f.store.reads.Load(), int64(1); got != want {
				t.Fatalf("ReadRange calls with 16 concurrent misses on one frame=%d, want %d", got, want)
			}
			close(f.store.gate)
			wg.Wait()
			if got, want := f.store.reads.Load(), int64(1); got != want {
				t.Fatalf("ReadRange calls=%d, want %d", got, want)
			}
		})
	})
	t.Run("LeaderCanceled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, 2, segment.DefaultFrameBytes)
			f.store.gate = make(chan struct{})
			r := pages.NewReader(f.store, nil, pageSize)
			leaderCtx, cancel := context.WithCancel(t.Context())
			leaderErr := make(chan error, 1)
			go func() {
				_, err := r.ReadPage(leaderCtx, f.keys[0], f.locs[0])
				leaderErr <- err
			}()
			synctest.Wait() // the leader's fetch waits at the gate
			var got []byte
			var err error
			done := make(chan struct{})
			go func() {
				got, err = r.ReadPage(t.Context(), f.keys[1], f.locs[1])
				close(done)
			}()
			synctest.Wait() // the follower joined the leader's flight
			cancel()
			if err := <-leaderErr; !errors.Is(err, context.Canceled) {
				t.Fatalf("leader ReadPage()=%v, want context.Canceled", err)
			}
			synctest.Wait() // the follower flies again and waits at the gate
			close(f.store.gate)
			<-done
			if err != nil || !bytes.Equal(got, f.data[1]) {
				t.Fatalf("follower ReadPage()=%v, or wrong bytes; want the page", err)
			}
			if got, want := f.store.reads.Load(), int64(2); got != want {
				t.Fatalf("ReadRange calls=%d, want %d", got, want)
			}
		})
	})
}

func TestReader_ReadPages(t *testing.T) {
	t.Run("OneReadPerFrame", func(t *testing.T) {
		f := newFixture(t, 40, segment.DefaultFrameBytes) // frames of 16, 16, 8
		r := pages.NewReader(f.store, pages.NewCache(1<<20), pageSize)
		// Every page, shuffled, plus repeats.
		idx := rand.New(rand.NewPCG(3, 4)).Perm(40)
		idx = append(idx, 0, 39, 17)
		keys := make([]pages.PageKey, len(idx))
		locs := make([]pages.Location, len(idx))
		for j, i := range idx {
			keys[j], locs[j] = f.keys[i], f.locs[i]
		}
		for round, wantReads := range []int64{3, 3} { // the second round is all cache hits
			got, err := r.ReadPages(t.Context(), keys, locs)
			if err != nil {
				t.Fatalf("round %d: ReadPages()=%v", round, err)
			}
			for j, i := range idx {
				if !bytes.Equal(got[j], f.data[i]) {
					t.Fatalf("round %d: result %d is not page %d", round, j, i+1)
				}
			}
			if got := f.store.reads.Load(); got != wantReads {
				t.Fatalf("round %d: ReadRange calls=%d, want %d", round, got, wantReads)
			}
		}
	})
	t.Run("PartlyCached", func(t *testing.T) {
		f := newFixture(t, 40, segment.DefaultFrameBytes)
		r := pages.NewReader(f.store, pages.NewCache(1<<20), pageSize)
		if _, err := r.ReadPages(t.Context(), f.keys[:16], f.locs[:16]); err != nil { // frame 1
			t.Fatal(err)
		}
		if _, err := r.ReadPages(t.Context(), f.keys, f.locs); err != nil {
			t.Fatal(err)
		}
		if got, want := f.store.reads.Load(), int64(3); got != want {
			t.Fatalf("ReadRange calls=%d, want %d", got, want)
		}
	})
	t.Run("Concurrency", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFixture(t, 20, 0) // one page per frame: 20 frames
			f.store.gate = make(chan struct{})
			r := pages.NewReader(f.store, nil, pageSize)
			r.Concurrency = 4
			done := make(chan error)
			go func() {
				_, err := r.ReadPages(t.Context(), f.keys, f.locs)
				done <- err
			}()
			synctest.Wait()
			if got, want := f.store.inFlight.Load(), int64(4); got != want {
				t.Fatalf("frames in flight=%d, want %d", got, want)
			}
			close(f.store.gate)
			if err := <-done; err != nil {
				t.Fatalf("ReadPages()=%v", err)
			}
			if got, want := f.store.maxInFl.Load(), int64(4); got != want {
				t.Fatalf("most frames in flight=%d, want %d", got, want)
			}
			if got, want := f.store.reads.Load(), int64(20); got != want {
				t.Fatalf("ReadRange calls=%d, want %d", got, want)
			}
		})
	})
	t.Run("Errors", func(t *testing.T) {
		f := newFixture(t, 40, segment.DefaultFrameBytes)
		r := pages.NewReader(f.store, nil, pageSize)
		locs := append([]pages.Location(nil), f.locs...)
		locs[20].Segment = "segments/missing"
		_, err := r.ReadPages(t.Context(), f.keys, locs)
		if !errors.Is(err, pages.ErrNotFound) || !strings.Contains(err.Error(), "read page 21@1") {
			t.Fatalf("ReadPages()=%v, want ErrNotFound naming page 21@1", err)
		}
		locs = append([]pages.Location(nil), f.locs...)
		locs[3].Hash++
		if _, err := r.ReadPages(t.Context(), f.keys, locs); !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPages()=%v, want segment.ErrCorrupt", err)
		}
		if _, err := r.ReadPages(t.Context(), f.keys, f.locs[:3]); err == nil {
			t.Fatal("ReadPages() with 40 keys and 3 locations succeeded")
		}
		got, err := r.ReadPages(t.Context(), nil, nil)
		if err != nil || len(got) != 0 {
			t.Fatalf("ReadPages(none)=%d pages, %v; want 0, nil", len(got), err)
		}
	})
}
