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
	d := decoder{b: b}
	n := d.count(2)
	var out []uint32
	end := uint64(0)
	for i := 0; i < n && d.err == nil; i++ {
		start := end + d.uvarint()
		length := d.uvarint() + 1
		if d.err != nil {
			break
		}
		if start+length-1 > 1<<32-1 || start == 0 {
			d.fail(fmt.Sprintf("range %d+%d out of page range", start, length))
			break
		}
		if length > 1<<24 {
			d.fail("range too long")
			break
		}
		for p := start; p < start+length; p++ {
			out = append(out, uint32(p))
		}
		end = start + length
	}
	if d.err == nil && d.off != len(b) {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

// decoder reads uvarints from b, recording the first error and returning
// zero values after it (the record decoder's twin, in package replay).
type decoder struct {
	b   []byte
	off int
	err *DecodeError
}

func (d *decoder) fail(reason string) {
	if d.err == nil {
		d.err = &DecodeError{Offset: d.off, Reason: reason}
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.off += n
	return v
}

// count reads an element count and rejects one that the remaining bytes
// cannot hold (each element takes at least min bytes).
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64((len(d.b)-d.off)/min) {
		d.fail("count past the end")
		return 0
	}
	return int(n)
}
