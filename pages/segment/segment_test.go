package segment_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/cambiumdb/cambium/pages/segment"
)

// testPage identifies a page added to an encoder, with its bytes.
type testPage struct {
	volume, version int64
	pageNo          uint32
	data            []byte
}

// mustEncode encodes pages and checks the returned entries against them.
func mustEncode(tb testing.TB, enc *segment.Encoder, pages []testPage) ([]byte, []segment.Entry) {
	tb.Helper()
	for _, p := range pages {
		if err := enc.Add(p.volume, p.version, p.pageNo, p.data); err != nil {
			tb.Fatalf("Add(%d, %d, %d)=%v", p.volume, p.version, p.pageNo, err)
		}
	}
	if got, want := enc.Len(), len(pages); got != want {
		tb.Fatalf("Len()=%d, want %d", got, want)
	}
	data, entries, err := enc.Finish()
	if err != nil {
		tb.Fatalf("Finish()=%v", err)
	}
	if got, want := len(entries), len(pages); got != want {
		tb.Fatalf("Finish() returned %d entries, want %d", got, want)
	}
	for i, e := range entries {
		p := pages[i]
		if e.Volume != p.volume || e.Version != p.version || e.PageNo != p.pageNo || e.Hash != segment.PageHash(p.data) {
			tb.Fatalf("entry %d = %+v, want page %d@%d of volume %d", i, e, p.pageNo, p.version, p.volume)
		}
	}
	if got := enc.Len(); got != 0 {
		tb.Fatalf("Len() after Finish=%d, want 0", got)
	}
	return data, entries
}

// mixedPages returns n synthetic pages spread over 3 volumes and several
// versions, each (volume, version, page number) distinct.
func mixedPages(n, pageSize int) []testPage {
	data := synthPages(n, pageSize, 7)
	pages := make([]testPage, n)
	for i := range pages {
		pages[i] = testPage{volume: int64(1 + i%3), version: int64(1 + i/10), pageNo: uint32(1 + i), data: data[i]}
	}
	return pages
}

func frameOf(data []byte, e segment.Entry) []byte {
	return data[e.FrameOffset : e.FrameOffset+e.FrameLength]
}

func TestEncoder_Add(t *testing.T) {
	page := make([]byte, 4096)
	t.Run("OK", func(t *testing.T) {
		enc := segment.NewEncoder(4096)
		if err := enc.Add(1, 1, 1, page); err != nil {
			t.Fatalf("Add()=%v, want nil", err)
		}
		if got, want := enc.Len(), 1; got != want {
			t.Fatalf("Len()=%d, want %d", got, want)
		}
	})
	t.Run("BadPageSize", func(t *testing.T) {
		for _, size := range []int{0, -4096, 256, 511, 1000, 4097, 6144, 131072} {
			enc := segment.NewEncoder(size)
			err := enc.Add(1, 1, 1, make([]byte, max(size, 0)))
			if !errors.Is(err, segment.ErrInvalidPageSize) {
				t.Errorf("page size %d: Add()=%v, want ErrInvalidPageSize", size, err)
			}
		}
	})
	t.Run("GoodPageSizes", func(t *testing.T) {
		for size := 512; size <= 65536; size *= 2 {
			enc := segment.NewEncoder(size)
			if err := enc.Add(1, 1, 1, make([]byte, size)); err != nil {
				t.Errorf("page size %d: Add()=%v, want nil", size, err)
			}
		}
	})
	t.Run("WrongLength", func(t *testing.T) {
		enc := segment.NewEncoder(4096)
		for _, n := range []int{0, 4095, 4097, 8192} {
			if err := enc.Add(1, 1, 1, make([]byte, n)); !errors.Is(err, segment.ErrInvalidPage) {
				t.Errorf("%d bytes: Add()=%v, want ErrInvalidPage", n, err)
			}
		}
		if got := enc.Len(); got != 0 {
			t.Fatalf("Len()=%d after failed adds, want 0", got)
		}
	})
	t.Run("PageZero", func(t *testing.T) {
		enc := segment.NewEncoder(4096)
		if err := enc.Add(1, 1, 0, page); !errors.Is(err, segment.ErrInvalidPage) {
			t.Fatalf("Add(page 0)=%v, want ErrInvalidPage", err)
		}
	})
	t.Run("Duplicate", func(t *testing.T) {
		enc := segment.NewEncoder(4096)
		if err := enc.Add(1, 2, 3, page); err != nil {
			t.Fatal(err)
		}
		if err := enc.Add(1, 2, 3, page); !errors.Is(err, segment.ErrDuplicatePage) {
			t.Fatalf("second Add()=%v, want ErrDuplicatePage", err)
		}
		// Another version or volume of the same page number is fine.
		if err := enc.Add(1, 3, 3, page); err != nil {
			t.Fatalf("Add(other version)=%v, want nil", err)
		}
		if err := enc.Add(2, 2, 3, page); err != nil {
			t.Fatalf("Add(other volume)=%v, want nil", err)
		}
	})
	t.Run("BadOptions", func(t *testing.T) {
		enc := segment.NewEncoder(4096)
		enc.FrameBytes = segment.MaxFrameBytes + 1
		if err := enc.Add(1, 1, 1, page); err == nil {
			t.Fatalf("Add() with FrameBytes=%d succeeded, want error", enc.FrameBytes)
		}
		enc = segment.NewEncoder(4096)
		enc.Level = zstd.SpeedBestCompression + 1
		if err := enc.Add(1, 1, 1, page); err == nil {
			t.Fatalf("Add() with Level=%d succeeded, want error", enc.Level)
		}
	})
	t.Run("CopiesPage", func(t *testing.T) {
		enc := segment.NewEncoder(512)
		p := bytes.Repeat([]byte{7}, 512)
		if err := enc.Add(1, 1, 1, p); err != nil {
			t.Fatal(err)
		}
		p[0] = 8 // the caller reuses its buffer
		data, entries, err := enc.Finish()
		if err != nil {
			t.Fatal(err)
		}
		got, err := segment.ReadPage(frameOf(data, entries[0]), 0, 512, entries[0].Hash)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != 7 {
			t.Fatalf("page[0]=%d, want 7: Add retained the caller's slice", got[0])
		}
	})
}

func TestEncoder_Finish(t *testing.T) {
	t.Run("Empty", func(t *testing.T) {
		if _, _, err := segment.NewEncoder(4096).Finish(); !errors.Is(err, segment.ErrEmpty) {
			t.Fatalf("Finish()=%v, want ErrEmpty", err)
		}
	})
	t.Run("FrameBoundaries", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			frameBytes int
			pages      int
			want       []int // pages per frame
		}{
			{"Default", segment.DefaultFrameBytes, 40, []int{16, 16, 8}},
			{"Exact", segment.DefaultFrameBytes, 32, []int{16, 16}},
			{"NotMultiple", 10000, 7, []int{2, 2, 2, 1}},
			{"BelowPageSize", 100, 3, []int{1, 1, 1}},
			{"Zero", 0, 2, []int{1, 1}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				enc := segment.NewEncoder(4096)
				enc.FrameBytes = tc.frameBytes
				data, _ := mustEncode(t, enc, mixedPages(tc.pages, 4096))
				s, err := segment.Decode(data)
				if err != nil {
					t.Fatalf("Decode()=%v", err)
				}
				var got []int
				for _, f := range s.Frames {
					got = append(got, f.Count)
				}
				if !equalInts(got, tc.want) {
					t.Fatalf("pages per frame=%v, want %v", got, tc.want)
				}
			})
		}
	})
	t.Run("Reuse", func(t *testing.T) {
		enc := segment.NewEncoder(1024)
		first, _ := mustEncode(t, enc, mixedPages(20, 1024))
		keep := bytes.Clone(first)
		// The same pages again: Finish reset the duplicate check too.
		second, _ := mustEncode(t, enc, mixedPages(20, 1024))
		if !bytes.Equal(first, keep) {
			t.Fatal("second segment overwrote the first one's bytes")
		}
		if !bytes.Equal(first, second) {
			t.Fatal("same pages encoded twice gave different segments")
		}
	})
	t.Run("Reset", func(t *testing.T) {
		enc := segment.NewEncoder(1024)
		pages := mixedPages(5, 1024)
		if err := enc.Add(1, 1, 1, pages[0].data); err != nil {
			t.Fatal(err)
		}
		enc.Reset()
		if got := enc.Len(); got != 0 {
			t.Fatalf("Len() after Reset=%d, want 0", got)
		}
		data, _ := mustEncode(t, enc, pages)
		if _, err := segment.Decode(data); err != nil {
			t.Fatalf("Decode()=%v", err)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecode_RoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pageSize int
		pages    int
		codec    segment.Codec
		level    zstd.EncoderLevel
	}{
		{"4K", 4096, 100, segment.DefaultCodec, segment.DefaultLevel},
		{"512", 512, 300, segment.DefaultCodec, segment.DefaultLevel},
		{"64K", 65536, 5, segment.DefaultCodec, segment.DefaultLevel},
		{"Zstd4K", 4096, 100, segment.CodecZstd, segment.DefaultLevel},
		{"Zstd512", 512, 300, segment.CodecZstd, segment.DefaultLevel},
		{"Zstd64K", 65536, 5, segment.CodecZstd, segment.DefaultLevel},
		{"ZstdDefault", 4096, 50, segment.CodecZstd, zstd.SpeedDefault},
		{"ZstdBetter", 4096, 50, segment.CodecZstd, zstd.SpeedBetterCompression},
		{"ZstdBest", 4096, 20, segment.CodecZstd, zstd.SpeedBestCompression},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pages := mixedPages(tc.pages, tc.pageSize)
			enc := segment.NewEncoder(tc.pageSize)
			enc.Codec, enc.Level = tc.codec, tc.level
			data, entries := mustEncode(t, enc, pages)
			s, err := segment.Decode(data)
			if err != nil {
				t.Fatalf("Decode()=%v", err)
			}
			if got, want := s.PageSize, tc.pageSize; got != want {
				t.Fatalf("PageSize=%d, want %d", got, want)
			}
			if got, want := len(s.Entries), len(entries); got != want {
				t.Fatalf("len(Entries)=%d, want %d", got, want)
			}
			for i, e := range entries {
				if s.Entries[i] != e {
					t.Fatalf("Entries[%d]=%+v, want %+v", i, s.Entries[i], e)
				}
				got, err := s.Page(i)
				if err != nil {
					t.Fatalf("Page(%d)=%v", i, err)
				}
				if !bytes.Equal(got, pages[i].data) {
					t.Fatalf("Page(%d) differs from the page added", i)
				}
				got, err = segment.ReadPage(frameOf(data, e), e.PageOffset, tc.pageSize, e.Hash)
				if err != nil {
					t.Fatalf("ReadPage(entry %d)=%v", i, err)
				}
				if !bytes.Equal(got, pages[i].data) {
					t.Fatalf("ReadPage(entry %d) differs from the page added", i)
				}
			}
			for i, f := range s.Frames {
				decoded, err := s.DecodeFrame(i)
				if err != nil {
					t.Fatalf("DecodeFrame(%d)=%v", i, err)
				}
				if got, want := int64(len(decoded)), f.RawLength; got != want {
					t.Fatalf("len(DecodeFrame(%d))=%d, want %d", i, got, want)
				}
			}
		})
	}
	t.Run("RealSQLite", func(t *testing.T) {
		all := realSQLitePages(t)
		pages := make([]testPage, 0, 200)
		for i, p := range all[:min(200, len(all))] {
			pages = append(pages, testPage{volume: 9, version: 4, pageNo: uint32(i + 1), data: p})
		}
		data, _ := mustEncode(t, segment.NewEncoder(4096), pages)
		if _, err := segment.Decode(data); err != nil {
			t.Fatalf("Decode()=%v", err)
		}
		ratio := float64(len(pages)*4096) / float64(len(data))
		t.Logf("%d SQLite pages: %d bytes, ratio %.2f", len(pages), len(data), ratio)
	})
}

// smallSegment returns a segment of 6 pages of 512 bytes in 3 frames.
func smallSegment(t testing.TB) ([]byte, []segment.Entry) {
	enc := segment.NewEncoder(512)
	enc.FrameBytes = 1024
	return mustEncode(t, enc, mixedPages(6, 512))
}

func TestDecode_Corruption(t *testing.T) {
	data, entries := smallSegment(t)
	t.Run("EveryByte", func(t *testing.T) {
		for off := range data {
			for _, flip := range []byte{0x01, 0x80, 0xff} {
				bad := bytes.Clone(data)
				bad[off] ^= flip
				if _, err := segment.Decode(bad); !errors.Is(err, segment.ErrCorrupt) {
					t.Fatalf("byte %d ^ %#x: Decode()=%v, want ErrCorrupt", off, flip, err)
				}
				for i, e := range entries {
					got, err := segment.ReadPage(frameOf(bad, e), e.PageOffset, 512, e.Hash)
					inFrame := int64(off) >= e.FrameOffset && int64(off) < e.FrameOffset+e.FrameLength
					switch {
					case inFrame && !errors.Is(err, segment.ErrCorrupt):
						t.Fatalf("byte %d ^ %#x: ReadPage(entry %d)=%v, want ErrCorrupt", off, flip, i, err)
					case !inFrame && err != nil:
						t.Fatalf("byte %d ^ %#x outside frame: ReadPage(entry %d)=%v, want nil", off, flip, i, err)
					case err == nil && segment.PageHash(got) != e.Hash:
						t.Fatalf("byte %d ^ %#x: ReadPage(entry %d) returned a wrong page", off, flip, i)
					}
				}
			}
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		for n := range len(data) {
			if _, err := segment.Decode(data[:n]); !errors.Is(err, segment.ErrCorrupt) {
				t.Fatalf("first %d of %d bytes: Decode()=%v, want ErrCorrupt", n, len(data), err)
			}
			if _, err := segment.Decode(data[len(data)-n:]); !errors.Is(err, segment.ErrCorrupt) {
				t.Fatalf("last %d of %d bytes: Decode()=%v, want ErrCorrupt", n, len(data), err)
			}
		}
		for i, e := range entries {
			frame := frameOf(data, e)
			for n := range len(frame) {
				if _, err := segment.ReadPage(frame[:n], e.PageOffset, 512, e.Hash); !errors.Is(err, segment.ErrCorrupt) {
					t.Fatalf("entry %d, first %d of %d frame bytes: ReadPage()=%v, want ErrCorrupt", i, n, len(frame), err)
				}
			}
		}
	})
	t.Run("Extended", func(t *testing.T) {
		if _, err := segment.Decode(append(bytes.Clone(data), 0)); !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("Decode(data+1 byte)=%v, want ErrCorrupt", err)
		}
		e := entries[0]
		frame := data[e.FrameOffset : e.FrameOffset+e.FrameLength+1]
		if _, err := segment.ReadPage(frame, e.PageOffset, 512, e.Hash); !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage(frame+1 byte)=%v, want ErrCorrupt", err)
		}
	})
}

func TestReadPage(t *testing.T) {
	data, entries := smallSegment(t)
	e := entries[1] // second page of the first frame
	frame := frameOf(data, e)
	t.Run("HashMismatch", func(t *testing.T) {
		_, err := segment.ReadPage(frame, e.PageOffset, 512, e.Hash^1)
		var hm *segment.HashMismatchError
		if !errors.As(err, &hm) || !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage(wrong hash)=%v, want *HashMismatchError matching ErrCorrupt", err)
		}
		if hm.Want != e.Hash^1 || hm.Got != e.Hash || hm.PageOffset != e.PageOffset {
			t.Fatalf("HashMismatchError=%+v, want {%d %x %x}", hm, e.PageOffset, e.Hash^1, e.Hash)
		}
	})
	t.Run("WrongPage", func(t *testing.T) {
		// The other page of the same frame is intact but not this one.
		if _, err := segment.ReadPage(frame, 0, 512, e.Hash); !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage(other page's offset)=%v, want ErrCorrupt", err)
		}
	})
	t.Run("BadOffset", func(t *testing.T) {
		for _, off := range []int64{-512, -1, 1, 511, 1024, 1 << 40} {
			if _, err := segment.ReadPage(frame, off, 512, e.Hash); !errors.Is(err, segment.ErrCorrupt) {
				t.Errorf("ReadPage(offset %d)=%v, want ErrCorrupt", off, err)
			}
		}
	})
	t.Run("WrongPageSize", func(t *testing.T) {
		if _, err := segment.ReadPage(frame, 0, 1024, e.Hash); !errors.Is(err, segment.ErrCorrupt) {
			t.Fatalf("ReadPage(page size 1024)=%v, want ErrCorrupt", err)
		}
		if _, err := segment.ReadPage(frame, 0, 1000, e.Hash); !errors.Is(err, segment.ErrInvalidPageSize) {
			t.Fatalf("ReadPage(page size 1000)=%v, want ErrInvalidPageSize", err)
		}
	})
	t.Run("DecodeFrame", func(t *testing.T) {
		decoded, err := segment.DecodeFrame(frame, 512)
		if err != nil {
			t.Fatalf("DecodeFrame()=%v", err)
		}
		if got, want := len(decoded), 1024; got != want {
			t.Fatalf("len(DecodeFrame())=%d, want %d", got, want)
		}
		page, err := segment.PageInFrame(decoded, e.PageOffset, 512, e.Hash)
		if err != nil {
			t.Fatalf("PageInFrame()=%v", err)
		}
		if got, want := segment.PageHash(page), e.Hash; got != want {
			t.Fatalf("PageHash(PageInFrame())=%x, want %x", got, want)
		}
	})
}

// forgeFrame builds a frame with the given header fields around payload and
// a correct checksum, as an adversary who knows the format could.
func forgeFrame(pageSize, rawLen uint32, payload []byte) []byte {
	return forgeCodecFrame(segment.CodecZstd, pageSize, rawLen, payload)
}

func forgeCodecFrame(codec segment.Codec, pageSize, rawLen uint32, payload []byte) []byte {
	f := []byte("CMBF")
	f = append(f, byte(codec), 0, 0, 0)
	f = binary.LittleEndian.AppendUint32(f, pageSize)
	f = binary.LittleEndian.AppendUint32(f, rawLen)
	f = binary.LittleEndian.AppendUint32(f, uint32(len(payload)))
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Checksum(f, tab), tab, payload)
	f = binary.LittleEndian.AppendUint32(f, crc)
	return append(f, payload...)
}

func TestDecodeFrame_Hostile(t *testing.T) {
	zenc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zeros := func(n int) []byte { return zenc.EncodeAll(make([]byte, n), nil) }
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"Control", forgeFrame(512, 1024, zeros(1024))},
		{"RawTooLarge", forgeFrame(512, segment.MaxFrameBytes+512, zeros(segment.MaxFrameBytes+512))},
		{"RawNotMultiple", forgeFrame(512, 1000, zeros(1000))},
		{"RawZero", forgeFrame(512, 0, nil)},
		{"DeclaresMore", forgeFrame(512, 1024, zeros(1<<20))},
		{"DeclaresLess", forgeFrame(512, 1024, zeros(512))},
		{"TwoZstdFrames", forgeFrame(512, 1024, append(zeros(1024), zeros(1024)...))},
		{"NotZstd", forgeFrame(512, 1024, bytes.Repeat([]byte{0xaa}, 64))},
		{"Skippable", forgeFrame(512, 1024, append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0}, 1, 2, 3, 4))},
		{"NoContentSize", forgeFrame(512, 1024, noFCS(t, 1024))},
		{"UnknownCodec", forgeCodecFrame(9, 512, 1024, zeros(1024))},
		{"S2Control", forgeCodecFrame(segment.CodecS2, 512, 1024, s2.Encode(nil, make([]byte, 1024)))},
		{"S2DeclaresMore", forgeCodecFrame(segment.CodecS2, 512, 1024, s2.Encode(nil, make([]byte, 1<<20)))},
		{"S2DeclaresLess", forgeCodecFrame(segment.CodecS2, 512, 1024, s2.Encode(nil, make([]byte, 512)))},
		{"S2Garbage", forgeCodecFrame(segment.CodecS2, 512, 1024, append([]byte{0x80, 0x08}, bytes.Repeat([]byte{0xff}, 40)...))},
		{"S2ZstdPayload", forgeCodecFrame(segment.CodecS2, 512, 1024, zeros(1024))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			decoded, err := segment.DecodeFrame(tc.frame, 512)
			if tc.name == "Control" || tc.name == "S2Control" {
				if err != nil || len(decoded) != 1024 {
					t.Fatalf("DecodeFrame()=%d bytes, %v; want 1024, nil", len(decoded), err)
				}
				return
			}
			if !errors.Is(err, segment.ErrCorrupt) {
				t.Fatalf("DecodeFrame()=%d bytes, %v; want ErrCorrupt", len(decoded), err)
			}
			t.Logf("DecodeFrame()=%v", err)
		})
	}
}

// noFCS returns a zstd frame of n (< 2^21) zero bytes whose header omits
// the content size: a 1 KiB window and one RLE block.
func noFCS(t *testing.T, n int) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00}
	blk := uint32(n)<<3 | 1<<1 | 1 // size, RLE, last block
	f = append(f, byte(blk), byte(blk>>8), byte(blk>>16), 0x00)
	var h zstd.Header
	if err := h.Decode(f); err != nil || h.HasFCS {
		t.Fatalf("hand-made zstd frame: HasFCS=%t, err=%v; want false, nil", h.HasFCS, err)
	}
	return f
}

func TestEncoder_Grow(t *testing.T) {
	pages := mixedPages(40, 4096)
	plain := segment.NewEncoder(4096)
	want, _ := mustEncode(t, plain, pages)
	grown := segment.NewEncoder(4096)
	grown.Grow(len(pages))
	got, _ := mustEncode(t, grown, pages)
	if !bytes.Equal(got, want) {
		t.Fatalf("Grow changed the segment's bytes")
	}
	if c := cap(got); c < len(got) || c > len(pages)*4096*2 {
		t.Fatalf("cap after Grow = %d for %d bytes of pages", c, len(pages)*4096)
	}
}
