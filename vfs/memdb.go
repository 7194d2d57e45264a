package vfs

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrPageRange is returned by MemDB.ReadPage for a page outside 1..PageCount.
var ErrPageRange = errors.New("vfs: page out of range")

// MemDB is a PageSource held in memory whose Commit method, used as the
// CommitFunc, applies a Capture atomically. The server's replay runs on it
// (seeded with a snapshot's pages), and tests use it as the reference store.
type MemDB struct {
	pageSize int
	mu       struct {
		sync.Mutex
		pages [][]byte // pages[i] is page i+1
	}
}

var _ PageSource = (*MemDB)(nil)

// NewMemDB returns an empty database of the given page size.
func NewMemDB(pageSize int) *MemDB { return &MemDB{pageSize: pageSize} }

// PageSize implements PageSource.
func (d *MemDB) PageSize() int { return d.pageSize }

// PageCount implements PageSource.
func (d *MemDB) PageCount(ctx context.Context) (uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint32(len(d.mu.pages)), nil
}

// ReadPage implements PageSource.
func (d *MemDB) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if pgno == 0 || int(pgno) > len(d.mu.pages) {
		return fmt.Errorf("read page %d of %d: %w", pgno, len(d.mu.pages), ErrPageRange)
	}
	copy(p, d.mu.pages[pgno-1])
	return nil
}

// Commit applies c: its pages, then the page count (growing with zero pages
// or truncating). It has the CommitFunc signature.
func (d *MemDB) Commit(ctx context.Context, c *Capture) error {
	if c.PageSize != d.pageSize {
		return fmt.Errorf("commit: page size %d, want %d: %w", c.PageSize, d.pageSize, ErrPageSize)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setPagesLocked(c.PageCount, c.Pages)
	return nil
}

func (d *MemDB) setPagesLocked(count uint32, pages map[uint32][]byte) {
	for uint32(len(d.mu.pages)) < count {
		d.mu.pages = append(d.mu.pages, make([]byte, d.pageSize))
	}
	d.mu.pages = d.mu.pages[:count]
	for pgno, p := range pages {
		if pgno >= 1 && pgno <= count {
			d.mu.pages[pgno-1] = append([]byte(nil), p...)
		}
	}
}

// Bytes returns the database as one file image.
func (d *MemDB) Bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]byte, 0, len(d.mu.pages)*d.pageSize)
	for _, p := range d.mu.pages {
		out = append(out, p...)
	}
	return out
}

// SetBytes replaces the database with a file image (a whole number of pages).
func (d *MemDB) SetBytes(b []byte) error {
	if len(b)%d.pageSize != 0 {
		return fmt.Errorf("set bytes: %d is not a multiple of %d: %w", len(b), d.pageSize, ErrPartialPage)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.pages = d.mu.pages[:0]
	for off := 0; off < len(b); off += d.pageSize {
		d.mu.pages = append(d.mu.pages, append([]byte(nil), b[off:off+d.pageSize]...))
	}
	return nil
}
