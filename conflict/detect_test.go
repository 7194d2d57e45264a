package conflict

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"
)

// Synthetic inputs: each rule of Detect in isolation, including the ones
// SQLite never exercises on its own (huge read sets, inputs out of order,
// commits that contradict their page 1).

const synthSize = 512

// header returns a page 1 of synthSize bytes for a database of count
// pages, with change counter counter, after applying mods.
func header(count, counter uint32, mods ...func(p []byte)) []byte {
	p := make([]byte, synthSize)
	copy(p, magic)
	binary.BigEndian.PutUint16(p[hdrPageSize:], synthSize)
	p[18], p[19], p[21], p[22], p[23] = 1, 1, 64, 32, 32
	binary.BigEndian.PutUint32(p[hdrChangeCounter:], counter)
	binary.BigEndian.PutUint32(p[hdrPageCount:], count)
	binary.BigEndian.PutUint32(p[hdrSchemaCookie:], 1)
	binary.BigEndian.PutUint32(p[44:], 4)
	binary.BigEndian.PutUint32(p[hdrTextEncoding:], 1)
	binary.BigEndian.PutUint32(p[hdrVersionValid:], counter)
	binary.BigEndian.PutUint32(p[hdrLibVersion:], 3054001)
	p[hdrSize] = tableLeaf
	for _, m := range mods {
		m(p)
	}
	return p
}

func set32(off int, v uint32) func([]byte) {
	return func(p []byte) { binary.BigEndian.PutUint32(p[off:], v) }
}

func TestDetect_Page1(t *testing.T) {
	for _, c := range []struct {
		name       string
		in         Input
		want       Page1Verdict
		wantCount  uint32
		wantSource []byte // the page 1 Merge.Page1 must equal but for its counters
	}{
		{
			name: "CountersOnly",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 77)},
			want: Page1Unchanged, wantCount: 10, wantSource: header(10, 9),
		},
		{
			// Bytes 96–99 say which SQLite library wrote last: clients and
			// replay on different SQLite versions must still merge.
			name: "LibraryVersionOnly",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9, set32(hdrLibVersion, 3046000)), ClientPage1: header(10, 6, set32(hdrLibVersion, 3050000))},
			want: Page1Unchanged, wantCount: 10, wantSource: header(10, 9, set32(hdrLibVersion, 3046000)),
		},
		{
			name: "HeadGrew",
			in: Input{BaseCount: 10, HeadCount: 12, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(12, 9), ClientPage1: header(10, 6)},
			want: Page1FromHead, wantCount: 12, wantSource: header(12, 9),
		},
		{
			name: "ClientFreelist",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 6, set32(hdrFreelistCount, 1), set32(hdrFreelistTrunk, 7))},
			want: Page1FromClient, wantCount: 10, wantSource: header(10, 6, set32(hdrFreelistCount, 1), set32(hdrFreelistTrunk, 7)),
		},
		{
			name: "ClientSchema",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 11,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(11, 6, set32(hdrSchemaCookie, 2))},
			want: Page1FromClient, wantCount: 11, wantSource: header(11, 6, set32(hdrSchemaCookie, 2)),
		},
		{
			name: "ClientDidNotWritePage1",
			in: Input{BaseCount: 10, HeadCount: 12, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(12, 9)},
			want: Page1FromHead, wantCount: 12, wantSource: header(12, 9),
		},
		{
			name: "BothChanged",
			in: Input{BaseCount: 10, HeadCount: 11, ClientCount: 12,
				BasePage1: header(10, 5), HeadPage1: header(11, 9), ClientPage1: header(12, 6)},
			want: Page1BothChanged,
		},
		{
			name: "BothChangedAlike",
			in: Input{BaseCount: 10, HeadCount: 11, ClientCount: 11,
				BasePage1: header(10, 5), HeadPage1: header(11, 9), ClientPage1: header(11, 6)},
			want: Page1BothChanged,
		},
		{
			name: "HeadUserVersion",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9, set32(60, 3)), ClientPage1: header(10, 6)},
			want: Page1SchemaChanged,
		},
		{
			name: "HeadSchemaTable",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9, func(p []byte) { p[synthSize-1] = 1 }), ClientPage1: header(10, 6)},
			want: Page1SchemaChanged,
		},
		{
			name: "HeadSchemaAndClientUnchanged",
			in: Input{BaseCount: 10, HeadCount: 11, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(11, 9, set32(hdrSchemaCookie, 2))},
			want: Page1SchemaChanged,
		},
		{
			name: "EmptyBase",
			in:   Input{HeadCount: 2, ClientCount: 2, HeadPage1: header(2, 1), ClientPage1: header(2, 1)},
			want: Page1SchemaChanged,
		},
		{
			name: "EmptyBaseHeadUnchanged",
			in:   Input{ClientCount: 2, ClientPage1: header(2, 1)},
			want: Page1FromClient, wantCount: 2, wantSource: header(2, 1),
		},
		{
			name: "SizesDiffer",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: append(header(10, 6), make([]byte, synthSize)...)},
			want: Page1Invalid,
		},
		{
			name: "CountDisagrees",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 11,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 6)},
			want: Page1Invalid,
		},
		{
			name: "HeadCountDisagrees",
			in: Input{BaseCount: 10, HeadCount: 12, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(11, 9), ClientPage1: header(10, 6)},
			want: Page1Invalid,
		},
		{
			name: "NoPage1GrowsFile",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 11,
				BasePage1: header(10, 5), HeadPage1: header(10, 9)},
			want: Page1Invalid,
		},
		{
			name: "NotAHeader",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 6, func(p []byte) { p[0] = 'X' })},
			want: Page1Invalid,
		},
		{
			name: "PageSizeField",
			in: Input{BaseCount: 10, HeadCount: 10, ClientCount: 10,
				BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 6, func(p []byte) { p[16] = 4 })},
			want: Page1Invalid,
		},
		{
			name: "Nothing",
			in:   Input{},
			want: Page1Invalid,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.in.Base, c.in.Head = 1, 2
			r := Detect(c.in)
			if r.Page1 != c.want {
				t.Fatalf("Page1=%v, want %v (%s)", r.Page1, c.want, r.Reason())
			}
			if got, want := r.Mergeable(), !c.want.Conflicts(); got != want {
				t.Fatalf("Mergeable()=%v, want %v", got, want)
			}
			if !r.Mergeable() {
				if !strings.HasPrefix(r.Reason(), "page 1") {
					t.Fatalf("Reason()=%q does not start with page 1", r.Reason())
				}
				return
			}
			if r.Merge.PageCount != c.wantCount {
				t.Fatalf("Merge.PageCount=%d, want %d", r.Merge.PageCount, c.wantCount)
			}
			var headCounter uint32
			if c.in.HeadPage1 != nil {
				headCounter = binary.BigEndian.Uint32(c.in.HeadPage1[hdrChangeCounter:])
			}
			want := slices.Clone(c.wantSource)
			binary.BigEndian.PutUint32(want[hdrChangeCounter:], headCounter+1)
			binary.BigEndian.PutUint32(want[hdrVersionValid:], headCounter+1)
			if !slices.Equal(r.Merge.Page1, want) {
				t.Fatalf("Merge.Page1 differs from the source with counters %d", headCounter+1)
			}
		})
	}
}

// base10 is an input at base v1 and head v3 over a 10-page database whose
// page 1 did not change (counters aside).
func base10() Input {
	return Input{Base: 1, Head: 3, BaseCount: 10, HeadCount: 10, ClientCount: 10,
		BasePage1: header(10, 5), HeadPage1: header(10, 9), ClientPage1: header(10, 6)}
}

func TestDetect_Pages(t *testing.T) {
	t.Run("ReadWrite", func(t *testing.T) {
		in := base10()
		in.Changed = []Change{{1, 3}, {4, 2}, {6, 3}}
		in.ReadSet = []Range{{1, 1}, {3, 2}}
		in.Written = []uint32{1, 5}
		r := Detect(in)
		want := []PageConflict{{Page: 4, Cause: Changed, Version: 2, Read: true}}
		if !slices.Equal(r.Conflicts, want) || r.ConflictCount != 1 || r.Mergeable() {
			t.Fatalf("Conflicts=%+v (count %d), want %+v", r.Conflicts, r.ConflictCount, want)
		}
	})
	t.Run("WriteWrite", func(t *testing.T) {
		// Two appends: both wrote page 8 and neither read it.
		in := base10()
		in.Changed = []Change{{1, 2}, {8, 2}}
		in.ReadSet = []Range{{1, 3}}
		in.Written = []uint32{1, 3, 8}
		r := Detect(in)
		want := []PageConflict{{Page: 8, Cause: Changed, Version: 2, Written: true}}
		if !slices.Equal(r.Conflicts, want) || r.Mergeable() {
			t.Fatalf("Conflicts=%+v, want %+v", r.Conflicts, want)
		}
		if got, want := r.Reason(), "page 8 written by v2, written by this commit"; got != want {
			t.Fatalf("Reason()=%q, want %q", got, want)
		}
	})
	t.Run("Page1Excluded", func(t *testing.T) {
		in := base10()
		in.Changed = []Change{{1, 2}, {3, 3}}
		in.ReadSet = []Range{{1, 2}}
		in.Written = []uint32{1, 2}
		r := Detect(in)
		if !r.Mergeable() || r.Page1 != Page1Unchanged {
			t.Fatalf("page 1 alone conflicted: %s", r.Reason())
		}
	})
	t.Run("HugeReadSet", func(t *testing.T) {
		// A read set of 2^32-1 pages is never expanded.
		in := base10()
		in.Changed = []Change{{2, 2}, {3, 3}, {9, 2}}
		in.ReadSet = []Range{{1, math.MaxUint32}}
		r := Detect(in)
		if r.ConflictCount != 3 || len(r.Conflicts) != 3 || r.Conflicts[2].Version != 2 {
			t.Fatalf("Conflicts=%+v (count %d), want pages 2, 3, 9", r.Conflicts, r.ConflictCount)
		}
	})
	t.Run("Unsorted", func(t *testing.T) {
		in := base10()
		in.Changed = []Change{{9, 2}, {3, 2}, {3, 3}, {0, 3}}
		in.ReadSet = []Range{{8, 3}, {0, 0}, {2, 2}, {math.MaxUint32, 10}}
		in.Written = []uint32{9, 3, 3}
		r := Detect(in)
		want := []PageConflict{{Page: 3, Cause: Changed, Version: 3, Read: true, Written: true}, {Page: 9, Cause: Changed, Version: 2, Read: true, Written: true}}
		if !slices.Equal(r.Conflicts, want) {
			t.Fatalf("Conflicts=%+v, want %+v", r.Conflicts, want)
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		// Head shrank from 2^31 pages to 10; the commit read them all.
		in := base10()
		in.BaseCount, in.ClientCount = 1<<31, 1<<31
		in.BasePage1, in.ClientPage1 = header(1<<31, 5), header(1<<31, 6)
		in.ReadSet = []Range{{1, 1 << 31}}
		in.Written = []uint32{1, 12}
		r := Detect(in)
		if got, want := r.ConflictCount, uint64(1<<31-10); got != want {
			t.Fatalf("ConflictCount=%d, want %d", got, want)
		}
		if len(r.Conflicts) != MaxListed || r.Conflicts[0] != (PageConflict{Page: 11, Cause: Truncated, Read: true}) ||
			r.Conflicts[1] != (PageConflict{Page: 12, Cause: Truncated, Read: true, Written: true}) {
			t.Fatalf("Conflicts[:2]=%+v", r.Conflicts[:2])
		}
		if r.Page1 != Page1FromHead {
			t.Fatalf("Page1=%v, want %v", r.Page1, Page1FromHead)
		}
		if got := r.Reason(); len(got) > 1024 || !strings.HasSuffix(got, "and 2147483630 more conflicting pages") {
			t.Fatalf("Reason()=%q", got)
		}
	})
	t.Run("WrittenPastEnd", func(t *testing.T) {
		// A commit whose page 1 says 10 pages but that wrote page 11.
		in := base10()
		in.ClientPage1 = header(10, 6, set32(hdrFreelistCount, 1))
		in.Written = []uint32{1, 11}
		r := Detect(in)
		want := []PageConflict{{Page: 11, Cause: PastEnd, Written: true}}
		if !slices.Equal(r.Conflicts, want) || r.Mergeable() {
			t.Fatalf("Conflicts=%+v, want %+v", r.Conflicts, want)
		}
		if got, want := r.Reason(), "page 11 written by this commit, beyond the merged page count 10"; got != want {
			t.Fatalf("Reason()=%q, want %q", got, want)
		}
	})
	t.Run("HeadWritePastEnd", func(t *testing.T) {
		// The commit shrank the file to 8 pages without reading page 9,
		// which head wrote: the merge would drop head's write.
		in := base10()
		in.ClientCount, in.ClientPage1 = 8, header(8, 6)
		in.Changed = []Change{{9, 2}}
		in.ReadSet = []Range{{1, 3}}
		r := Detect(in)
		want := []PageConflict{{Page: 9, Cause: PastEnd, Version: 2}}
		if !slices.Equal(r.Conflicts, want) || r.Mergeable() {
			t.Fatalf("Conflicts=%+v, want %+v", r.Conflicts, want)
		}
		if got, want := r.Reason(), "page 9 written by v2, beyond the merged page count 8"; got != want {
			t.Fatalf("Reason()=%q, want %q", got, want)
		}
	})
	t.Run("Bounded", func(t *testing.T) {
		in := base10()
		in.BaseCount, in.HeadCount, in.ClientCount = 1<<20, 1<<20, 1<<20
		in.BasePage1, in.HeadPage1, in.ClientPage1 = header(1<<20, 5), header(1<<20, 9), header(1<<20, 6)
		for p := uint32(2); p <= 1<<20; p += 2 {
			in.Changed = append(in.Changed, Change{p, 2})
		}
		in.ReadSet = []Range{{1, 1 << 20}}
		r := Detect(in)
		if got, want := r.ConflictCount, uint64(1<<19); got != want || len(r.Conflicts) != MaxListed {
			t.Fatalf("ConflictCount=%d, len(Conflicts)=%d, want %d, %d", got, len(r.Conflicts), want, MaxListed)
		}
		for i := range r.Conflicts {
			r.Conflicts[i].Object = Object{Type: "table", Name: strings.Repeat("x\n", 1000)}
		}
		if got := r.Reason(); len(got) > 2048 || strings.Contains(got, "\n") {
			t.Fatalf("Reason() is %d bytes: %q", len(got), got)
		}
	})
}

func TestObject_String(t *testing.T) {
	for _, c := range []struct {
		o    Object
		want string
	}{
		{Object{Type: "table", Name: "accounts", Table: "accounts"}, "table accounts"},
		{Object{Type: "index", Name: "accounts_k", Table: "accounts"}, "index accounts_k on accounts"},
		{Object{Type: "table", Name: "my table"}, `table "my table"`},
		{Object{Type: "table", Name: "café"}, "table café"},
		{Object{Type: "freelist"}, "freelist"},
		{Object{Type: "ptrmap"}, "pointer map"},
		{Object{Type: "table", Name: strings.Repeat("a", 70)}, `table "` + strings.Repeat("a", 64) + `"…`},
		{Object{Type: "x\ny", Name: "\xff"}, `"x\ny" "\xff"`},
	} {
		if got := c.o.String(); got != c.want {
			t.Errorf("%#v.String()=%q, want %q", c.o, got, c.want)
		}
	}
}
