package segment

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// CorruptError reports bytes that are not a valid segment or frame: a bad
// magic or checksum, a length that does not fit, an index that disagrees with
// the frames. It matches ErrCorrupt.
type CorruptError struct {
	Offset int64  // where the problem was found, in the bytes given to the decoder
	Reason string // what is wrong, in words
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt segment at offset %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(offset int64, format string, args ...any) error {
	return &CorruptError{Offset: offset, Reason: fmt.Sprintf(format, args...)}
}

// HashMismatchError reports a page whose bytes do not hash to the expected
// PageHash: the frame decoded but holds other bytes than its location
// promised. It matches ErrCorrupt.
type HashMismatchError struct {
	PageOffset int64 // offset of the page in the decompressed frame
	Want, Got  uint64
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("page at frame offset %d: hash %016x, want %016x", e.PageOffset, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *HashMismatchError) Is(target error) bool { return target == ErrCorrupt }

// decoder is the shared zstd decoder. DecodeAll is safe for concurrent use.
// Memory is bounded three ways: every frame's declared content size is
// checked against our own frame header before decoding, DecodeAll may not
// grow its destination past the capacity we give it (exactly the raw
// length), and the decoder refuses windows and outputs beyond MaxFrameBytes.
var decoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // GOMAXPROCS concurrent DecodeAll calls
		zstd.WithDecoderMaxMemory(MaxFrameBytes),
		zstd.WithDecoderMaxWindow(MaxFrameBytes),
		zstd.WithDecodeAllCapLimit(true),
	)
})

// frameHeader is a frame's parsed header.
type frameHeader struct {
	codec    Codec
	pageSize int
	rawLen   int // decompressed length
	length   int // whole frame, header included
}

// parseFrameHeader checks the fixed fields of the frame header at the start
// of b, without touching the payload; the whole frame must fit in the first
// avail bytes of b. base is b's offset in the caller's input, for error
// offsets.
func parseFrameHeader(b []byte, avail int, base int64) (frameHeader, error) {
	if avail < FrameHeaderSize || len(b) < FrameHeaderSize {
		return frameHeader{}, corruptf(base, "truncated frame header: %d bytes", min(avail, len(b)))
	}
	if !bytes.Equal(b[0:4], frameMagic[:]) {
		return frameHeader{}, corruptf(base, "bad frame magic %q", b[0:4])
	}
	codec := Codec(b[4])
	if !codec.valid() {
		return frameHeader{}, corruptf(base+4, "unknown frame codec %d", b[4])
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return frameHeader{}, corruptf(base+5, "reserved frame header bytes are not zero")
	}
	ps := binary.LittleEndian.Uint32(b[8:12])
	raw := binary.LittleEndian.Uint32(b[12:16])
	comp := binary.LittleEndian.Uint32(b[16:20])
	if !ValidPageSize(int(ps)) {
		return frameHeader{}, corruptf(base+8, "bad frame page size %d", ps)
	}
	if raw == 0 || raw > MaxFrameBytes || raw%ps != 0 {
		return frameHeader{}, corruptf(base+12, "bad frame raw length %d for page size %d", raw, ps)
	}
	// Compare in int64: comp is attacker-controlled and up to 4 GiB.
	if int64(comp) > int64(avail-FrameHeaderSize) || comp > MaxFrameLength-FrameHeaderSize {
		return frameHeader{}, corruptf(base+16, "frame payload of %d bytes overruns the %d available", comp, avail-FrameHeaderSize)
	}
	return frameHeader{codec: codec, pageSize: int(ps), rawLen: int(raw), length: FrameHeaderSize + int(comp)}, nil
}

// decodeFrame verifies frame (exactly one frame's bytes) and decompresses it
// into dst's storage when large enough. base is the frame's offset in the
// caller's input, for error offsets.
func decodeFrame(dst, frame []byte, pageSize int, base int64) ([]byte, error) {
	h, err := parseFrameHeader(frame, len(frame), base)
	if err != nil {
		return nil, err
	}
	if h.length != len(frame) {
		return nil, corruptf(base+16, "frame is %d bytes, header says %d", len(frame), h.length)
	}
	if h.pageSize != pageSize {
		return nil, corruptf(base+8, "frame page size %d, want %d", h.pageSize, pageSize)
	}
	payload := frame[FrameHeaderSize:]
	if got, want := checksum(frame[:20], payload), binary.LittleEndian.Uint32(frame[20:24]); got != want {
		return nil, corruptf(base+20, "frame checksum %08x, want %08x", got, want)
	}
	if cap(dst) < h.rawLen {
		dst = make([]byte, 0, h.rawLen)
	}
	if h.codec == CodecS2 {
		return decodeS2(dst, payload, h.rawLen, base)
	}

	// The CRC matched, so these bytes are what an encoder wrote, unless
	// someone forged them; check the zstd header anyway so a forged frame
	// cannot make the decoder allocate or produce more than raw length.
	var zh zstd.Header
	if err := zh.Decode(payload); err != nil {
		return nil, corruptf(base+FrameHeaderSize, "zstd header: %v", err)
	}
	if zh.Skippable || !zh.HasFCS || zh.FrameContentSize != uint64(h.rawLen) || zh.DictionaryID != 0 {
		return nil, corruptf(base+FrameHeaderSize, "zstd frame declares %d bytes (known %t, skippable %t, dictionary %d), want %d",
			zh.FrameContentSize, zh.HasFCS, zh.Skippable, zh.DictionaryID, h.rawLen)
	}
	dec, err := decoder()
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	// The three-index slice caps DecodeAll's output at exactly raw length.
	out, err := dec.DecodeAll(payload, dst[:0:h.rawLen])
	if err != nil {
		return nil, corruptf(base+FrameHeaderSize, "zstd: %v", err)
	}
	if len(out) != h.rawLen {
		return nil, corruptf(base+FrameHeaderSize, "frame decompressed to %d bytes, want %d", len(out), h.rawLen)
	}
	return out, nil
}

// decodeS2 decompresses an S2 block that must decode to exactly rawLen
// bytes into dst's storage (cap(dst) >= rawLen). The block's declared length
// is checked before decoding, so a forged block cannot make it allocate.
func decodeS2(dst, payload []byte, rawLen int, base int64) ([]byte, error) {
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return nil, corruptf(base+FrameHeaderSize, "s2 header: %v", err)
	}
	if n != rawLen {
		return nil, corruptf(base+FrameHeaderSize, "s2 block declares %d bytes, want %d", n, rawLen)
	}
	out, err := s2.Decode(dst[:rawLen], payload)
	if err != nil {
		return nil, corruptf(base+FrameHeaderSize, "s2: %v", err)
	}
	if len(out) != rawLen {
		return nil, corruptf(base+FrameHeaderSize, "frame decompressed to %d bytes, want %d", len(out), rawLen)
	}
	return out, nil
}

// DecodeFrame verifies and decompresses one frame: frame must be exactly the
// bytes [FrameOffset, FrameOffset+FrameLength) of a segment of pageSize-byte
// pages. It returns the frame's pages concatenated, in a new slice. Invalid
// bytes are a *CorruptError; an invalid pageSize is ErrInvalidPageSize.
func DecodeFrame(frame []byte, pageSize int) ([]byte, error) {
	if !ValidPageSize(pageSize) {
		return nil, fmt.Errorf("decode frame: %w: %d", ErrInvalidPageSize, pageSize)
	}
	return decodeFrame(nil, frame, pageSize, 0)
}

// PageInFrame returns the page at pageOffset of a frame decoded by
// DecodeFrame, after checking that it lies on a page boundary inside the
// frame (else *CorruptError) and hashes to hash (else *HashMismatchError).
// The result aliases decoded.
func PageInFrame(decoded []byte, pageOffset int64, pageSize int, hash uint64) ([]byte, error) {
	if !ValidPageSize(pageSize) {
		return nil, fmt.Errorf("page in frame: %w: %d", ErrInvalidPageSize, pageSize)
	}
	if pageOffset < 0 || pageOffset%int64(pageSize) != 0 || pageOffset > int64(len(decoded)-pageSize) {
		return nil, corruptf(pageOffset, "page offset %d is not a page of a %d-byte frame of %d-byte pages", pageOffset, len(decoded), pageSize)
	}
	page := decoded[pageOffset : pageOffset+int64(pageSize) : pageOffset+int64(pageSize)]
	if got := PageHash(page); got != hash {
		return nil, &HashMismatchError{PageOffset: pageOffset, Want: hash, Got: got}
	}
	return page, nil
}

// framePool recycles decompression buffers for ReadPage, which copies the
// page out and so has no use for the rest of the frame once it returns.
var framePool = sync.Pool{New: func() any { return new([]byte) }}

// ReadPage verifies and decompresses frame as DecodeFrame does and returns a
// new copy of the page at pageOffset, checked as PageInFrame does. It is the
// whole read path for one page once its frame's bytes have been fetched.
func ReadPage(frame []byte, pageOffset int64, pageSize int, hash uint64) ([]byte, error) {
	if !ValidPageSize(pageSize) {
		return nil, fmt.Errorf("read page: %w: %d", ErrInvalidPageSize, pageSize)
	}
	bufp := framePool.Get().(*[]byte)
	defer framePool.Put(bufp)
	decoded, err := decodeFrame(*bufp, frame, pageSize, 0)
	if err != nil {
		return nil, err
	}
	*bufp = decoded[:0]
	page, err := PageInFrame(decoded, pageOffset, pageSize, hash)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(page), nil
}

// Segment is a decoded, fully verified segment. Decode has checked every
// structural rule of the format, every checksum and every page hash; Page and
// DecodeFrame decompress again on demand rather than keeping every page in
// memory, so a Segment costs little more than the bytes it was decoded from.
type Segment struct {
	PageSize int
	Entries  []Entry // every page, in frame and page-offset order
	Frames   []Frame // every frame, in offset order

	data []byte
}

// Frame is one frame of a decoded segment.
type Frame struct {
	Offset, Length int64 // the frame's bytes in the segment, header included
	RawLength      int64 // its decompressed length: Count × page size
	First, Count   int   // its pages are Entries[First : First+Count]
}

// Decode verifies a whole segment: header, trailer, index, every frame and
// every page hash, with the frames matching the index exactly. Anything else
// is a *CorruptError or *HashMismatchError (both match ErrCorrupt). It
// decompresses one frame at a time, so its memory is bounded by the index
// (MaxFrameBytes at most per frame), not by what headers claim. The Segment
// keeps data, which the caller must not modify afterwards.
func Decode(data []byte) (*Segment, error) {
	n := int64(len(data))
	if n < HeaderSize+TrailerSize {
		return nil, corruptf(0, "truncated: %d bytes", n)
	}

	// Header.
	if !bytes.Equal(data[0:4], headerMagic[:]) {
		return nil, corruptf(0, "bad magic %q", data[0:4])
	}
	if got, want := checksum(data[0:12], nil), binary.LittleEndian.Uint32(data[12:16]); got != want {
		return nil, corruptf(12, "header checksum %08x, want %08x", got, want)
	}
	if v := binary.LittleEndian.Uint16(data[4:6]); v != Version {
		return nil, corruptf(4, "format version %d, want %d", v, Version)
	}
	if f := binary.LittleEndian.Uint16(data[6:8]); f != 0 {
		return nil, corruptf(6, "unknown flags %#x", f)
	}
	pageSize := int(binary.LittleEndian.Uint32(data[8:12]))
	if !ValidPageSize(pageSize) {
		return nil, corruptf(8, "bad page size %d", pageSize)
	}

	// Trailer and index.
	t := data[n-TrailerSize:]
	tOff := n - TrailerSize
	if !bytes.Equal(t[20:24], trailerMagic[:]) {
		return nil, corruptf(tOff+20, "bad trailer magic %q", t[20:24])
	}
	indexOffset := binary.LittleEndian.Uint64(t[0:8])
	entryCount := int64(binary.LittleEndian.Uint32(t[8:12]))
	frameCount := int64(binary.LittleEndian.Uint32(t[12:16]))
	if indexOffset < HeaderSize || indexOffset > uint64(tOff) || int64(indexOffset)+entryCount*EntrySize != tOff {
		return nil, corruptf(tOff, "index of %d entries at offset %d does not end at the trailer (offset %d)", entryCount, indexOffset, tOff)
	}
	index := data[indexOffset:tOff]
	if got, want := checksum(data[indexOffset:n-8], nil), binary.LittleEndian.Uint32(t[16:20]); got != want {
		return nil, corruptf(tOff+16, "index checksum %08x, want %08x", got, want)
	}
	if entryCount == 0 || frameCount == 0 || frameCount > entryCount {
		return nil, corruptf(tOff+8, "%d entries in %d frames", entryCount, frameCount)
	}

	// Both counts are now bounded by the input's length, so these
	// allocations are too.
	s := &Segment{
		PageSize: pageSize,
		Entries:  make([]Entry, entryCount),
		Frames:   make([]Frame, 0, frameCount),
		data:     data,
	}
	for i := range s.Entries {
		b := index[i*EntrySize:]
		s.Entries[i] = Entry{
			Volume:      int64(binary.LittleEndian.Uint64(b[0:8])),
			Version:     int64(binary.LittleEndian.Uint64(b[8:16])),
			PageNo:      binary.LittleEndian.Uint32(b[16:20]),
			PageOffset:  int64(binary.LittleEndian.Uint32(b[20:24])),
			FrameOffset: int64(binary.LittleEndian.Uint64(b[24:32])),
			FrameLength: int64(binary.LittleEndian.Uint32(b[32:36])),
			Hash:        binary.LittleEndian.Uint64(b[36:44]),
		}
	}

	// Walk the frame headers and match them to the index before
	// decompressing anything.
	end := int64(indexOffset)
	seen := make(map[pageID]struct{}, entryCount)
	next := 0 // next entry to match
	maxRaw := 0
	for off := int64(HeaderSize); off < end; {
		if int64(len(s.Frames)) == frameCount {
			return nil, corruptf(off, "more than the %d frames the trailer lists", frameCount)
		}
		h, err := parseFrameHeader(data[off:end], int(end-off), off)
		if err != nil {
			return nil, err
		}
		if h.pageSize != pageSize {
			return nil, corruptf(off+4, "frame page size %d, segment's %d", h.pageSize, pageSize)
		}
		count := h.rawLen / pageSize
		if count > len(s.Entries)-next {
			return nil, corruptf(off, "frame of %d pages, but only %d index entries left", count, len(s.Entries)-next)
		}
		for k := range count {
			e := &s.Entries[next+k]
			eOff := int64(indexOffset) + int64(next+k)*EntrySize
			if e.FrameOffset != off || e.FrameLength != int64(h.length) || e.PageOffset != int64(k*pageSize) {
				return nil, corruptf(eOff, "entry %d places page at frame %d+%d offset %d, want frame %d+%d offset %d",
					next+k, e.FrameOffset, e.FrameLength, e.PageOffset, off, h.length, k*pageSize)
			}
			if e.PageNo == 0 {
				return nil, corruptf(eOff+16, "entry %d has page number 0", next+k)
			}
			id := pageID{e.Volume, e.Version, e.PageNo}
			if _, dup := seen[id]; dup {
				return nil, corruptf(eOff, "entry %d repeats page %d@%d of volume %d", next+k, e.PageNo, e.Version, e.Volume)
			}
			seen[id] = struct{}{}
		}
		s.Frames = append(s.Frames, Frame{Offset: off, Length: int64(h.length), RawLength: int64(h.rawLen), First: next, Count: count})
		next += count
		maxRaw = max(maxRaw, h.rawLen)
		off += int64(h.length)
	}
	if next != len(s.Entries) || int64(len(s.Frames)) != frameCount {
		return nil, corruptf(int64(indexOffset), "frames hold %d pages in %d frames, index lists %d in %d", next, len(s.Frames), entryCount, frameCount)
	}

	// Decompress every frame and check every page, reusing one buffer.
	buf := make([]byte, 0, maxRaw)
	for _, f := range s.Frames {
		decoded, err := decodeFrame(buf, data[f.Offset:f.Offset+f.Length], pageSize, f.Offset)
		if err != nil {
			return nil, err
		}
		for k := range f.Count {
			e := s.Entries[f.First+k]
			if _, err := PageInFrame(decoded, e.PageOffset, pageSize, e.Hash); err != nil {
				return nil, fmt.Errorf("frame at offset %d: %w", f.Offset, err)
			}
		}
	}
	return s, nil
}

// DecodeFrame returns the decompressed pages of frame i of s, verified again,
// in a new slice.
func (s *Segment) DecodeFrame(i int) ([]byte, error) {
	f := s.Frames[i]
	return decodeFrame(nil, s.data[f.Offset:f.Offset+f.Length], s.PageSize, f.Offset)
}

// Page returns a new copy of the bytes of page s.Entries[i], verified again.
// It decompresses the page's whole frame: to read every page, decode each
// frame once with DecodeFrame and cut it with PageInFrame.
func (s *Segment) Page(i int) ([]byte, error) {
	e := s.Entries[i]
	return ReadPage(s.data[e.FrameOffset:e.FrameOffset+e.FrameLength], e.PageOffset, s.PageSize, e.Hash)
}
