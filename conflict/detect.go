package conflict

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// MaxListed is the most conflicting pages a Report lists; ConflictCount
// counts them all.
const MaxListed = 64

// maxReasonPages is the most conflicting pages Reason describes.
const maxReasonPages = 8

// Range is the pages First, First+1, ..., First+Count-1. Read sets arrive as
// ascending, disjoint ranges and are never expanded: a VACUUM reads every
// page, and a malicious client may name 2^32 of them.
type Range struct{ First, Count uint32 }

// Change is a page written by a version in (Base, Head], with the newest
// version that wrote it — what the page index answers without reading
// pages (pgschema.Tx.ChangedPages).
type Change struct {
	Page    uint32
	Version int64
}

// Input is what Detect needs to know about one stale commit. Everything in
// it comes from the request and the page index, plus the two stored copies
// of page 1.
type Input struct {
	// Base is the version the commit was made on; Head is the volume's head.
	Base, Head int64
	// Changed lists the pages written by versions Base+1..Head, ascending by
	// page, each with the newest version that wrote it.
	Changed []Change
	// ReadSet is the pages the commit read, as ascending disjoint ranges.
	ReadSet []Range
	// Written is the pages the commit wrote, ascending.
	Written []uint32
	// BaseCount and HeadCount are the database's page counts at Base and
	// Head; ClientCount is the commit's page count after.
	BaseCount, HeadCount, ClientCount uint32
	// BasePage1 and HeadPage1 are page 1 at Base and at Head, nil for an
	// empty version. ClientPage1 is page 1 as the commit wrote it, nil if it
	// did not (SQLite always does on commit).
	BasePage1, HeadPage1, ClientPage1 []byte
	// Page1Unread says BasePage1, HeadPage1 and BaseCount were left out,
	// not read, because Overlaps found a conflicting page already: the
	// commit cannot merge whatever page 1 says (a hot row's stale commits
	// then cost no page reads to judge). Page 1's verdict is Page1Unread.
	Page1Unread bool
}

// Overlaps reports whether a page other than 1 that a version in (Base,
// Head] wrote is one the commit read or wrote: then Detect cannot find it
// mergeable, whatever page 1 says. It reads no page.
func Overlaps(in Input) bool {
	changed := normalizeChanges(in.Changed)
	changedSpans := make(spans, 0, len(changed))
	for _, c := range changed {
		changedSpans = append(changedSpans, span{c.Page, c.Page})
	}
	touched := union(spansOfRanges(in.ReadSet), spansOfPages(in.Written))
	return without(intersect(coalesce(changedSpans), touched), 1).pages() > 0
}

// Cause says why a page conflicts.
type Cause uint8

const (
	// Changed: a version in (Base, Head] wrote the page and the commit read
	// or wrote it.
	Changed Cause = iota + 1
	// Truncated: head shrank below the page (it is in (HeadCount,
	// BaseCount]) and the commit read or wrote it.
	Truncated
	// PastEnd: the page lies beyond the merged page count, and the commit
	// wrote it or a version in (Base, Head] did: a merge would lose it.
	PastEnd
)

func (c Cause) String() string {
	switch c {
	case Changed:
		return "changed"
	case Truncated:
		return "truncated"
	case PastEnd:
		return "past end"
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// PageConflict is one page that keeps a commit from merging.
type PageConflict struct {
	Page  uint32
	Cause Cause
	// Version is the newest version in (Base, Head] that wrote Page, or 0
	// when none did.
	Version int64
	// Read and Written say whether the commit read and wrote Page.
	Read, Written bool
	// Object owns Page at head, once (*Report).NameTables found it; the zero
	// Object means unknown.
	Object Object
}

// Merge is what a mergeable commit stores: its own pages except page 1,
// then Page1, with PageCount pages in all.
type Merge struct {
	// Page1 is the side's page 1 that supplies it (see Page1Verdict), with
	// the change counter and version-valid-for (bytes 24–27, 92–95) set to
	// head's change counter + 1.
	Page1 []byte
	// PageCount is the database's size in pages after the merge; it equals
	// bytes 28–31 of Page1 and no page the commit wrote lies beyond it.
	PageCount uint32
}

// Report is Detect's verdict on one stale commit.
//
// Merge is non-nil exactly when Page1 does not conflict and ConflictCount is
// zero. Conflicts lists the first MaxListed conflicting pages, ascending;
// page 1 is never among them, Page1 judges it.
type Report struct {
	Base, Head    int64
	Page1         Page1Verdict
	Conflicts     []PageConflict
	ConflictCount uint64 // all conflicting pages, listed or not
	Merge         *Merge

	p1        page1Judgement
	headCount uint32
}

// Mergeable reports whether the commit can be stored on top of head as it
// is, with Merge's page 1 and page count.
func (r *Report) Mergeable() bool { return r.Merge != nil }

// Detect applies DESIGN.md's commit protocol, step 4, to one commit made on
// in.Base < in.Head:
//
//   - a page other than 1 that a version in (Base, Head] wrote and the commit
//     read or wrote conflicts (write–write overlap counts: two appends to
//     different tables both write the same new page without reading it);
//   - a page the commit read or wrote that head cut off by shrinking,
//     (HeadCount, BaseCount], conflicts;
//   - page 1 is judged by its header (see Page1Verdict);
//   - a page that would lie beyond the merged page count conflicts when the
//     commit or a version in (Base, Head] wrote it, since the merge would
//     lose that write.
//
// Detect reads no page and never expands read ranges: its time and memory
// are linear in the size of in, and the Report's size is bounded whatever
// in holds.
func Detect(in Input) *Report {
	p1 := judgePage1(&in)
	r := &Report{Base: in.Base, Head: in.Head, Page1: p1.verdict, p1: p1, headCount: in.HeadCount}

	changed := normalizeChanges(in.Changed)
	changedSpans := make(spans, 0, len(changed))
	for _, c := range changed {
		changedSpans = append(changedSpans, span{c.Page, c.Page})
	}
	changedSpans = coalesce(changedSpans)
	read := spansOfRanges(in.ReadSet)
	written := spansOfPages(in.Written)
	touched := union(read, written)

	bad := intersect(changedSpans, touched)
	if in.HeadCount < in.BaseCount {
		bad = union(bad, clip(touched, in.HeadCount+1, in.BaseCount))
	}
	if !p1.verdict.Conflicts() && p1.pageCount < math.MaxUint32 {
		bad = union(bad, clip(written, p1.pageCount+1, math.MaxUint32))
		bad = union(bad, clip(changedSpans, p1.pageCount+1, math.MaxUint32))
	}
	bad = without(bad, 1)
	r.ConflictCount = bad.pages()

	for _, s := range bad {
		for p := uint64(s.lo); p <= uint64(s.hi) && len(r.Conflicts) < MaxListed; p++ {
			r.Conflicts = append(r.Conflicts, describe(uint32(p), changed, changedSpans, read, written, &in))
		}
		if len(r.Conflicts) == MaxListed {
			break
		}
	}
	if !p1.verdict.Conflicts() && r.ConflictCount == 0 {
		r.Merge = &Merge{Page1: p1.page1, PageCount: p1.pageCount}
	}
	return r
}

// describe builds the PageConflict for page p, known to conflict.
func describe(p uint32, changed []Change, changedSpans, read, written spans, in *Input) PageConflict {
	c := PageConflict{Page: p, Read: read.contains(p), Written: written.contains(p)}
	if i, ok := slices.BinarySearchFunc(changed, p, func(c Change, p uint32) int { return cmp.Compare(c.Page, p) }); ok {
		c.Version = changed[i].Version
	}
	switch {
	case changedSpans.contains(p) && (c.Read || c.Written):
		c.Cause = Changed
	case in.HeadCount < p && p <= in.BaseCount && (c.Read || c.Written):
		c.Cause = Truncated
	default:
		c.Cause = PastEnd
	}
	return c
}

// normalizeChanges returns cs sorted by page with one entry per page (the
// newest version) and no page 0, copying only if cs is not already so.
func normalizeChanges(cs []Change) []Change {
	ok := true
	for i, c := range cs {
		if c.Page == 0 || i > 0 && cs[i-1].Page >= c.Page {
			ok = false
			break
		}
	}
	if ok {
		return cs
	}
	out := slices.Clone(cs)
	slices.SortFunc(out, func(a, b Change) int {
		return cmp.Or(cmp.Compare(a.Page, b.Page), cmp.Compare(b.Version, a.Version))
	})
	out = slices.CompactFunc(out, func(a, b Change) bool { return a.Page == b.Page })
	if len(out) > 0 && out[0].Page == 0 {
		out = out[1:]
	}
	return out
}

// Reason says in one line, for humans, why the commit does or does not
// merge, e.g. "page 7 (table accounts) written by v12, read by this commit".
// Its length is bounded whatever the Report holds.
func (r *Report) Reason() string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
	}
	if r.Merge != nil {
		fmt.Fprintf(&b, "mergeable on v%d: page 1 %s, %d pages", r.Head, r.Page1, r.Merge.PageCount)
		return b.String()
	}
	field := func(off int) string {
		name, start := headerField(off)
		return fmt.Sprintf("%s, byte %d", name, start)
	}
	switch r.Page1 {
	case Page1SchemaChanged:
		fmt.Fprintf(&b, "page 1: schema changed on head since v%d (%s)", r.Base, field(r.p1.headOff))
	case Page1BothChanged:
		fmt.Fprintf(&b, "page 1 changed by head (%s) and by this commit (%s)", field(r.p1.headOff), field(r.p1.clientOff))
	case Page1Invalid:
		fmt.Fprintf(&b, "page 1 invalid: %s", r.p1.invalid)
	}
	for i, c := range r.Conflicts {
		if i == maxReasonPages {
			break
		}
		sep()
		fmt.Fprintf(&b, "page %d", c.Page)
		if c.Object != (Object{}) {
			fmt.Fprintf(&b, " (%s)", c.Object)
		}
		by := ""
		switch {
		case c.Read && c.Written:
			by = "read and written by this commit"
		case c.Read:
			by = "read by this commit"
		case c.Written:
			by = "written by this commit"
		}
		switch c.Cause {
		case Changed:
			fmt.Fprintf(&b, " written by v%d, %s", c.Version, by)
		case Truncated:
			fmt.Fprintf(&b, " cut off by head (%d pages), %s", r.headCount, by)
		case PastEnd:
			if c.Version != 0 {
				fmt.Fprintf(&b, " written by v%d", c.Version)
			} else {
				b.WriteString(" " + by)
			}
			fmt.Fprintf(&b, ", beyond the merged page count %d", r.p1.pageCount)
		}
	}
	if more := r.ConflictCount - uint64(min(len(r.Conflicts), maxReasonPages)); more > 0 {
		sep()
		fmt.Fprintf(&b, "and %d more conflicting pages", more)
	}
	return b.String()
}
