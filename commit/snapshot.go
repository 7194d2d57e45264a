package commit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cambiumdb/cambium/conflict"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/vfs"
)

// PageReader reads stored pages by location, verified and cached (the
// server's pages.Reader per page size).
type PageReader interface {
	ReadPages(ctx context.Context, pageSize int, keys []pages.PageKey, locs []pages.Location) ([][]byte, error)
}

// snapshot is one volume as a group decides it: the stored history up to the
// locked head, plus the commits this group accepted on top, which are not
// stored yet. Stored versions are committed and immutable, so they are read
// through the metastore and the page store outside the group's transaction.
type snapshot struct {
	c   *Committer
	vol pgschema.Volume // as locked: Head and PageCount are the stored head's

	pending []pendingVersion // accepted in this group, ascending
	overlay map[uint32][]byte
	head    int64
	count   uint32
}

// pendingVersion is a version this group accepted.
type pendingVersion struct {
	version int64
	count   uint32
	pages   []Page
}

func newSnapshot(c *Committer, vol pgschema.Volume) *snapshot {
	return &snapshot{c: c, vol: vol, head: vol.Head, count: vol.PageCount, overlay: map[uint32][]byte{}}
}

// push adds a version accepted in this group.
func (s *snapshot) push(version int64, count uint32, ps []Page) {
	s.pending = append(s.pending, pendingVersion{version: version, count: count, pages: ps})
	for _, p := range ps {
		s.overlay[p.No] = p.Data
	}
	s.head, s.count = version, count
}

// changedSince returns the pages written by versions base+1..head with the
// newest version that wrote each, in page order, from the page index and
// this group's accepted commits; it reads no page bytes.
func (s *snapshot) changedSince(ctx context.Context, base int64) ([]conflict.Change, error) {
	newest := map[uint32]int64{}
	if base < s.vol.Head {
		refs, err := s.c.meta.ChangedPages(ctx, s.vol.ID, base, s.vol.Head)
		if err != nil {
			return nil, fmt.Errorf("pages changed in (%d, %d] of volume %d: %w", base, s.vol.Head, s.vol.ID, err)
		}
		for _, r := range refs {
			newest[r.PageNo] = r.Version
		}
	}
	for _, pv := range s.pending {
		if pv.version <= base {
			continue
		}
		for _, p := range pv.pages {
			newest[p.No] = pv.version
		}
	}
	out := make([]conflict.Change, 0, len(newest))
	for no, v := range newest {
		out = append(out, conflict.Change{Page: no, Version: v})
	}
	slices.SortFunc(out, func(a, b conflict.Change) int { return int(int64(a.Page) - int64(b.Page)) })
	return out, nil
}

// page1At returns the page count and page 1 of version v (0 and nil for
// the empty version 0).
func (s *snapshot) page1At(ctx context.Context, v int64) (uint32, []byte, error) {
	if v == 0 {
		return 0, nil, nil
	}
	if v > s.vol.Head {
		var count uint32
		for i := len(s.pending) - 1; i >= 0; i-- {
			pv := s.pending[i]
			if pv.version > v {
				continue
			}
			if count == 0 {
				count = pv.count
			}
			for _, p := range pv.pages {
				if p.No == 1 {
					return count, p.Data, nil
				}
			}
		}
		p1, err := s.readStored(ctx, 1, s.vol.Head)
		return count, p1, err
	}
	if v == s.vol.Head && s.vol.PageCount == 0 {
		return 0, nil, nil
	}
	p1, err := s.readStored(ctx, 1, v)
	if errors.Is(err, pgschema.ErrPageNotFound) {
		return 0, nil, nil // an empty version
	}
	if err != nil {
		return 0, nil, err
	}
	if v == s.vol.Head {
		return s.vol.PageCount, p1, nil
	}
	// A committed page 1 carries its version's page count (bytes 28-31,
	// valid since the commit wrote both change counters alike): no query
	// for the commit row. conflict.Detect checks the header either way.
	return binary.BigEndian.Uint32(p1[28:32]), p1, nil
}

// readStored reads page pgno of stored version v.
func (s *snapshot) readStored(ctx context.Context, pgno uint32, v int64) ([]byte, error) {
	ref, err := s.c.meta.PageAt(ctx, s.vol.ID, pgno, v)
	if err != nil {
		return nil, fmt.Errorf("page %d of volume %d at version %d: %w", pgno, s.vol.ID, v, err)
	}
	return s.readRef(ctx, ref)
}

// readRef reads the page an index row points at, through the page cache.
func (s *snapshot) readRef(ctx context.Context, ref pgschema.PageRef) ([]byte, error) {
	key := pages.PageKey{Volume: s.vol.ID, PageNo: ref.PageNo, Version: ref.Version}
	got, err := s.c.Pages.ReadPages(ctx, s.vol.PageSize, []pages.PageKey{key}, []pages.Location{ref.Location})
	if err != nil {
		return nil, err
	}
	if len(got) != 1 || len(got[0]) != s.vol.PageSize {
		return nil, fmt.Errorf("page %d of volume %d version %d: read %d pages", ref.PageNo, s.vol.ID, ref.Version, len(got))
	}
	return got[0], nil
}

// source serves the snapshot at its current head to the replay engine,
// page by page: a replay that touches 5 pages reads about 5 pages. hint
// lists pages the replay will likely read (the client's read set): the
// first page read from the store looks up all of their locations in one
// query rather than one query per page.
func (s *snapshot) source(ctx context.Context, hint []uint32) vfs.PageSource {
	return &snapshotSource{s: s, ctx: ctx, head: s.head, count: s.count, hint: hint}
}

type snapshotSource struct {
	s     *snapshot
	ctx   context.Context
	head  int64
	count uint32
	hint  []uint32
	refs  map[uint32]pgschema.PageRef // locations at the stored head, once looked up
}

// maxHint bounds how many hinted pages one lookup asks for.
const maxHint = 256

// storedRef returns where page pgno of the stored head lives. The first
// call looks up the hinted pages with it in one query; a page outside the
// hint costs a query of its own.
func (src *snapshotSource) storedRef(pgno uint32) (pgschema.PageRef, error) {
	if src.refs == nil {
		want := []uint32{pgno}
		for _, p := range src.hint {
			if len(want) >= maxHint {
				break
			}
			if p != pgno && p <= src.s.vol.PageCount {
				if _, pending := src.s.overlay[p]; !pending {
					want = append(want, p)
				}
			}
		}
		slices.Sort(want)
		want = slices.Compact(want)
		refs, err := src.s.c.meta.PagesAt(src.ctx, src.s.vol.ID, src.s.vol.Head, want)
		if err != nil {
			return pgschema.PageRef{}, fmt.Errorf("pages of volume %d at version %d: %w", src.s.vol.ID, src.s.vol.Head, err)
		}
		src.refs = make(map[uint32]pgschema.PageRef, len(refs))
		for _, r := range refs {
			src.refs[r.PageNo] = r
		}
	}
	if ref, ok := src.refs[pgno]; ok {
		return ref, nil
	}
	ref, err := src.s.c.meta.PageAt(src.ctx, src.s.vol.ID, pgno, src.s.vol.Head)
	if err != nil {
		return ref, fmt.Errorf("page %d of volume %d at version %d: %w", pgno, src.s.vol.ID, src.s.vol.Head, err)
	}
	src.refs[pgno] = ref
	return ref, nil
}

var _ vfs.PageSource = (*snapshotSource)(nil)

func (src *snapshotSource) PageSize() int { return src.s.vol.PageSize }

func (src *snapshotSource) PageCount(context.Context) (uint32, error) { return src.count, nil }

func (src *snapshotSource) ReadPage(_ context.Context, pgno uint32, p []byte) error {
	if pgno == 0 || pgno > src.count {
		return fmt.Errorf("page %d beyond page count %d", pgno, src.count)
	}
	if data, ok := src.s.overlay[pgno]; ok {
		copy(p, data)
		return nil
	}
	ref, err := src.storedRef(pgno)
	if errors.Is(err, pgschema.ErrPageNotFound) {
		// Within the page count but never written: SQLite never makes such
		// a file, so this is damage, not a page of zeros.
		return fmt.Errorf("volume %d version %d: %w", src.s.vol.ID, src.head, err)
	}
	if err != nil {
		return err
	}
	data, err := src.s.readRef(src.ctx, ref)
	if err != nil {
		return err
	}
	copy(p, data)
	return nil
}
