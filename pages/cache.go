package pages

import "sync"

// Cache keeps recently read pages in memory, bounded by the total length of
// the pages it holds, evicting the least recently used. Pages are immutable
// per PageKey, so nothing is ever invalidated: a key's bytes, once cached,
// are right forever. A Cache is safe for concurrent use.
//
// Add copies the page in and Get copies it out, so no caller can alter the
// cached bytes and a caller owns every slice it is given.
//
// Create one with NewCache; the zero Cache is not usable.
// A nil *Cache is a valid cache that holds nothing: Get always misses
// (without counting), Add does nothing, Stats is zero.
type Cache struct {
	maxBytes int64

	mu struct {
		sync.Mutex
		items map[PageKey]*cacheEntry
		// lru is the sentinel of a circular list: lru.next is the most
		// recently used entry, lru.prev the least.
		lru   cacheEntry
		bytes int64
		stats CacheStats
	}
}

// cacheEntry is one cached page, linked into the LRU list. An intrusive list
// costs one allocation per page rather than container/list's two.
type cacheEntry struct {
	key        PageKey
	page       []byte // never written after Add stored it
	prev, next *cacheEntry
}

// CacheStats is a snapshot of a cache's counters.
type CacheStats struct {
	Hits      uint64 // Get found the page
	Misses    uint64 // Get did not
	Evictions uint64 // pages dropped to make room
	Pages     int    // pages held now
	Bytes     int64  // their total length; at most MaxBytes
	MaxBytes  int64  // the bound given to NewCache
}

// NewCache returns an empty cache that holds at most maxBytes of page bytes.
// Only page bytes count toward the bound, not the per-page bookkeeping
// (about 100 bytes a page, so 2.5% for 4 KiB pages). A page longer than
// maxBytes is never cached; maxBytes <= 0 caches nothing.
func NewCache(maxBytes int64) *Cache {
	c := &Cache{maxBytes: maxBytes}
	c.mu.items = make(map[PageKey]*cacheEntry)
	c.mu.lru.next, c.mu.lru.prev = &c.mu.lru, &c.mu.lru
	return c
}

// Get returns a copy of the cached page key and true, marking it most
// recently used, or nil and false.
func (c *Cache) Get(key PageKey) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	e, ok := c.mu.items[key]
	if !ok {
		c.mu.stats.Misses++
		c.mu.Unlock()
		return nil, false
	}
	c.mu.stats.Hits++
	c.unlinkLocked(e)
	c.pushFrontLocked(e)
	page := e.page
	c.mu.Unlock()
	// Copy outside the lock: e.page is never written, only dropped.
	return append([]byte(nil), page...), true
}

// Add caches a copy of page as key, evicting least recently used pages
// until it fits. Adding a key already cached only marks it used: the bytes
// of a PageKey never change.
func (c *Cache) Add(key PageKey, page []byte) {
	if c == nil || c.maxBytes <= 0 || int64(len(page)) > c.maxBytes {
		return
	}
	cp := append([]byte(nil), page...) // copy before taking the lock
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.mu.items[key]; ok {
		c.unlinkLocked(e)
		c.pushFrontLocked(e)
		return
	}
	for c.mu.bytes+int64(len(cp)) > c.maxBytes {
		victim := c.mu.lru.prev
		c.unlinkLocked(victim)
		delete(c.mu.items, victim.key)
		c.mu.bytes -= int64(len(victim.page))
		c.mu.stats.Evictions++
	}
	e := &cacheEntry{key: key, page: cp}
	c.mu.items[key] = e
	c.pushFrontLocked(e)
	c.mu.bytes += int64(len(cp))
}

// Stats returns the cache's counters and occupancy.
func (c *Cache) Stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.mu.stats
	s.Pages = len(c.mu.items)
	s.Bytes = c.mu.bytes
	s.MaxBytes = c.maxBytes
	return s
}

func (c *Cache) unlinkLocked(e *cacheEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache) pushFrontLocked(e *cacheEntry) {
	e.prev = &c.mu.lru
	e.next = c.mu.lru.next
	e.next.prev = e
	c.mu.lru.next = e
}
