package pages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/cambiumdb/cambium/pages/segment"
)

// DefaultReadConcurrency is how many distinct frames ReadPages fetches at
// once by default: enough to hide S3 latency for a pull of scattered pages,
// few enough not to flood a MinIO shared with the commit path.
const DefaultReadConcurrency = 8

// maxFlightRetries bounds how often a caller re-issues a shared frame fetch
// that failed only because the caller that started it went away.
const maxFlightRetries = 3

// ErrInvalidLocation means a Location cannot point at a page: no segment key,
// or offsets and lengths outside what the segment format allows. It guards
// the store from ranged reads that a corrupt index row would make absurd.
var ErrInvalidLocation = errors.New("invalid page location")

// Reader turns (PageKey, Location) into verified page bytes: from the cache
// when it can, else by one ranged read of the page's frame from the store,
// which it decompresses, checks (frame checksum, page hash) and caches.
//
// It holds two promises. A page it returns hashes to its Location's Hash, so
// a wrong or damaged frame is an error (segment.ErrCorrupt), never wrong
// bytes. And concurrent misses on one frame, through ReadPage or ReadPages,
// share one ranged read and one decompression.
//
// A Reader serves pages of one size; a process whose volumes use several
// page sizes makes one Reader per size over the same Store and Cache (PageKeys
// are unique across volumes). A Reader is safe for concurrent use.
type Reader struct {
	// Concurrency bounds how many distinct frames one ReadPages call
	// fetches at once. NewReader sets DefaultReadConcurrency; values below
	// 1 mean 1. Set it before the Reader is used.
	Concurrency int

	store    Store
	cache    *Cache // may be nil: no caching
	pageSize int
	flights  singleflight.Group // keyed by frameRef.flightKey
}

// NewReader returns a Reader of pageSize-byte pages from store, caching them
// in cache, which may be nil. An invalid page size makes every read fail
// with segment.ErrInvalidPageSize.
func NewReader(store Store, cache *Cache, pageSize int) *Reader {
	return &Reader{Concurrency: DefaultReadConcurrency, store: store, cache: cache, pageSize: pageSize}
}

// frameRef names one frame of one segment.
type frameRef struct {
	segment        string
	offset, length int64
}

func (f frameRef) flightKey() string {
	// The length is part of the key so that a Location with a wrong length
	// fails on its own rather than sharing a correct caller's result.
	return f.segment + "\x00" + strconv.FormatInt(f.offset, 10) + "\x00" + strconv.FormatInt(f.length, 10)
}

// ReadPage returns a new copy of page key, whose bytes loc says where to
// find. A missing segment is ErrNotFound, damaged or mismatched bytes are
// segment.ErrCorrupt (errors.Is works on the result); errors name the page.
func (r *Reader) ReadPage(ctx context.Context, key PageKey, loc Location) ([]byte, error) {
	if page, ok := r.cache.Get(key); ok {
		return page, nil
	}
	page, err := r.readMiss(ctx, loc)
	if err != nil {
		return nil, pageError(key, err)
	}
	r.cache.Add(key, page)
	return page, nil
}

func (r *Reader) readMiss(ctx context.Context, loc Location) ([]byte, error) {
	if err := r.check(loc); err != nil {
		return nil, err
	}
	decoded, err := r.frame(ctx, frameRef{loc.Segment, loc.FrameOffset, loc.FrameLength})
	if err != nil {
		return nil, err
	}
	page, err := segment.PageInFrame(decoded, loc.PageOffset, r.pageSize, loc.Hash)
	if err != nil {
		return nil, fmt.Errorf("frame %s@%d: %w", loc.Segment, loc.FrameOffset, err)
	}
	// decoded is shared with other callers of the same flight: copy out.
	return bytes.Clone(page), nil
}

// ReadPages returns a new copy of each page keys[i], found at locs[i] (the two
// slices have the same length), in the same order. Pages of one frame cost
// one ranged read between them, and distinct frames are fetched concurrently,
// at most Concurrency at once. It fails as a whole, with the first error, as
// ReadPage would for that page.
func (r *Reader) ReadPages(ctx context.Context, keys []PageKey, locs []Location) ([][]byte, error) {
	if len(keys) != len(locs) {
		return nil, fmt.Errorf("read pages: %d keys but %d locations", len(keys), len(locs))
	}
	out := make([][]byte, len(keys))
	groups := make(map[frameRef][]int) // frame -> indexes of its pages in keys
	var order []frameRef               // frames in first-seen order, for a fair schedule
	for i, key := range keys {
		if page, ok := r.cache.Get(key); ok {
			out[i] = page
			continue
		}
		if err := r.check(locs[i]); err != nil {
			return nil, pageError(key, err)
		}
		ref := frameRef{locs[i].Segment, locs[i].FrameOffset, locs[i].FrameLength}
		if _, ok := groups[ref]; !ok {
			order = append(order, ref)
		}
		groups[ref] = append(groups[ref], i)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, r.Concurrency))
	for _, ref := range order {
		idx := groups[ref]
		g.Go(func() error {
			decoded, err := r.frame(gctx, ref)
			if err != nil {
				return pageError(keys[idx[0]], err)
			}
			for _, i := range idx {
				page, err := segment.PageInFrame(decoded, locs[i].PageOffset, r.pageSize, locs[i].Hash)
				if err != nil {
					return pageError(keys[i], fmt.Errorf("frame %s@%d: %w", ref.segment, ref.offset, err))
				}
				page = bytes.Clone(page)
				r.cache.Add(keys[i], page)
				out[i] = page // distinct i per goroutine: no race
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func pageError(key PageKey, err error) error {
	return fmt.Errorf("read page %d@%d of volume %d: %w", key.PageNo, key.Version, key.Volume, err)
}

// check refuses locations no encoder could have produced, before they reach
// the store.
func (r *Reader) check(loc Location) error {
	if !segment.ValidPageSize(r.pageSize) {
		return fmt.Errorf("%w: %d", segment.ErrInvalidPageSize, r.pageSize)
	}
	if loc.Segment == "" || loc.FrameOffset < segment.HeaderSize ||
		loc.FrameLength <= segment.FrameHeaderSize || loc.FrameLength > segment.MaxFrameLength ||
		loc.PageOffset < 0 || loc.PageOffset > segment.MaxFrameBytes-int64(r.pageSize) {
		return fmt.Errorf("%w: %+v", ErrInvalidLocation, loc)
	}
	return nil
}

// frame returns the decompressed, verified frame ref, fetching it unless a
// fetch of it is already in flight, in which case it waits for that one.
// The result is shared between callers and must not be modified.
func (r *Reader) frame(ctx context.Context, ref frameRef) ([]byte, error) {
	key := ref.flightKey()
	for attempt := 0; ; attempt++ {
		// DoChan rather than Do so that a caller whose context ends stops
		// waiting at once, even if the flight it joined goes on.
		ch := r.flights.DoChan(key, func() (any, error) {
			return r.fetchFrame(ctx, ref)
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case res := <-ch:
			if res.Err == nil {
				return res.Val.([]byte), nil
			}
			// The flight ran under the context of whichever caller
			// started it. If that context ended but ours has not,
			// the failure is not ours: fly again.
			if res.Shared && ctx.Err() == nil && attempt < maxFlightRetries &&
				(errors.Is(res.Err, context.Canceled) || errors.Is(res.Err, context.DeadlineExceeded)) {
				continue
			}
			return nil, res.Err
		}
	}
}

func (r *Reader) fetchFrame(ctx context.Context, ref frameRef) ([]byte, error) {
	data, err := r.store.ReadRange(ctx, ref.segment, ref.offset, ref.length)
	if err != nil {
		return nil, fmt.Errorf("read frame %s@%d: %w", ref.segment, ref.offset, err)
	}
	decoded, err := segment.DecodeFrame(data, r.pageSize)
	if err != nil {
		return nil, fmt.Errorf("decode frame %s@%d: %w", ref.segment, ref.offset, err)
	}
	return decoded, nil
}
