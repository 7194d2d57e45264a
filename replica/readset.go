package replica

import (
	"encoding/binary"
	"fmt"
)

// EncodeReadSet encodes an ascending, duplicate-free list of page numbers as
// ranges: uvarint range count, then per range uvarint(start − previous end)
// and uvarint(length − 1). A point lookup's {1, root, leaf} takes ~7 bytes.
func EncodeReadSet(pages []uint32) []byte {
	var runs [][2]uint32 // start, length
	for _, p := range pages {
		if n := len(runs); n > 0 && runs[n-1][0]+runs[n-1][1] == p {
			runs[n-1][1]++
			continue
		}
		runs = append(runs, [2]uint32{p, 1})
	}
	b := binary.AppendUvarint(nil, uint64(len(runs)))
	end := uint32(0)
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r[0]-end))
		b = binary.AppendUvarint(b, uint64(r[1]-1))
		end = r[0] + r[1]
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
