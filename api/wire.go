// Package api is Cambium's HTTP protocol: the binary wire encoding of pushed
// commits and pulled pages, the server's handlers (mounted by cambiumd), and
// the Go client that replicas and the CLI use. Typed errors cross the wire as
// stable codes and come back as the same types, so errors.Is and errors.As
// work on both sides.
//
// Push body (application/x-cambium-push), all integers unsigned varints
// unless noted:
//
//	magic "CMBPUSH1" | count | count × ( length | commit[length] | crc32c(commit) uint32 BE )
//	commit = len(client id) client id | seq | parent | base | page size | page count
//	         | n | n × ( page no | page bytes[page size] )      pages ascending
//	         | r | r × ( gap | run )                            read set as runs: the first run
//	                                                           starts at 1 + gap, each next one
//	                                                           gap pages after the previous
//	         | len(record) record
//
// The CRC-32C (Castagnoli) of each commit frame is its checksum: the server
// stores it with the commit and refuses a frame that does not match.
//
// Page stream (application/x-cambium-pages), the body of a pull or a page read:
//
//	magic "CMBPAGE1" | page size | head | page count
//	| k × ( page no | version | page bytes[page size] | crc32c(page bytes) uint32 BE )
//	| 0 | k
//
// The zero page number ends the stream and k repeats the count, so a
// truncated stream is detected, never mistaken for a shorter one.
package api

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cambiumdb/cambium/commit"
)

// Limits on what a decoder accepts, so a hostile body cannot make it
// allocate beyond what it was sent.
const (
	MaxBatchCommits = 10_000
	MaxPageSize     = 65536
	MaxRecordBytes  = 16 << 20
	pushMagic       = "CMBPUSH1"
	maxPageNo       = 1<<32 - 2 // SQLite's largest page number
	pagesMagic      = "CMBPAGE1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrMalformed is what every decoding failure Is: the body is truncated,
// corrupt or not ours. Nothing was stored.
var ErrMalformed = errors.New("malformed body")

// MalformedError says where and why a body could not be decoded.
type MalformedError struct {
	Offset int64
	Reason string
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed body at byte %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// Checksum returns the CRC-32C of b, the checksum of a commit frame.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// AppendPush appends the push encoding of reqs to dst. Each request's
// Checksum field is ignored and computed afresh.
func AppendPush(dst []byte, reqs []commit.Request) []byte {
	dst = append(dst, pushMagic...)
	dst = binary.AppendUvarint(dst, uint64(len(reqs)))
	var frame []byte
	for i := range reqs {
		frame = appendCommit(frame[:0], &reqs[i])
		dst = binary.AppendUvarint(dst, uint64(len(frame)))
		dst = append(dst, frame...)
		dst = binary.BigEndian.AppendUint32(dst, Checksum(frame))
	}
	return dst
}

func appendCommit(b []byte, r *commit.Request) []byte {
	b = binary.AppendUvarint(b, uint64(len(r.ClientID)))
	b = append(b, r.ClientID...)
	for _, v := range []uint64{uint64(r.Seq), uint64(r.Parent), uint64(r.Base), uint64(r.PageSize), uint64(r.PageCount), uint64(len(r.Pages))} {
		b = binary.AppendUvarint(b, v)
	}
	for _, p := range r.Pages {
		b = binary.AppendUvarint(b, uint64(p.No))
		b = append(b, p.Data...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.ReadSet)))
	var end uint64 = 1 // one past the previous run; page numbers start at 1
	for _, rg := range r.ReadSet {
		b = binary.AppendUvarint(b, uint64(rg.First)-end)
		b = binary.AppendUvarint(b, uint64(rg.Count))
		end = uint64(rg.First) + uint64(rg.Count)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Record)))
	return append(b, r.Record...)
}

// decoder reads varints and byte runs from a buffer, remembering the first
// error so call sites stay linear.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, a ...any) {
	if d.err == nil {
		d.err = &MalformedError{Offset: int64(d.off), Reason: fmt.Sprintf(format, a...)}
	}
}

func (d *decoder) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("%s: truncated or overlong varint", what)
		return 0
	}
	if n != uvarintLen(v) {
		d.fail("%s: non-minimal varint", what)
		return 0
	}
	if v > max {
		d.fail("%s %d exceeds %d", what, v, max)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes(what string, n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("%s: %d bytes wanted, %d left", what, n, len(d.b)-d.off)
		return nil
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v
}

// uvarintLen is the length of v's minimal varint encoding. Decoders refuse
// longer ones, so every value has one encoding and a body that decodes
// re-encodes to the same bytes.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// DecodePush decodes a push body into requests, each with the checksum the
// client sent. A frame whose CRC does not match is a *commit.ChecksumError;
// any other defect is a *MalformedError. The returned pages alias body.
func DecodePush(body []byte) ([]commit.Request, error) {
	d := &decoder{b: body}
	if string(d.bytes("magic", uint64(len(pushMagic)))) != pushMagic {
		d.err = nil
		return nil, &MalformedError{Reason: "not a Cambium push body (bad magic)"}
	}
	n := d.uvarint("commit count", MaxBatchCommits)
	if d.err != nil {
		return nil, d.err
	}
	reqs := make([]commit.Request, 0, min(n, uint64(len(body))))
	for i := uint64(0); i < n; i++ {
		size := d.uvarint("commit length", uint64(len(body)))
		start := d.off
		frame := d.bytes("commit", size)
		sum := d.bytes("checksum", 4)
		if d.err != nil {
			return nil, d.err
		}
		r, err := decodeCommit(frame, int64(start))
		if err != nil {
			return nil, err
		}
		r.Checksum = binary.BigEndian.Uint32(sum)
		if got := Checksum(frame); got != r.Checksum {
			return nil, &commit.ChecksumError{Seq: r.Seq, Got: got, Want: r.Checksum}
		}
		reqs = append(reqs, r)
	}
	if d.off != len(body) {
		return nil, &MalformedError{Offset: int64(d.off), Reason: fmt.Sprintf("%d bytes after the last commit", len(body)-d.off)}
	}
	return reqs, nil
}

func decodeCommit(frame []byte, base int64) (commit.Request, error) {
	d := &decoder{b: frame}
	var r commit.Request
	r.ClientID = string(d.bytes("client id", d.uvarint("client id length", commit.MaxClientIDLen)))
	r.Seq = int64(d.uvarint("seq", 1<<62))
	r.Parent = int64(d.uvarint("parent", 1<<62))
	r.Base = int64(d.uvarint("base", 1<<62))
	r.PageSize = int(d.uvarint("page size", MaxPageSize))
	r.PageCount = uint32(d.uvarint("page count", 1<<32-1))
	np := d.uvarint("page total", uint64(r.PageCount))
	if d.err == nil && r.PageSize > 0 && np > uint64(len(frame)/r.PageSize) {
		d.fail("%d pages of %d bytes cannot fit in %d bytes", np, r.PageSize, len(frame))
	}
	if d.err == nil && np > 0 && r.PageSize == 0 {
		d.fail("pages with page size 0")
	}
	if d.err == nil && np > 0 {
		r.Pages = make([]commit.Page, 0, np)
	}
	for i := uint64(0); i < np && d.err == nil; i++ {
		no := uint32(d.uvarint("page number", uint64(r.PageCount)))
		r.Pages = append(r.Pages, commit.Page{No: no, Data: d.bytes("page", uint64(r.PageSize))})
	}
	// Each run costs at least two bytes, so the count is bounded by the
	// frame; runs are kept as ranges, never expanded.
	nruns := d.uvarint("read set runs", uint64(len(frame)/2))
	if d.err == nil && nruns > 0 {
		r.ReadSet = make([]commit.PageRange, 0, nruns)
	}
	var next uint64 = 1 // one past the previous run
	for i := uint64(0); i < nruns && d.err == nil; i++ {
		gap := d.uvarint("read set gap", maxPageNo)
		run := d.uvarint("read set run", maxPageNo)
		first := next + gap
		if d.err == nil && (run == 0 || first+run-1 > maxPageNo) {
			d.fail("read set run of %d pages from page %d: want 1 or more pages within 1..%d", run, first, uint64(maxPageNo))
		}
		r.ReadSet = append(r.ReadSet, commit.PageRange{First: uint32(first), Count: uint32(run)})
		next = first + run
	}
	if n := d.uvarint("record length", MaxRecordBytes); n > 0 {
		r.Record = d.bytes("record", n)
	}
	if d.err == nil && d.off != len(frame) {
		d.fail("%d bytes after the record", len(frame)-d.off)
	}
	if d.err != nil {
		var m *MalformedError
		if errors.As(d.err, &m) {
			m.Offset += base
		}
		return commit.Request{}, d.err
	}
	return r, nil
}

// PageStreamHeader opens a page stream.
type PageStreamHeader struct {
	PageSize  int
	Head      int64  // the version the stream brings the reader to
	PageCount uint32 // database size in pages at Head
}

// StreamedPage is one page of a page stream.
type StreamedPage struct {
	No      uint32
	Version int64 // the version that wrote these bytes
	Data    []byte
}

// PageWriter writes a page stream.
type PageWriter struct {
	w        *bufio.Writer
	pageSize int
	n        uint64
	buf      []byte
}

// NewPageWriter writes the stream header to w.
func NewPageWriter(w io.Writer, h PageStreamHeader) (*PageWriter, error) {
	pw := &PageWriter{w: bufio.NewWriterSize(w, 64<<10), pageSize: h.PageSize}
	b := append([]byte(pagesMagic), binary.AppendUvarint(nil, uint64(h.PageSize))...)
	b = binary.AppendUvarint(b, uint64(h.Head))
	b = binary.AppendUvarint(b, uint64(h.PageCount))
	_, err := pw.w.Write(b)
	return pw, err
}

// Write appends one page; len(p.Data) must be the page size.
func (pw *PageWriter) Write(p StreamedPage) error {
	if p.No == 0 || len(p.Data) != pw.pageSize {
		return fmt.Errorf("write page %d: %d bytes, page size %d", p.No, len(p.Data), pw.pageSize)
	}
	b := binary.AppendUvarint(pw.buf[:0], uint64(p.No))
	b = binary.AppendUvarint(b, uint64(p.Version))
	b = append(b, p.Data...)
	b = binary.BigEndian.AppendUint32(b, Checksum(p.Data))
	pw.buf = b
	pw.n++
	_, err := pw.w.Write(b)
	return err
}

// Close writes the end marker and flushes; it does not close the writer.
func (pw *PageWriter) Close() error {
	b := binary.AppendUvarint([]byte{0}, pw.n)
	if _, err := pw.w.Write(b); err != nil {
		return err
	}
	return pw.w.Flush()
}

// PageReader reads a page stream.
type PageReader struct {
	r      *bufio.Reader
	Header PageStreamHeader
	n      uint64
	off    int64
	done   bool
}

// NewPageReader reads and checks the stream header.
func NewPageReader(r io.Reader) (*PageReader, error) {
	pr := &PageReader{r: bufio.NewReaderSize(r, 64<<10)}
	magic := make([]byte, len(pagesMagic))
	if _, err := io.ReadFull(pr.r, magic); err != nil || string(magic) != pagesMagic {
		return nil, &MalformedError{Reason: "not a Cambium page stream (bad magic)"}
	}
	pr.off = int64(len(magic))
	ps, err := pr.uvarint("page size", MaxPageSize)
	if err != nil {
		return nil, err
	}
	if ps < 512 || ps&(ps-1) != 0 {
		return nil, &MalformedError{Offset: pr.off, Reason: fmt.Sprintf("page size %d", ps)}
	}
	head, err := pr.uvarint("head", 1<<62)
	if err != nil {
		return nil, err
	}
	count, err := pr.uvarint("page count", 1<<32-1)
	if err != nil {
		return nil, err
	}
	pr.Header = PageStreamHeader{PageSize: int(ps), Head: int64(head), PageCount: uint32(count)}
	return pr, nil
}

func (pr *PageReader) uvarint(what string, max uint64) (uint64, error) {
	start := pr.off
	v, err := binary.ReadUvarint(byteCounter{pr})
	if err != nil {
		return 0, &MalformedError{Offset: pr.off, Reason: what + ": truncated or overlong varint"}
	}
	if int(pr.off-start) != uvarintLen(v) {
		return 0, &MalformedError{Offset: start, Reason: what + ": non-minimal varint"}
	}
	if v > max {
		return 0, &MalformedError{Offset: pr.off, Reason: fmt.Sprintf("%s %d exceeds %d", what, v, max)}
	}
	return v, nil
}

type byteCounter struct{ pr *PageReader }

func (b byteCounter) ReadByte() (byte, error) {
	c, err := b.pr.r.ReadByte()
	if err == nil {
		b.pr.off++
	}
	return c, err
}

// Next returns the next page, or io.EOF after the end marker. A stream that
// ends early or is damaged is a *MalformedError. The page's Data is freshly
// allocated.
func (pr *PageReader) Next() (StreamedPage, error) {
	if pr.done {
		return StreamedPage{}, io.EOF
	}
	no, err := pr.uvarint("page number", uint64(pr.Header.PageCount))
	if err != nil {
		return StreamedPage{}, err
	}
	if no == 0 {
		n, err := pr.uvarint("page total", 1<<62)
		if err != nil {
			return StreamedPage{}, err
		}
		if n != pr.n {
			return StreamedPage{}, &MalformedError{Offset: pr.off, Reason: fmt.Sprintf("stream says %d pages, read %d", n, pr.n)}
		}
		pr.done = true
		return StreamedPage{}, io.EOF
	}
	version, err := pr.uvarint("version", uint64(pr.Header.Head))
	if err != nil {
		return StreamedPage{}, err
	}
	data := make([]byte, pr.Header.PageSize+4)
	if _, err := io.ReadFull(pr.r, data); err != nil {
		return StreamedPage{}, &MalformedError{Offset: pr.off, Reason: fmt.Sprintf("page %d truncated", no)}
	}
	pr.off += int64(len(data))
	page, sum := data[:pr.Header.PageSize], binary.BigEndian.Uint32(data[pr.Header.PageSize:])
	if Checksum(page) != sum {
		return StreamedPage{}, &MalformedError{Offset: pr.off, Reason: fmt.Sprintf("page %d checksum mismatch", no)}
	}
	pr.n++
	return StreamedPage{No: uint32(no), Version: int64(version), Data: page}, nil
}
