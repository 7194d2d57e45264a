package replica

import (
	"crypto/subtle"
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"
)

// A pending commit's pages are stored in its pending row as three blobs:
// the page numbers, ascending, in the read-set encoding (EncodeReadSet);
// the numbers of the pages stored as deltas, in the same encoding; and the
// pages' bytes in page-number order, concatenated and compressed as one S2
// block. One row per commit keeps the sidecar transaction to a few WAL
// frames: a 4 KiB page stored as a blob of its own takes an overflow page
// plus a share of a leaf, and each WAL frame costs two write system calls.
//
// A delta is the page XOR its previous version, the one the latest earlier
// pending commit that wrote it left: a one-row insert changes a few dozen
// bytes of a leaf and of page 1, so its XOR compresses to almost nothing
// and the row fits in a sidecar page with room to spare (issue #3). A
// commit stores a page as a delta only if a commit of the current redo log
// generation (since the log was last folded) wrote it and none cut it off
// since, so:
//
//   - the first commit after a checkpoint, which folds the log, has no
//     deltas, and Open decodes the commits after applied_seq from there;
//   - the oldest pending row has no deltas: MarkPushed, before it deletes
//     it, rewrites as whole pages the next deltas that refer to it.

// pageSetEncoder encodes page sets, and a commit's other blobs, reusing
// its buffers between calls.
type pageSetEncoder struct {
	numbers []uint32
	delta   []uint32
	nums    []byte
	deltas  []byte
	raw     []byte
	packed  []byte
	readSet []byte
	record  []byte
}

// encode returns the blobs for pages: their numbers, those of the pages
// stored as deltas, and the packed bytes. base returns the previous version
// of a page to store as a delta, or nil to store it whole. The blobs are
// valid until the next call.
func (e *pageSetEncoder) encode(pages map[uint32][]byte, base func(pgno uint32) []byte) (numbers, deltas, packed []byte) {
	e.numbers, e.delta = e.numbers[:0], e.delta[:0]
	for pgno := range pages {
		e.numbers = append(e.numbers, pgno)
	}
	slices.Sort(e.numbers)
	e.raw = e.raw[:0]
	for _, pgno := range e.numbers {
		p := pages[pgno]
		if b := base(pgno); len(b) == len(p) {
			n := len(e.raw)
			e.raw = append(e.raw, p...)
			subtle.XORBytes(e.raw[n:], e.raw[n:], b)
			e.delta = append(e.delta, pgno)
			continue
		}
		e.raw = append(e.raw, p...)
	}
	e.packed = s2.Encode(e.packed[:cap(e.packed)], e.raw)
	e.nums = appendReadSet(e.nums[:0], e.numbers)
	e.deltas = appendReadSet(e.deltas[:0], e.delta)
	return e.nums, e.deltas, e.packed
}

// encodeReadSet returns EncodeReadSet(pages), valid until the next call.
func (e *pageSetEncoder) encodeReadSet(pages []uint32) []byte {
	e.readSet = appendReadSet(e.readSet[:0], pages)
	return e.readSet
}

// encodeRecord returns rec.Encode(), valid until the next call.
func (e *pageSetEncoder) encodeRecord(rec *Record) []byte {
	e.record = rec.AppendEncode(e.record[:0])
	return e.record
}

// pageChain decodes pending commits in order: it holds, for each page
// written so far, its latest version, the base of the next delta.
type pageChain map[uint32][]byte

// decode is encode's inverse for the next commit in order: deltas are
// applied to the chain's versions, and the commit's pages become the
// chain's latest. The returned pages are the commit's own.
func (ch pageChain) decode(numbers, deltas, packed []byte, pageSize int) (map[uint32][]byte, error) {
	pages, delta, err := decodePageSet(numbers, deltas, packed, pageSize)
	if err != nil {
		return nil, err
	}
	for _, pgno := range delta {
		b, ok := ch[pgno]
		if !ok {
			return nil, fmt.Errorf("page %d is a delta of no earlier version: %w", pgno, ErrCorruptRecord)
		}
		subtle.XORBytes(pages[pgno], pages[pgno], b)
	}
	for pgno, p := range pages {
		ch[pgno] = p
	}
	return pages, nil
}

// decodePageSet undoes encode's packing: it returns the pages as stored,
// the deltas not yet applied, and the numbers of those stored as deltas.
func decodePageSet(numbers, deltas, packed []byte, pageSize int) (map[uint32][]byte, []uint32, error) {
	nums, err := DecodeReadSet(numbers)
	if err != nil {
		return nil, nil, fmt.Errorf("page numbers: %w", err)
	}
	delta, err := DecodeReadSet(deltas)
	if err != nil {
		return nil, nil, fmt.Errorf("delta page numbers: %w", err)
	}
	n, err := s2.DecodedLen(packed)
	if err != nil {
		return nil, nil, fmt.Errorf("pages: %w", err)
	}
	if n != len(nums)*pageSize {
		return nil, nil, fmt.Errorf("pages: %d bytes for %d pages of %d: %w", n, len(nums), pageSize, ErrCorruptRecord)
	}
	raw, err := s2.Decode(make([]byte, n), packed)
	if err != nil {
		return nil, nil, fmt.Errorf("pages: %w", err)
	}
	pages := make(map[uint32][]byte, len(nums))
	for i, pgno := range nums {
		pages[pgno] = raw[i*pageSize : (i+1)*pageSize : (i+1)*pageSize]
	}
	for _, pgno := range delta {
		if _, ok := pages[pgno]; !ok {
			return nil, nil, fmt.Errorf("delta page %d not in the page set: %w", pgno, ErrCorruptRecord)
		}
	}
	return pages, delta, nil
}

// packPageSet packs pages as stored (deltas already applied for the page
// numbers in delta), the inverse of decodePageSet.
func packPageSet(pages map[uint32][]byte, delta []uint32) (numbers, deltas, packed []byte) {
	nums := sortedKeys(pages)
	var raw []byte
	for _, pgno := range nums {
		raw = append(raw, pages[pgno]...)
	}
	return appendReadSet(nil, nums), appendReadSet(nil, delta), s2.Encode(nil, raw)
}
