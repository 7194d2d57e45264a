package replica

import (
	"encoding/binary"
	"fmt"
)

// EncodeReadSet encodes an ascending, duplicate-free list of page numbers as
// ranges: uvarint range count, then per range uvarint(start − previous end)
// and uvarint(length − 1). A point lookup's {1, root, leaf} takes ~7 bytes.
func EncodeReadSet(pages []uint32) []byte { return appendReadSet(nil, pages) }

// appendReadSet appends EncodeReadSet's output to b.
func appendReadSet(b []byte, pages []uint32) []byte {
	runs := 0
	for i, p := range pages {
		if i == 0 || pages[i-1]+1 != p {
			runs++
		}
	}
	b = binary.AppendUvarint(b, uint64(runs))
	end := uint32(0)
	for i := 0; i < len(pages); {
		start, n := pages[i], uint32(1)
		for i+int(n) < len(pages) && pages[i+int(n)] == start+n {
			n++
		}
		b = binary.AppendUvarint(b, uint64(start-end))
		b = binary.AppendUvarint(b, uint64(n-1))
		end = start + n
		i += int(n)
	}
	return b
}

// DecodeReadSet decodes EncodeReadSet's output; errors are *DecodeError.
func DecodeReadSet(b []byte) ([]uint32, error) {
	off := 0
	fail := func(reason string) ([]uint32, error) { return nil, &DecodeError{Offset: off, Reason: reason} }
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b[off:])
		if n <= 0 {
			return 0, false
		}
		off += n
		return v, true
	}
	n, ok := next()
	switch {
	case !ok:
		return fail("bad uvarint")
	case n > uint64((len(b)-off)/2): // each range takes at least 2 bytes
		return fail("count past the end")
	}
	var out []uint32
	end := uint64(0)
	for range n {
		gap, ok1 := next()
		extra, ok2 := next()
		if !ok1 || !ok2 {
			return fail("bad uvarint")
		}
		if gap > 1<<32 || extra >= 1<<24 {
			return fail(fmt.Sprintf("range +%d, %d pages: too far or too long", gap, extra+1))
		}
		start, length := end+gap, extra+1
		if start == 0 || start+length-1 > 1<<32-1 {
			return fail(fmt.Sprintf("range %d+%d out of page range", start, length))
		}
		for p := start; p < start+length; p++ {
			out = append(out, uint32(p))
		}
		end = start + length
	}
	if off != len(b) {
		return fail("trailing bytes")
	}
	return out, nil
}
