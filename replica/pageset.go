package replica

import (
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"
)

// A pending commit's pages are stored in its pending row as two blobs: the
// page numbers, ascending, in the read-set encoding (EncodeReadSet), and the
// pages' bytes in that order, concatenated and compressed as one S2 block.
// One row per commit keeps the sidecar transaction to a few WAL frames:
// a 4 KiB page stored as a blob of its own takes an overflow page plus a
// share of a leaf, and each WAL frame costs two write system calls.

// pageSetEncoder encodes page sets, and a commit's other blobs, reusing
// its buffers between calls.
type pageSetEncoder struct {
	numbers []uint32
	nums    []byte
	raw     []byte
	packed  []byte
	readSet []byte
	record  []byte
}

// encode returns the two blobs for pages; they are valid until the next call.
func (e *pageSetEncoder) encode(pages map[uint32][]byte) (numbers, packed []byte) {
	e.numbers = e.numbers[:0]
	for pgno := range pages {
		e.numbers = append(e.numbers, pgno)
	}
	slices.Sort(e.numbers)
	e.raw = e.raw[:0]
	for _, pgno := range e.numbers {
		e.raw = append(e.raw, pages[pgno]...)
	}
	e.packed = s2.Encode(e.packed[:cap(e.packed)], e.raw)
	e.nums = appendReadSet(e.nums[:0], e.numbers)
	return e.nums, e.packed
}

// encodeReadSet returns EncodeReadSet(pages), valid until the next call.
func (e *pageSetEncoder) encodeReadSet(pages []uint32) []byte {
	e.readSet = appendReadSet(e.readSet[:0], pages)
	return e.readSet
}

// encodeRecord returns rec.Encode(), valid until the next call.
func (e *pageSetEncoder) encodeRecord(rec *Record) []byte {
	e.record = rec.appendEncode(e.record[:0])
	return e.record
}

// decodePageSet is encode's inverse.
func decodePageSet(numbers, packed []byte, pageSize int) (map[uint32][]byte, error) {
	nums, err := DecodeReadSet(numbers)
	if err != nil {
		return nil, fmt.Errorf("page numbers: %w", err)
	}
	n, err := s2.DecodedLen(packed)
	if err != nil {
		return nil, fmt.Errorf("pages: %w", err)
	}
	if n != len(nums)*pageSize {
		return nil, fmt.Errorf("pages: %d bytes for %d pages of %d: %w", n, len(nums), pageSize, ErrCorruptRecord)
	}
	raw, err := s2.Decode(make([]byte, n), packed)
	if err != nil {
		return nil, fmt.Errorf("pages: %w", err)
	}
	pages := make(map[uint32][]byte, len(nums))
	for i, pgno := range nums {
		pages[pgno] = raw[i*pageSize : (i+1)*pageSize : (i+1)*pageSize]
	}
	return pages, nil
}
