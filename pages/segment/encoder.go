// Package segment owns the byte format of a Cambium segment: an immutable
// object holding the pages of one or more commits, of one or more volumes, all
// of one page size, grouped into independently compressed frames so that one
// page costs one ranged read of its frame. It encodes segments, decodes and
// verifies whole segments (for verification tools and garbage collection),
// and decodes a single frame from only its own bytes (for page reads).
//
// It does not know where segments are stored (pages.Store), what a volume's
// history is (the metastore keeps the index that points into segments), or
// caching (pages.Cache). It imports nothing from Cambium, so package pages can
// build on it.
//
// # Format, version 1
//
// All integers are little-endian. CRC is CRC-32C (Castagnoli). A segment is
//
//	header  16 B  "CMBS" | version u16 = 1 | flags u16 = 0 | page size u32 | CRC(bytes 0..12) u32
//	frame*        one or more, back to back, the first at offset 16
//	index         entry count × 44 B, at the index offset
//	trailer 24 B  index offset u64 | entry count u32 | frame count u32 | CRC(index ‖ trailer bytes 0..16) u32 | "CMBE"
//
// A frame (FrameLength = 24 + compressed length) is
//
//	"CMBF" | codec u8 | 0 u8 | 0 u16 | page size u32 | raw length u32 | compressed length u32
//	       | CRC(frame bytes 0..20 ‖ payload) u32 | payload
//
// where payload decompresses to raw length bytes, the frame's pages
// concatenated, raw length being a multiple of page size, at most
// MaxFrameBytes. The codec says what payload is: CodecS2, one S2 block
// (klauspost/compress/s2) whose encoded length is raw length; or CodecZstd,
// exactly one zstd frame, without dictionary, that declares its content size
// as raw length. Each frame names its own codec, so segments written with
// either (or rewritten from one to the other) are read the same way. The frame header repeats the page size so that a reader
// holding only [FrameOffset, FrameOffset+FrameLength) can verify and decode
// the frame without the segment header, index or trailer.
//
// An index entry is
//
//	volume i64 | version i64 | page number u32 | page offset u32 | frame offset u64 | frame length u32 | hash u64
//
// with hash = PageHash(page). Entries list every page of every frame exactly
// once, in frame order and, within a frame, in page-offset order (0, page
// size, 2 × page size, ...). No two entries share (volume, version, page
// number). Page sizes are powers of two from 512 to 65536, as in SQLite.
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Format constants. Sizes are in bytes.
const (
	// Version is the format version this package writes and reads.
	Version = 1

	HeaderSize      = 16 // segment header
	FrameHeaderSize = 24 // header in front of each frame's compressed payload
	EntrySize       = 44 // one index entry
	TrailerSize     = 24 // segment trailer

	MinPageSize = 512   // smallest page size SQLite allows
	MaxPageSize = 65536 // largest page size SQLite allows

	// MaxFrameBytes bounds a frame's decompressed size, so that decoding
	// one frame never allocates more than this, whatever its header says.
	MaxFrameBytes = 16 << 20

	// MaxFrameLength bounds a frame's stored length, header included. zstd
	// stores incompressible data as raw blocks with a 3-byte header per
	// 128 KiB, and S2 adds a few bytes to a block of literals
	// (s2.MaxEncodedLen), so MaxFrameBytes of input never needs more than a
	// fraction of the 16 KiB margin. Readers may refuse to fetch longer frames.
	MaxFrameLength = FrameHeaderSize + MaxFrameBytes + MaxFrameBytes>>10

	// DefaultFrameBytes is the default target decompressed size of a frame:
	// 16 pages of 4 KiB. Larger frames compress a little better (2.87× at
	// 64 KiB against 2.78× at 32 KiB and 2.38× at 4 KiB on real SQLite
	// pages) but make every single-page read fetch and decompress more; a
	// 64 KiB frame is about 23 KiB on the wire, which costs about the same
	// S3 latency as one page would, and decompresses in about 0.1 ms.
	DefaultFrameBytes = 64 << 10

	// DefaultCodec compresses frames on the commit path. On real SQLite
	// pages on this project's 2-core EPYC VMs (BenchmarkEncode, -cpu 1), S2
	// encodes at about 540 MB/s and decodes at about 1,400 MB/s with a ratio
	// of 2.3, while zstd at SpeedFastest encodes at only 150-190 MB/s and
	// decodes at about 700 MB/s with a ratio of 2.8: zstd alone cannot meet
	// the 300 MB/s encode+decode budget of one core that the commit path
	// has. zstd stays a codec of the format for data where size matters
	// more than time (a future compaction of cold segments).
	DefaultCodec = CodecS2

	// DefaultLevel is the zstd level when the codec is CodecZstd: SpeedDefault
	// compresses only 2% better than SpeedFastest for 1.2-1.5x the CPU.
	DefaultLevel = zstd.SpeedFastest
)

// Codec names how a frame's payload is compressed.
type Codec uint8

// The codecs a frame may use. Values are part of the format.
const (
	CodecZstd Codec = 1
	CodecS2   Codec = 2
)

func (c Codec) valid() bool { return c == CodecZstd || c == CodecS2 }

func (c Codec) String() string {
	switch c {
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

var (
	headerMagic  = [4]byte{'C', 'M', 'B', 'S'}
	frameMagic   = [4]byte{'C', 'M', 'B', 'F'}
	trailerMagic = [4]byte{'C', 'M', 'B', 'E'}
)

var (
	// ErrCorrupt is matched (errors.Is) by every error that reports bytes
	// that are not a valid segment or frame: *CorruptError and
	// *HashMismatchError.
	ErrCorrupt = errors.New("corrupt segment")

	// ErrInvalidPageSize means a page size given by the caller is not a
	// power of two between MinPageSize and MaxPageSize.
	ErrInvalidPageSize = errors.New("invalid page size")

	// ErrInvalidPage means a page given to Encoder.Add has the wrong length
	// or page number 0.
	ErrInvalidPage = errors.New("invalid page")

	// ErrDuplicatePage means Encoder.Add was given the same (volume,
	// version, page number) twice in one segment.
	ErrDuplicatePage = errors.New("duplicate page in segment")

	// ErrEmpty means Encoder.Finish was called before any page was added.
	ErrEmpty = errors.New("empty segment")
)

// ValidPageSize reports whether n is a page size this format accepts: a power
// of two from MinPageSize to MaxPageSize.
func ValidPageSize(n int) bool {
	return n >= MinPageSize && n <= MaxPageSize && n&(n-1) == 0
}

// Entry is one page of a segment and where it lies. Its fields map one to one
// onto pages.Location (Segment, FrameOffset, FrameLength, PageOffset, Hash),
// the segment's key being the caller's choice.
type Entry struct {
	Volume  int64
	Version int64
	PageNo  uint32

	FrameOffset int64  // offset of the page's frame in the segment
	FrameLength int64  // length of that frame, its header included
	PageOffset  int64  // offset of the page in the decompressed frame
	Hash        uint64 // PageHash of the page
}

// pageID identifies a page version within a segment, to refuse duplicates.
type pageID struct {
	volume, version int64
	pageNo          uint32
}

// Encoder builds one segment at a time. Pages are copied into the current
// frame as they are added, and each frame is compressed as soon as it is
// full, so an Encoder holds the compressed segment so far plus one
// uncompressed frame. An Encoder is not safe for concurrent use; distinct
// Encoders may run concurrently (they share the zstd encoders, which are).
type Encoder struct {
	// FrameBytes is the target decompressed size of a frame. A frame takes
	// as many whole pages as fit (at least one), so a value below the page
	// size gives one page per frame. It must not exceed MaxFrameBytes.
	// NewEncoder sets DefaultFrameBytes; change it before the first Add.
	FrameBytes int

	// Codec compresses each frame. NewEncoder sets DefaultCodec.
	Codec Codec

	// Level is the zstd compression level when Codec is CodecZstd, from
	// zstd.SpeedFastest to zstd.SpeedBestCompression. NewEncoder sets
	// DefaultLevel.
	Level zstd.EncoderLevel

	pageSize int
	out      []byte  // header and the frames completed so far
	frame    []byte  // pages of the frame being filled
	entries  []Entry // every page added, in order
	first    int     // index in entries of the frame being filled's first page
	seen     map[pageID]struct{}
}

// NewEncoder returns an Encoder for pages of pageSize bytes with the default
// options. An invalid page size is reported by the first Add.
func NewEncoder(pageSize int) *Encoder {
	return &Encoder{
		FrameBytes: DefaultFrameBytes,
		Codec:      DefaultCodec,
		Level:      DefaultLevel,
		pageSize:   pageSize,
		seen:       make(map[pageID]struct{}),
	}
}

// PageSize returns the page size the Encoder was created with.
func (e *Encoder) PageSize() int { return e.pageSize }

// Add appends a copy of page, page pageNo of volume as written by version, to
// the segment; the caller may reuse page once Add returns. page must be
// exactly the page size (ErrInvalidPage), pageNo at least 1 (ErrInvalidPage),
// and (volume, version, pageNo) new to this segment (ErrDuplicatePage). On
// error nothing is added and the Encoder stays usable.
func (e *Encoder) Add(volume, version int64, pageNo uint32, page []byte) error {
	if !ValidPageSize(e.pageSize) {
		return fmt.Errorf("add page: %w: %d", ErrInvalidPageSize, e.pageSize)
	}
	if e.FrameBytes > MaxFrameBytes {
		return fmt.Errorf("add page: frame size %d exceeds %d bytes", e.FrameBytes, MaxFrameBytes)
	}
	if e.Level < zstd.SpeedFastest || e.Level > zstd.SpeedBestCompression {
		return fmt.Errorf("add page: invalid zstd level %d", e.Level)
	}
	if !e.Codec.valid() {
		return fmt.Errorf("add page: invalid codec %d", e.Codec)
	}
	if len(page) != e.pageSize {
		return fmt.Errorf("add page %d@%d: %w: %d bytes, want %d", pageNo, version, ErrInvalidPage, len(page), e.pageSize)
	}
	if pageNo == 0 {
		return fmt.Errorf("add page 0@%d: %w: page numbers start at 1", version, ErrInvalidPage)
	}
	id := pageID{volume, version, pageNo}
	if _, ok := e.seen[id]; ok {
		return fmt.Errorf("add page %d@%d of volume %d: %w", pageNo, version, volume, ErrDuplicatePage)
	}
	if e.seen == nil { // a zero Encoder whose fields the caller set by hand
		e.seen = make(map[pageID]struct{})
	}
	if len(e.out) == 0 {
		e.out = appendHeader(e.out, e.pageSize)
	}

	e.seen[id] = struct{}{}
	e.entries = append(e.entries, Entry{
		Volume:     volume,
		Version:    version,
		PageNo:     pageNo,
		PageOffset: int64(len(e.frame)),
		Hash:       PageHash(page),
	})
	e.frame = append(e.frame, page...)
	// Close the frame once another page would overflow the target, so a
	// frame never exceeds FrameBytes unless it holds a single page.
	if len(e.frame)+e.pageSize > e.FrameBytes {
		return e.flush()
	}
	return nil
}

// Grow reserves room for pages more pages, so that adding them does not
// reallocate the segment as it grows (up to their uncompressed size plus
// frame headers, which bounds what the codecs produce). Callers that know
// how many pages they will add, as group commit does, save the copies.
func (e *Encoder) Grow(pages int) {
	if pages <= 0 || !ValidPageSize(e.pageSize) {
		return
	}
	frames := pages*e.pageSize/max(e.FrameBytes, e.pageSize) + 1
	n := pages*e.pageSize + frames*(FrameHeaderSize+64) + pages*EntrySize + HeaderSize + TrailerSize
	e.out = slices.Grow(e.out, n)
	e.entries = slices.Grow(e.entries, pages)
}

// Len returns the number of pages added since the last Finish or Reset.
func (e *Encoder) Len() int { return len(e.entries) }

// Finish completes the segment and returns its bytes and one Entry per page,
// in the order the pages were added, with their frame offsets filled in.
// The caller owns both; the Encoder is reset, ready for the next segment.
// A segment must hold at least one page (ErrEmpty).
func (e *Encoder) Finish() (data []byte, entries []Entry, err error) {
	if len(e.entries) == 0 {
		return nil, nil, ErrEmpty
	}
	if len(e.frame) > 0 {
		if err := e.flush(); err != nil {
			return nil, nil, err
		}
	}

	frames := 0
	for i, ent := range e.entries {
		if i == 0 || ent.FrameOffset != e.entries[i-1].FrameOffset {
			frames++
		}
	}
	indexOffset := len(e.out)
	out := e.out
	for _, ent := range e.entries {
		out = appendEntry(out, ent)
	}
	out = binary.LittleEndian.AppendUint64(out, uint64(indexOffset))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(e.entries)))
	out = binary.LittleEndian.AppendUint32(out, uint32(frames))
	out = binary.LittleEndian.AppendUint32(out, checksum(out[indexOffset:], nil))
	out = append(out, trailerMagic[:]...)

	data, entries = out, e.entries
	// Drop our references rather than reuse: the caller owns data and
	// entries now. The frame buffer is ours alone, so it is kept.
	e.out, e.entries = nil, nil
	e.Reset()
	return data, entries, nil
}

// Reset discards the segment being built, so the Encoder can start a new one
// with the same page size and options.
func (e *Encoder) Reset() {
	e.out = e.out[:0]
	e.frame = e.frame[:0]
	e.entries = e.entries[:0]
	e.first = 0
	clear(e.seen)
}

// flush compresses the pending frame onto the segment and fills in the frame
// position of its entries.
func (e *Encoder) flush() error {
	start := len(e.out)
	out := append(e.out, make([]byte, FrameHeaderSize)...)
	switch e.Codec {
	case CodecS2:
		// Encode into the spare capacity after the header; s2.Encode uses
		// dst when it is large enough, so make it so.
		n := s2.MaxEncodedLen(len(e.frame))
		out = slices.Grow(out, n)
		enc := s2.Encode(out[len(out):len(out)+n], e.frame)
		out = out[:len(out)+len(enc)]
	default:
		zenc, err := sharedEncoder(e.Level)
		if err != nil {
			return err
		}
		out = zenc.EncodeAll(e.frame, out)
	}
	payload := len(out) - start - FrameHeaderSize
	if payload > MaxFrameLength-FrameHeaderSize {
		// Unreachable with klauspost's encoder; refuse rather than write a
		// frame that every reader would reject.
		return fmt.Errorf("compress frame: %d bytes compressed to %d, above the format's bound", len(e.frame), payload)
	}
	hdr := out[start : start+FrameHeaderSize]
	copy(hdr[0:4], frameMagic[:])
	hdr[4] = byte(e.Codec) // bytes 5..7 stay zero: reserved
	binary.LittleEndian.PutUint32(hdr[8:12], uint32(e.pageSize))
	binary.LittleEndian.PutUint32(hdr[12:16], uint32(len(e.frame)))
	binary.LittleEndian.PutUint32(hdr[16:20], uint32(payload))
	binary.LittleEndian.PutUint32(hdr[20:24], checksum(hdr[:20], out[start+FrameHeaderSize:]))
	e.out = out

	for i := e.first; i < len(e.entries); i++ {
		e.entries[i].FrameOffset = int64(start)
		e.entries[i].FrameLength = int64(FrameHeaderSize + payload)
	}
	e.first = len(e.entries)
	e.frame = e.frame[:0]
	return nil
}

func appendHeader(b []byte, pageSize int) []byte {
	start := len(b)
	b = append(b, headerMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint16(b, 0) // flags
	b = binary.LittleEndian.AppendUint32(b, uint32(pageSize))
	return binary.LittleEndian.AppendUint32(b, checksum(b[start:], nil))
}

func appendEntry(b []byte, e Entry) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Volume))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Version))
	b = binary.LittleEndian.AppendUint32(b, e.PageNo)
	b = binary.LittleEndian.AppendUint32(b, uint32(e.PageOffset))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.FrameOffset))
	b = binary.LittleEndian.AppendUint32(b, uint32(e.FrameLength))
	return binary.LittleEndian.AppendUint64(b, e.Hash)
}

// encoders holds one shared zstd encoder per level, created on first use.
// zstd.Encoder.EncodeAll is safe for concurrent use and keeps a pool of
// GOMAXPROCS block encoders, so sharing avoids re-allocating its large
// tables for every segment.
var encoders [zstd.SpeedBestCompression + 1]struct {
	once sync.Once
	enc  *zstd.Encoder
	err  error
}

func sharedEncoder(level zstd.EncoderLevel) (*zstd.Encoder, error) {
	if level < zstd.SpeedFastest || level > zstd.SpeedBestCompression {
		return nil, fmt.Errorf("invalid zstd level %d", level)
	}
	s := &encoders[level]
	s.once.Do(func() {
		s.enc, s.err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			// The frame CRC covers the payload and every page has
			// its own hash; zstd's content checksum would be a third.
			zstd.WithEncoderCRC(false),
		)
	})
	return s.enc, s.err
}
