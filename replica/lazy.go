package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cambiumdb/cambium/api"
)

// A lazy replica starts with no page and fetches each page from the
// server the first time SQLite reads it (DESIGN.md: a replica may start
// empty and fetch pages on demand). Its main file is sparse: it holds the
// pages fetched or written locally, at their offsets, and holes elsewhere.
//
// The resident set says which pages of the main file are right for the
// replica's state; every other page is read from the server at the
// replica's base version, which is right for any page no pending commit
// wrote (a pending commit's pages are in the overlay or, after a
// checkpoint, resident). The set lives in memory and in the sidecar's
// resident table, and may only lag behind the main file:
//
//   - a fetched page is written to the main file and joins the set in
//     memory at once; it is recorded in the sidecar only after an fsync of
//     the main file (at the next checkpoint, remote state, Close, or when
//     lazyUnsavedMax pages wait). A crash before that refetches it;
//   - a checkpoint records the pages it wrote, after its fsync, in the
//     transaction that records applied_seq (Open re-applies otherwise);
//   - a remote state (pull, rebase) forgets, in the fsynced transaction
//     that stores it, every resident page the server changed and did not
//     send, and records the pages it sent once they are written.
//
// So a page the sidecar calls resident is always in the main file, as of
// the replica's state.

// Fetcher reads pages of a volume from the server; *api.Client is one.
type Fetcher interface {
	ReadPages(ctx context.Context, volume string, version int64, pageNos []uint32, fn func(api.StreamedPage) error) (api.PageStreamHeader, error)
}

// Defaults for lazy replicas.
const (
	DefaultReadAhead = 8                // pages fetched per miss: the page read and the next ones not held
	lazyUnsavedMax   = 4096             // fetched pages recorded in the sidecar at the latest this late
	lazyFetchTimeout = 30 * time.Second // one fetch, from inside a SQLite read
)

// ErrNoFetcher means a lazy replica needed a page it does not hold and was
// opened without Options.Fetcher.
var ErrNoFetcher = errors.New("replica: lazy replica has no fetcher for a page it does not hold")

// lazyState is a lazy replica's resident set. mu guards it; it changes only
// with the replica's state lock held too, so holders of that lock may read
// it without mu.
type lazyState struct {
	on       bool
	fetcher  Fetcher
	ahead    int
	mu       sync.RWMutex
	resident bitset
	unsaved  []uint32 // resident in memory, not yet in the sidecar

	fetches atomic.Int64 // requests to the server
	fetched atomic.Int64 // pages they brought
}

func (l *lazyState) has(pgno uint32) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.resident.has(pgno)
}

// bitset is a set of page numbers.
type bitset []uint64

func (b bitset) has(n uint32) bool {
	i := int(n / 64)
	return i < len(b) && b[i]&(1<<(n%64)) != 0
}

func (b *bitset) add(n uint32) {
	i := int(n / 64)
	if i >= len(*b) {
		*b = append(*b, make([]uint64, i+1-len(*b))...)
	}
	(*b)[i] |= 1 << (n % 64)
}

func (b bitset) remove(n uint32) {
	if i := int(n / 64); i < len(b) {
		b[i] &^= 1 << (n % 64)
	}
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// above returns the members greater than n, ascending.
func (b bitset) above(n uint32) []uint32 {
	var out []uint32
	for i := int(n/64) * 64; i < len(b)*64; i++ {
		if uint32(i) > n && b.has(uint32(i)) {
			out = append(out, uint32(i))
		}
	}
	return out
}

// loadLazyLocked reads the lazy flag and the resident set from the sidecar.
func (r *Replica) loadLazyLocked(ctx context.Context) error {
	v, ok, err := getMeta(ctx, r.side.db, metaLazy)
	if err != nil || !ok || v != "1" {
		return err
	}
	r.lz.on = true
	r.lz.fetcher = r.opts.Fetcher
	r.lz.ahead = r.opts.ReadAhead
	if r.lz.ahead <= 0 {
		r.lz.ahead = DefaultReadAhead
	}
	rows, err := r.side.db.QueryContext(ctx, "SELECT pgno FROM resident")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var pgno uint32
		if err := rows.Scan(&pgno); err != nil {
			return err
		}
		r.lz.resident.add(pgno)
	}
	return rows.Err()
}

// fetchPage serves a read of a page the lazy replica does not hold: it
// fetches it, with the next pages it does not hold (read-ahead), at the
// replica's base version, writes them into the main file and serves p.
func (r *Replica) fetchPage(ctx context.Context, pgno uint32, p []byte) error {
	r.state.Lock()
	defer r.state.Unlock()
	// A commit or a checkpoint may have come in between.
	r.ov.mu.RLock()
	q, inOverlay := r.ov.pages[pgno]
	r.ov.mu.RUnlock()
	switch {
	case inOverlay:
		copy(p, q)
		return nil
	case r.lz.resident.has(pgno):
		_, err := r.main.ReadAt(p, int64(pgno-1)*int64(r.pageSize))
		return err
	case r.lz.fetcher == nil:
		return fmt.Errorf("page %d: %w", pgno, ErrNoFetcher)
	}
	count := r.ov.mainCount
	want := []uint32{pgno}
	for n := pgno + 1; n <= count && len(want) < r.lz.ahead; n++ {
		if _, ok := r.ov.pages[n]; !ok && !r.lz.resident.has(n) {
			want = append(want, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lazyFetchTimeout)
	defer cancel()
	got := make(map[uint32][]byte, len(want))
	if _, err := r.lz.fetcher.ReadPages(ctx, r.volume, int64(r.state.base), want, func(sp api.StreamedPage) error {
		got[sp.No] = sp.Data
		return nil
	}); err != nil {
		return fmt.Errorf("fetch page %d at version %d: %w", pgno, r.state.base, err)
	}
	r.lz.fetches.Add(1)
	r.lz.fetched.Add(int64(len(got)))
	ps := int64(r.pageSize)
	for _, n := range want {
		data, ok := got[n]
		if !ok {
			// Within the page count but never written: zeros, as in a
			// file SQLite extended without writing.
			data = make([]byte, r.pageSize)
		}
		if len(data) != r.pageSize {
			return fmt.Errorf("fetch page %d: %d bytes, want %d", n, len(data), r.pageSize)
		}
		if _, err := r.main.WriteAt(data, int64(n-1)*ps); err != nil {
			return fmt.Errorf("write fetched page %d: %w", n, err)
		}
		if n == pgno {
			copy(p, data)
		}
	}
	r.lz.mu.Lock()
	for _, n := range want {
		r.lz.resident.add(n)
	}
	r.lz.unsaved = append(r.lz.unsaved, want...)
	r.lz.mu.Unlock()
	if len(r.lz.unsaved) >= lazyUnsavedMax {
		if err := r.main.Sync(); err != nil {
			return fmt.Errorf("sync main: %w", err)
		}
		return r.side.tx(ctx, func(tx *sql.Tx) error { return r.saveResidentLocked(ctx, tx, nil, nil, true) })
	}
	return nil
}

// saveResidentLocked records, in tx, the pages in add and, when synced,
// the fetched pages not yet recorded, and forgets those in drop (recorded
// or not). The main file must be fsynced with the pages it records.
func (r *Replica) saveResidentLocked(ctx context.Context, tx *sql.Tx, add, drop []uint32, synced bool) error {
	if !r.lz.on {
		return nil
	}
	var unsaved []uint32
	if synced {
		unsaved = r.lz.unsaved
	}
	ins, err := tx.PrepareContext(ctx, "INSERT OR IGNORE INTO resident(pgno) VALUES(?)")
	if err != nil {
		return err
	}
	defer ins.Close()
	for _, list := range [][]uint32{unsaved, add} {
		for _, n := range list {
			if _, err := ins.ExecContext(ctx, n); err != nil {
				return err
			}
		}
	}
	del, err := tx.PrepareContext(ctx, "DELETE FROM resident WHERE pgno = ?")
	if err != nil {
		return err
	}
	defer del.Close()
	for _, n := range drop {
		if _, err := del.ExecContext(ctx, n); err != nil {
			return err
		}
	}
	r.lz.mu.Lock()
	if synced {
		r.lz.unsaved = r.lz.unsaved[:0]
	} else if len(drop) > 0 {
		gone := make(map[uint32]bool, len(drop))
		for _, n := range drop {
			gone[n] = true
		}
		r.lz.unsaved = slices.DeleteFunc(r.lz.unsaved, func(n uint32) bool { return gone[n] })
	}
	for _, n := range add {
		r.lz.resident.add(n)
	}
	for _, n := range drop {
		r.lz.resident.remove(n)
	}
	r.lz.mu.Unlock()
	return nil
}

// checkpointResident lists what a checkpoint that wrote pages, cut the main
// file to floor and set it to count pages leaves resident and not: the
// pages it wrote and every page in (floor, count] (written, or zeros the
// overlay served), and nothing beyond count.
func (r *Replica) checkpointResident(pages map[uint32][]byte, floor, count uint32) (add, drop []uint32) {
	if !r.lz.on {
		return nil, nil
	}
	for n := range pages {
		if n <= floor {
			add = append(add, n)
		}
	}
	for n := floor + 1; n <= count; n++ {
		add = append(add, n)
	}
	return add, r.lz.resident.above(count)
}

// remoteForget lists the resident pages a remote state (version, count,
// pages) makes wrong: those changed (all the others, when changed is nil:
// not known) that it does not carry, and those beyond count.
func (r *Replica) remoteForget(changed []uint32, count uint32, pages map[uint32][]byte) []uint32 {
	if !r.lz.on {
		return nil
	}
	var drop []uint32
	consider := changed
	if changed == nil {
		for i := range len(r.lz.resident) * 64 {
			if r.lz.resident.has(uint32(i)) {
				consider = append(consider, uint32(i))
			}
		}
	}
	dropped := map[uint32]bool{}
	for _, n := range consider {
		if _, ok := pages[n]; !ok && r.lz.resident.has(n) && !dropped[n] {
			drop = append(drop, n)
			dropped[n] = true
		}
	}
	for _, n := range r.lz.resident.above(count) {
		if !dropped[n] {
			drop = append(drop, n)
		}
	}
	return drop
}

// fetchRemote fetches what a lazy replica needs to go to head: the list of
// pages changed since from, and the bytes at head of those it holds, plus
// extra (pages its pending commits wrote, for a reset).
func (r *Replica) fetchRemote(ctx context.Context, c *api.Client, from uint64, extra []uint32) (*remoteState, error) {
	if len(extra) == 0 && r.Lazy().Resident == 0 {
		// Holding nothing, it needs nothing but the head: listing a large
		// volume's pages would cost the server a scan of its page index.
		// The changed pages are then not known, so the new state forgets
		// whatever is fetched meanwhile.
		v, err := c.Volume(ctx, r.volume)
		if err != nil {
			return nil, fmt.Errorf("pull: %w", err)
		}
		return &remoteState{version: uint64(v.Head), count: v.PageCount, pages: map[uint32][]byte{}}, nil
	}
	ch, err := c.Changes(ctx, r.volume, int64(from))
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	rs := &remoteState{version: uint64(ch.Head), count: ch.PageCount, pages: map[uint32][]byte{}, changed: []uint32{}}
	want := map[uint32]bool{}
	for _, run := range ch.Pages {
		for n := run[0]; n <= run[1] && n != 0; n++ {
			rs.changed = append(rs.changed, n)
			if r.lz.has(n) {
				want[n] = true
			}
		}
	}
	for _, n := range extra {
		if n <= ch.PageCount {
			want[n] = true
		}
	}
	if err := r.readPagesAt(ctx, c, ch.Head, sortedKeys(want), rs.pages); err != nil {
		return nil, err
	}
	return rs, nil
}

// readPagesAt reads pages of version into out, in requests the server
// accepts; a page within the page count that no version wrote is zeros.
func (r *Replica) readPagesAt(ctx context.Context, c *api.Client, version int64, nums []uint32, out map[uint32][]byte) error {
	for len(nums) > 0 {
		chunk := nums[:min(len(nums), api.DefaultMaxReadPages)]
		nums = nums[len(chunk):]
		if _, err := c.ReadPages(ctx, r.volume, version, chunk, func(p api.StreamedPage) error {
			out[p.No] = p.Data
			return nil
		}); err != nil {
			return fmt.Errorf("pull: read pages at %d: %w", version, err)
		}
		for _, no := range chunk {
			if _, ok := out[no]; !ok {
				out[no] = make([]byte, r.pageSize)
			}
		}
	}
	return nil
}

// LazyStats says how much of a lazy replica is held locally.
type LazyStats struct {
	Lazy     bool
	Resident int   // pages held
	Fetches  int64 // requests for pages not held, since Open
	Fetched  int64 // pages they brought
}

// Lazy reports whether the replica is lazy and what it holds.
func (r *Replica) Lazy() LazyStats {
	r.lz.mu.RLock()
	defer r.lz.mu.RUnlock()
	return LazyStats{Lazy: r.lz.on, Resident: r.lz.resident.count(), Fetches: r.lz.fetches.Load(), Fetched: r.lz.fetched.Load()}
}
