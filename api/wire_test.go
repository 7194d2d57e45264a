package api

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cambiumdb/cambium/commit"
)

func testRequests(rng *rand.Rand, n, pageSize int) []commit.Request {
	reqs := make([]commit.Request, n)
	for i := range reqs {
		r := commit.Request{ClientID: "client-a", Seq: int64(i + 1), Base: int64(rng.IntN(50)), PageSize: pageSize, PageCount: uint32(10 + rng.IntN(90))}
		if i > 0 {
			r.Parent = int64(i)
		}
		for no := uint32(1); no <= r.PageCount; no += uint32(1 + rng.IntN(20)) {
			data := make([]byte, pageSize)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			r.Pages = append(r.Pages, commit.Page{No: no, Data: data})
		}
		var read []uint32
		for no := uint32(1); no <= r.PageCount+20; no++ { // reads may lie beyond the final page count
			if rng.IntN(3) == 0 {
				read = append(read, no)
			}
		}
		r.ReadSet = commit.RangesOf(read)
		if rng.IntN(2) == 0 {
			r.Record = []byte("INSERT INTO t VALUES (?)")
		}
		reqs[i] = r
	}
	return reqs
}

func TestPush_RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	want := testRequests(rng, 5, 512)
	body := AppendPush(nil, want)
	got, err := DecodePush(body)
	if err != nil {
		t.Fatalf("DecodePush: %v", err)
	}
	for i := range want {
		if got[i].Checksum == 0 {
			t.Fatalf("commit %d: no checksum", i)
		}
		want[i].Checksum = got[i].Checksum
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodePush(AppendPush(reqs)) differs from reqs")
	}
}

func TestDecodePush_Damage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	body := AppendPush(nil, testRequests(rng, 2, 512))
	t.Run("Truncated", func(t *testing.T) {
		for n := 0; n < len(body); n += 1 + n/50 {
			if _, err := DecodePush(body[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodePush(body[:%d]) = %v, want ErrMalformed", n, err)
			}
		}
	})
	t.Run("FlippedByte", func(t *testing.T) {
		for i := len(pushMagic); i < len(body); i += 7 {
			b := bytes.Clone(body)
			b[i] ^= 0x40
			_, err := DecodePush(b)
			var ce *commit.ChecksumError
			if !errors.Is(err, ErrMalformed) && !errors.As(err, &ce) {
				t.Fatalf("byte %d flipped: err = %v, want ErrMalformed or *ChecksumError", i, err)
			}
		}
	})
	t.Run("TrailingBytes", func(t *testing.T) {
		if _, err := DecodePush(append(bytes.Clone(body), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	})
}

func TestReadSetRuns(t *testing.T) {
	for _, set := range [][]uint32{nil, {1}, {1, 2, 3}, {1, 3, 5, 6, 7, 100}, {2, 4000000000}, {1<<32 - 2}} {
		r := commit.Request{ClientID: "c", Seq: 1, PageSize: 512, PageCount: 3, ReadSet: commit.RangesOf(set)}
		got, err := DecodePush(AppendPush(nil, []commit.Request{r}))
		if err != nil {
			t.Fatalf("%v: %v", set, err)
		}
		if !reflect.DeepEqual(got[0].ReadSet, r.ReadSet) {
			t.Fatalf("read set %v came back as %v", r.ReadSet, got[0].ReadSet)
		}
	}
	// A run past SQLite's largest page number is malformed, not a huge allocation.
	bad := commit.Request{ClientID: "c", Seq: 1, PageSize: 512, PageCount: 3, ReadSet: []commit.PageRange{{First: 5, Count: 1<<32 - 1}}}
	if _, err := DecodePush(AppendPush(nil, []commit.Request{bad})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overlong run: err = %v, want ErrMalformed", err)
	}
}

func encodeStream(t testing.TB, h PageStreamHeader, ps []StreamedPage) []byte {
	var buf bytes.Buffer
	w, err := NewPageWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readStream(b []byte) ([]StreamedPage, PageStreamHeader, error) {
	r, err := NewPageReader(bytes.NewReader(b))
	if err != nil {
		return nil, PageStreamHeader{}, err
	}
	var out []StreamedPage
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out, r.Header, nil
		}
		if err != nil {
			return out, r.Header, err
		}
		out = append(out, p)
	}
}

func TestPageStream(t *testing.T) {
	h := PageStreamHeader{PageSize: 512, Head: 9, PageCount: 7}
	var want []StreamedPage
	for no := uint32(1); no <= 7; no += 2 {
		want = append(want, StreamedPage{No: no, Version: int64(no), Data: bytes.Repeat([]byte{byte(no)}, 512)})
	}
	body := encodeStream(t, h, want)
	t.Run("OK", func(t *testing.T) {
		got, gh, err := readStream(body)
		if err != nil {
			t.Fatal(err)
		}
		if gh != h || !reflect.DeepEqual(got, want) {
			t.Fatalf("stream came back as %+v %d pages", gh, len(got))
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		for n := 0; n < len(body); n++ {
			if _, _, err := readStream(body[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("stream[:%d]: err = %v, want ErrMalformed", n, err)
			}
		}
	})
	t.Run("FlippedByte", func(t *testing.T) {
		for i := 0; i < len(body); i += 5 {
			b := bytes.Clone(body)
			b[i] ^= 0x01
			got, gh, err := readStream(b)
			if err == nil && (gh != h || !reflect.DeepEqual(got, want)) {
				// A flip may only go unnoticed where it changes no page: the
				// page-number/version varints are not checksummed, so they
				// must at least stay in range; bytes of page data must not.
				for _, p := range got {
					if Checksum(p.Data) != Checksum(want[0].Data) && !containsPage(want, p) {
						t.Fatalf("byte %d flipped: wrong page data accepted", i)
					}
				}
			}
		}
	})
}

func containsPage(ps []StreamedPage, p StreamedPage) bool {
	for _, q := range ps {
		if bytes.Equal(q.Data, p.Data) {
			return true
		}
	}
	return false
}

func FuzzDecodePush(f *testing.F) {
	// Small seeds: the fuzzer mutates and minimizes whole inputs, and slows
	// to a crawl on inputs of tens of kilobytes.
	small := func(seq int64, pages ...uint32) commit.Request {
		r := commit.Request{ClientID: "c", Seq: seq, Base: 1, PageSize: 512, PageCount: 4, Record: []byte("INSERT")}
		for _, no := range pages {
			r.Pages = append(r.Pages, commit.Page{No: no, Data: bytes.Repeat([]byte{byte(no)}, 512)})
		}
		r.ReadSet = []commit.PageRange{{First: 1, Count: 2}, {First: 4, Count: 1}}
		return r
	}
	f.Add(AppendPush(nil, []commit.Request{small(1, 1)}))
	second := small(2, 1, 3)
	second.Parent = 1
	f.Add(AppendPush(nil, []commit.Request{small(1, 2), second}))
	f.Add(AppendPush(nil, nil))
	f.Add([]byte(pushMagic + "\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, body []byte) {
		reqs, err := DecodePush(body)
		if err != nil {
			var ce *commit.ChecksumError
			if !errors.Is(err, ErrMalformed) && !errors.As(err, &ce) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What decodes must encode back to the same bytes.
		if again := AppendPush(nil, reqs); !bytes.Equal(again, body) {
			t.Fatalf("re-encoding differs: %d bytes vs %d", len(again), len(body))
		}
	})
}

func FuzzPageStream(f *testing.F) {
	f.Add(encodeStream(f, PageStreamHeader{PageSize: 512, Head: 3, PageCount: 2},
		[]StreamedPage{{No: 1, Version: 1, Data: make([]byte, 512)}, {No: 2, Version: 3, Data: bytes.Repeat([]byte{7}, 512)}}))
	f.Add(encodeStream(f, PageStreamHeader{PageSize: 4096, Head: 0, PageCount: 0}, nil))
	f.Fuzz(func(t *testing.T, body []byte) {
		ps, h, err := readStream(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, p := range ps {
			if p.No == 0 || p.No > h.PageCount || p.Version > h.Head || len(p.Data) != h.PageSize {
				t.Fatalf("accepted page %d@%d of %d bytes under header %+v", p.No, p.Version, len(p.Data), h)
			}
		}
	})
}
