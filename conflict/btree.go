package conflict

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// The b-tree page format, as in https://www.sqlite.org/fileformat2.html#b_tree_pages.
// Every function here checks bounds against the usable size and reports a
// *CorruptError instead of indexing out of range.

// B-tree page types, the first byte of the b-tree page header.
const (
	indexInterior = 0x02
	tableInterior = 0x05
	indexLeaf     = 0x0a
	tableLeaf     = 0x0d
)

// minUsable is the smallest usable size SQLite accepts ("the usable size is
// not allowed to be less than 480").
const minUsable = 480

// varint decodes a SQLite varint (1–9 bytes, big-endian, the ninth byte
// contributing all 8 bits). n is 0 when b ends first.
func varint(b []byte) (v uint64, n int) {
	for i := 0; i < 8; i++ {
		if i >= len(b) {
			return 0, 0
		}
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	if len(b) < 9 {
		return 0, 0
	}
	return v<<8 | uint64(b[8]), 9
}

// btreePage is one parsed b-tree page.
type btreePage struct {
	pgno    uint32
	data    []byte
	usable  int
	hdr     int // offset of the b-tree page header: 100 on page 1, else 0
	kind    byte
	ncells  int
	cellPtr int // offset of the cell pointer array
}

func (p *btreePage) leaf() bool  { return p.kind == tableLeaf || p.kind == indexLeaf }
func (p *btreePage) table() bool { return p.kind == tableLeaf || p.kind == tableInterior }

// parsePage parses the b-tree page header of page pgno.
func parsePage(pgno uint32, data []byte, usable int) (*btreePage, error) {
	p := &btreePage{pgno: pgno, data: data, usable: usable}
	if pgno == 1 {
		p.hdr = hdrSize
	}
	if p.hdr+12 > usable {
		return nil, corrupt(pgno, "page too small for a b-tree header")
	}
	p.kind = data[p.hdr]
	hdrLen := 12
	switch p.kind {
	case tableLeaf, indexLeaf:
		hdrLen = 8
	case tableInterior, indexInterior:
	default:
		return nil, corrupt(pgno, fmt.Sprintf("page type 0x%02x is not a b-tree page", p.kind))
	}
	p.ncells = int(binary.BigEndian.Uint16(data[p.hdr+3:]))
	p.cellPtr = p.hdr + hdrLen
	if p.cellPtr+2*p.ncells > usable {
		return nil, corrupt(pgno, fmt.Sprintf("%d cells do not fit", p.ncells))
	}
	return p, nil
}

// cell returns the offset of cell i.
func (p *btreePage) cell(i int) (int, error) {
	off := int(binary.BigEndian.Uint16(p.data[p.cellPtr+2*i:]))
	if off < p.cellPtr+2*p.ncells || off >= p.usable {
		return 0, corrupt(p.pgno, fmt.Sprintf("cell %d at offset %d is outside the cell content area", i, off))
	}
	return off, nil
}

// children returns the child pages of an interior page: each cell's left
// child, then the right-most pointer (header offset 8).
func (p *btreePage) children() ([]uint32, error) {
	out := make([]uint32, 0, p.ncells+1)
	for i := 0; i < p.ncells; i++ {
		off, err := p.cell(i)
		if err != nil {
			return nil, err
		}
		if off+4 > p.usable {
			return nil, corrupt(p.pgno, fmt.Sprintf("cell %d runs past the page", i))
		}
		out = append(out, binary.BigEndian.Uint32(p.data[off:]))
	}
	return append(out, binary.BigEndian.Uint32(p.data[p.hdr+8:])), nil
}

// payload returns cell i's payload: its total size, the bytes stored on
// this page, and the first overflow page (0 if the payload fits). Table
// interior cells have no payload.
func (p *btreePage) payload(i int) (total uint64, local []byte, overflow uint32, err error) {
	off, err := p.cell(i)
	if err != nil {
		return 0, nil, 0, err
	}
	b := p.data[off:p.usable]
	if p.kind == indexInterior {
		if len(b) < 4 {
			return 0, nil, 0, corrupt(p.pgno, fmt.Sprintf("cell %d runs past the page", i))
		}
		b = b[4:] // left child
	}
	total, n := varint(b)
	if n == 0 {
		return 0, nil, 0, corrupt(p.pgno, fmt.Sprintf("cell %d: truncated payload size", i))
	}
	b = b[n:]
	if p.kind == tableLeaf {
		if _, n = varint(b); n == 0 {
			return 0, nil, 0, corrupt(p.pgno, fmt.Sprintf("cell %d: truncated rowid", i))
		}
		b = b[n:]
	}
	size := localSize(total, p.usable, p.kind == tableLeaf)
	if size > uint64(len(b)) || size < total && size+4 > uint64(len(b)) {
		return 0, nil, 0, corrupt(p.pgno, fmt.Sprintf("cell %d: payload runs past the page", i))
	}
	local = b[:size]
	if size < total {
		overflow = binary.BigEndian.Uint32(b[size:])
	}
	return total, local, overflow, nil
}

// localSize is how many of a payload's total bytes a cell keeps on its
// page; the rest spills to overflow pages
// (https://www.sqlite.org/fileformat2.html#b_tree_pages, "cell payload
// overflow"). usable must be at least minUsable.
func localSize(total uint64, usable int, tableLeaf bool) uint64 {
	u := uint64(usable)
	x := (u-12)*64/255 - 23
	if tableLeaf {
		x = u - 35
	}
	if total <= x {
		return total
	}
	m := (u-12)*32/255 - 23
	if k := m + (total-m)%(u-4); k <= x {
		return k
	}
	return m
}

// schemaRow is one row of sqlite_schema, its first four columns.
type schemaRow struct {
	typ, name, tblName string
	rootPage           int64
}

// decodeSchemaRow decodes the first four columns of a sqlite_schema record
// (type, name, tbl_name, rootpage; https://www.sqlite.org/fileformat2.html#record_format).
// rec may be a prefix of the record, as long as it holds those columns.
// enc is the header's text encoding (1 UTF-8, 2 UTF-16le, 3 UTF-16be).
func decodeSchemaRow(rec []byte, enc uint32) (schemaRow, error) {
	var row schemaRow
	hdrLen, n := varint(rec)
	if n == 0 || hdrLen < uint64(n) || hdrLen > uint64(len(rec)) {
		return row, fmt.Errorf("record header of %d bytes", hdrLen)
	}
	types := rec[n:hdrLen]
	body := rec[hdrLen:]
	var cols [4][]byte
	var serial [4]uint64
	for i := range cols {
		t, n := varint(types)
		if n == 0 {
			return row, fmt.Errorf("record has %d columns", i)
		}
		types = types[n:]
		size, ok := serialSize(t)
		if !ok {
			return row, fmt.Errorf("column %d: serial type %d", i, t)
		}
		if size > uint64(len(body)) {
			return row, fmt.Errorf("column %d: %d bytes, %d left", i, size, len(body))
		}
		cols[i], serial[i], body = body[:size], t, body[size:]
	}
	row.typ, row.name, row.tblName = text(cols[0], enc), text(cols[1], enc), text(cols[2], enc)
	switch t := serial[3]; {
	case t >= 1 && t <= 6:
		v := int64(0)
		if cols[3][0]&0x80 != 0 {
			v = -1
		}
		for _, c := range cols[3] {
			v = v<<8 | int64(c)
		}
		row.rootPage = v
	case t == 9:
		row.rootPage = 1
	}
	return row, nil
}

// serialSize is the body size of a record column of serial type t.
func serialSize(t uint64) (uint64, bool) {
	switch {
	case t <= 4:
		return t, true
	case t == 5:
		return 6, true
	case t == 6 || t == 7:
		return 8, true
	case t == 8 || t == 9:
		return 0, true
	case t == 10 || t == 11:
		return 0, false
	}
	return (t - 12) / 2, true
}

// text decodes a text column in the database's encoding.
func text(b []byte, enc uint32) string {
	if enc != 2 && enc != 3 {
		return string(b)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		if enc == 2 {
			u[i] = binary.LittleEndian.Uint16(b[2*i:])
		} else {
			u[i] = binary.BigEndian.Uint16(b[2*i:])
		}
	}
	return string(utf16.Decode(u))
}

// pageSet is a set of page numbers, a bitmap in chunks of 65536 pages so
// that walking a large database costs a bit per page, not a map entry.
type pageSet map[uint32]*[1024]uint64

// add adds p and reports whether it was not there yet.
func (s pageSet) add(p uint32) bool {
	c := s[p>>16]
	if c == nil {
		c = new([1024]uint64)
		s[p>>16] = c
	}
	w, bit := &c[(p&0xffff)>>6], uint64(1)<<(p&63)
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}
