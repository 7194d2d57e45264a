package segment_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cambiumdb/cambium/pages/segment"
)

// writeSeeds regenerates the checked-in seed corpora under testdata/fuzz:
//
//	go test -run=TestWriteFuzzSeeds -write-seeds ./pages/segment/
//
// Without the flag the test only checks that the seeds it would write decode
// as expected, so a format change that forgets to refresh them fails.
var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz seed corpora")

// seedSegments returns valid segments and corrupted variants of them, named.
func seedSegments(tb testing.TB) map[string][]byte {
	tb.Helper()
	seeds := map[string][]byte{}
	for _, tc := range []struct {
		name       string
		pageSize   int
		pages      int
		frameBytes int
	}{
		{"valid-512x6", 512, 6, 1024},
		{"valid-1024x3-one-per-frame", 1024, 3, 0},
		{"valid-4096x20", 4096, 20, segment.DefaultFrameBytes},
	} {
		enc := segment.NewEncoder(tc.pageSize)
		enc.FrameBytes = tc.frameBytes
		data, _ := mustEncode(tb, enc, mixedPages(tc.pages, tc.pageSize))
		seeds[tc.name] = data
	}
	small := seeds["valid-512x6"]
	flip := func(off int) []byte { b := bytes.Clone(small); b[off] ^= 0xff; return b }
	seeds["corrupt-header"] = flip(9)
	seeds["corrupt-frame-header"] = flip(segment.HeaderSize + 9)
	seeds["corrupt-payload"] = flip(segment.HeaderSize + segment.FrameHeaderSize + 3)
	seeds["corrupt-index"] = flip(len(small) - segment.TrailerSize - 5)
	seeds["corrupt-trailer"] = flip(len(small) - 10)
	seeds["truncated"] = small[:len(small)/2]
	seeds["empty"] = nil
	return seeds
}

func TestWriteFuzzSeeds(t *testing.T) {
	seeds := seedSegments(t)
	for name, data := range seeds {
		_, err := segment.Decode(data)
		if valid := name[:5] == "valid"; valid != (err == nil) {
			t.Fatalf("seed %s: Decode()=%v", name, err)
		}
	}
	if !*writeSeeds {
		return
	}
	write := func(target, name string, values ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range values {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
			case int64:
				fmt.Fprintf(&b, "int64(%d)\n", v)
			case int:
				fmt.Fprintf(&b, "int(%d)\n", v)
			case uint64:
				fmt.Fprintf(&b, "uint64(%d)\n", v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range seeds {
		write("FuzzDecode", name, data)
	}
	data := seeds["valid-512x6"]
	s, err := segment.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range s.Entries[:2] {
		frame := data[e.FrameOffset : e.FrameOffset+e.FrameLength]
		write("FuzzReadPage", fmt.Sprintf("valid-%d", i), frame, e.PageOffset, 512, e.Hash)
		write("FuzzReadPage", fmt.Sprintf("wrong-hash-%d", i), frame, e.PageOffset, 512, e.Hash+1)
		bad := bytes.Clone(frame)
		bad[len(bad)-1] ^= 1
		write("FuzzReadPage", fmt.Sprintf("corrupt-%d", i), bad, e.PageOffset, 512, e.Hash)
	}
	big := seeds["valid-4096x20"]
	bs, err := segment.Decode(big)
	if err != nil {
		t.Fatal(err)
	}
	e := bs.Entries[17]
	write("FuzzReadPage", "valid-4096", big[e.FrameOffset:e.FrameOffset+e.FrameLength], e.PageOffset, 4096, e.Hash)
}

// FuzzDecode checks that Decode never panics, and that a segment it accepts
// is consistent: every page reads back with its entry's hash, and encoding the
// pages again gives a segment that decodes to the same entries and pages.
func FuzzDecode(f *testing.F) {
	for _, data := range seedSegments(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := segment.Decode(data)
		if err != nil {
			if !errors.Is(err, segment.ErrCorrupt) {
				t.Fatalf("Decode()=%v, want nil or ErrCorrupt", err)
			}
			return
		}
		enc := segment.NewEncoder(s.PageSize)
		pages := make([][]byte, len(s.Entries))
		for i, e := range s.Entries {
			p, err := s.Page(i)
			if err != nil {
				t.Fatalf("Page(%d)=%v after Decode succeeded", i, err)
			}
			if len(p) != s.PageSize || segment.PageHash(p) != e.Hash {
				t.Fatalf("Page(%d) is %d bytes with hash %x, entry says %x", i, len(p), segment.PageHash(p), e.Hash)
			}
			frame := data[e.FrameOffset : e.FrameOffset+e.FrameLength]
			if q, err := segment.ReadPage(frame, e.PageOffset, s.PageSize, e.Hash); err != nil || !bytes.Equal(p, q) {
				t.Fatalf("ReadPage(entry %d)=%v, or differs from Page(%d)", i, err, i)
			}
			if err := enc.Add(e.Volume, e.Version, e.PageNo, p); err != nil {
				t.Fatalf("re-encode entry %d: %v", i, err)
			}
			pages[i] = p
		}
		again, entries, err := enc.Finish()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		s2, err := segment.Decode(again)
		if err != nil {
			t.Fatalf("Decode(re-encoded)=%v", err)
		}
		for i, e := range entries {
			o := s.Entries[i]
			if e.Volume != o.Volume || e.Version != o.Version || e.PageNo != o.PageNo || e.Hash != o.Hash {
				t.Fatalf("re-encoded entry %d=%+v, want %+v", i, e, o)
			}
			p, err := s2.Page(i)
			if err != nil || !bytes.Equal(p, pages[i]) {
				t.Fatalf("re-encoded Page(%d)=%v, or differs", i, err)
			}
		}
	})
}

// FuzzReadPage checks that ReadPage never panics on any frame bytes, offset,
// page size and hash, fails only with ErrCorrupt or ErrInvalidPageSize, and
// when it succeeds returns a page of the page size with the requested hash
// that is the very page DecodeFrame and PageInFrame find.
func FuzzReadPage(f *testing.F) {
	data, entries := smallSegment(f)
	for _, e := range entries {
		f.Add(data[e.FrameOffset:e.FrameOffset+e.FrameLength], e.PageOffset, 512, e.Hash)
	}
	f.Add([]byte("CMBF"), int64(0), 4096, uint64(0))
	f.Fuzz(func(t *testing.T, frame []byte, pageOffset int64, pageSize int, hash uint64) {
		page, err := segment.ReadPage(frame, pageOffset, pageSize, hash)
		if err != nil {
			if !errors.Is(err, segment.ErrCorrupt) && !errors.Is(err, segment.ErrInvalidPageSize) {
				t.Fatalf("ReadPage()=%v, want nil, ErrCorrupt or ErrInvalidPageSize", err)
			}
			return
		}
		if len(page) != pageSize || segment.PageHash(page) != hash {
			t.Fatalf("ReadPage() returned %d bytes with hash %x, want %d with %x", len(page), segment.PageHash(page), pageSize, hash)
		}
		decoded, err := segment.DecodeFrame(frame, pageSize)
		if err != nil {
			t.Fatalf("DecodeFrame()=%v after ReadPage succeeded", err)
		}
		p2, err := segment.PageInFrame(decoded, pageOffset, pageSize, hash)
		if err != nil || !bytes.Equal(page, p2) {
			t.Fatalf("PageInFrame()=%v, or differs from ReadPage", err)
		}
	})
}
