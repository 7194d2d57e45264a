package pages_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/cambiumdb/cambium/pages"
)

func key(n uint32) pages.PageKey { return pages.PageKey{Volume: 1, PageNo: n, Version: 1} }

func filled(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func TestCache_GetAdd(t *testing.T) {
	t.Run("HitMiss", func(t *testing.T) {
		c := pages.NewCache(1 << 20)
		if _, ok := c.Get(key(1)); ok {
			t.Fatal("Get() on empty cache hit")
		}
		c.Add(key(1), filled(100, 1))
		got, ok := c.Get(key(1))
		if !ok || !bytes.Equal(got, filled(100, 1)) {
			t.Fatalf("Get()=%v, %t; want the added page, true", got[:min(len(got), 4)], ok)
		}
		// Same page number, another version: a different key.
		if _, ok := c.Get(pages.PageKey{Volume: 1, PageNo: 1, Version: 2}); ok {
			t.Fatal("Get(other version) hit")
		}
		if got, want := c.Stats(), (pages.CacheStats{Hits: 1, Misses: 2, Pages: 1, Bytes: 100, MaxBytes: 1 << 20}); got != want {
			t.Fatalf("Stats()=%+v, want %+v", got, want)
		}
	})
	t.Run("Copies", func(t *testing.T) {
		c := pages.NewCache(1 << 20)
		p := filled(10, 1)
		c.Add(key(1), p)
		p[0] = 9 // the caller reuses its buffer
		got, _ := c.Get(key(1))
		if got[0] != 1 {
			t.Fatalf("Get()[0]=%d, want 1: Add kept the caller's slice", got[0])
		}
		got[1] = 9 // the caller scribbles on what it got
		again, _ := c.Get(key(1))
		if again[1] != 1 {
			t.Fatalf("Get()[1]=%d, want 1: Get returned cache memory", again[1])
		}
	})
	t.Run("Nil", func(t *testing.T) {
		var c *pages.Cache
		c.Add(key(1), filled(10, 1))
		if _, ok := c.Get(key(1)); ok {
			t.Fatal("nil cache hit")
		}
		if got := c.Stats(); got != (pages.CacheStats{}) {
			t.Fatalf("Stats()=%+v, want zero", got)
		}
	})
	t.Run("ZeroBound", func(t *testing.T) {
		c := pages.NewCache(0)
		c.Add(key(1), nil)
		c.Add(key(2), filled(1, 1))
		if got := c.Stats().Pages; got != 0 {
			t.Fatalf("Stats().Pages=%d, want 0", got)
		}
	})
}

func TestCache_Evict(t *testing.T) {
	t.Run("ByBytes", func(t *testing.T) {
		c := pages.NewCache(1000)
		for i := range uint32(10) {
			c.Add(key(i+1), filled(100, byte(i)))
		}
		if got, want := c.Stats(), (pages.CacheStats{Pages: 10, Bytes: 1000, MaxBytes: 1000}); got != want {
			t.Fatalf("full: Stats()=%+v, want %+v", got, want)
		}
		// One more byte than fits: exactly the oldest page goes.
		c.Add(key(11), filled(1, 11))
		if _, ok := c.Get(key(1)); ok {
			t.Fatal("page 1 (least recently used) still cached")
		}
		s := c.Stats()
		if s.Pages != 10 || s.Bytes != 901 || s.Evictions != 1 {
			t.Fatalf("Stats()=%+v, want 10 pages, 901 bytes, 1 eviction", s)
		}
		// 199 bytes fill the cache exactly after one more eviction:
		// 801 + 199 = 1000 is within the bound.
		c.Add(key(12), filled(199, 12))
		if _, ok := c.Get(key(2)); ok {
			t.Fatal("page 2 still cached")
		}
		s = c.Stats()
		if s.Pages != 10 || s.Bytes != 1000 || s.Evictions != 2 {
			t.Fatalf("Stats()=%+v, want 10 pages, 1000 bytes, 2 evictions", s)
		}
		// 101 bytes more need two 100-byte pages out: 800 + 101 = 901.
		c.Add(key(13), filled(101, 13))
		for _, n := range []uint32{3, 4} {
			if _, ok := c.Get(key(n)); ok {
				t.Fatalf("page %d still cached", n)
			}
		}
		if _, ok := c.Get(key(5)); !ok {
			t.Fatal("page 5 evicted, want it kept")
		}
		s = c.Stats()
		if s.Pages != 9 || s.Bytes != 901 || s.Evictions != 4 {
			t.Fatalf("Stats()=%+v, want 9 pages, 901 bytes, 4 evictions", s)
		}
	})
	t.Run("LRUOrder", func(t *testing.T) {
		c := pages.NewCache(300)
		c.Add(key(1), filled(100, 1))
		c.Add(key(2), filled(100, 2))
		c.Add(key(3), filled(100, 3))
		c.Get(key(1))                 // 1 is now the most recently used
		c.Add(key(2), filled(100, 2)) // re-adding marks 2 used, changes nothing else
		c.Add(key(4), filled(100, 4)) // evicts 3, the least recently used
		for n, want := range map[uint32]bool{1: true, 2: true, 3: false, 4: true} {
			if _, ok := c.Get(key(n)); ok != want {
				t.Fatalf("page %d cached=%t, want %t", n, ok, want)
			}
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		c := pages.NewCache(100)
		c.Add(key(1), filled(50, 1))
		c.Add(key(2), filled(101, 2))
		if _, ok := c.Get(key(2)); ok {
			t.Fatal("page larger than the cache was cached")
		}
		if _, ok := c.Get(key(1)); !ok {
			t.Fatal("adding an oversized page evicted page 1")
		}
		c.Add(key(3), filled(100, 3)) // exactly the bound: everything else goes
		if s := c.Stats(); s.Pages != 1 || s.Bytes != 100 {
			t.Fatalf("Stats()=%+v, want 1 page of 100 bytes", s)
		}
	})
}

func TestCache_Concurrent(t *testing.T) {
	c := pages.NewCache(64 * 100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				n := uint32((g*7 + i) % 200)
				want := filled(100, byte(n))
				if got, ok := c.Get(key(n)); ok && !bytes.Equal(got, want) {
					t.Errorf("page %d: Get() returned wrong bytes", n)
					return
				}
				c.Add(key(n), want)
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Bytes > 64*100 || s.Bytes != int64(s.Pages)*100 {
		t.Fatalf("Stats()=%+v: bytes over the bound or not pages × 100", s)
	}
}
