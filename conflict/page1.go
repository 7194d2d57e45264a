package conflict

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Page1Verdict is the judgement on page 1, made from its header rather than
// from page overlap (see the package documentation).
type Page1Verdict uint8

const (
	// Page1Unchanged: neither head nor the commit changed page 1 since base,
	// counters aside; head's page 1 is kept, with the counters advanced.
	Page1Unchanged Page1Verdict = iota
	// Page1FromHead: only head changed page 1 (page count or freelist, bytes
	// 28–39); head's page 1 and page count are kept, counters advanced.
	Page1FromHead
	// Page1FromClient: only the commit changed page 1; its page 1 and page
	// count are stored, counters advanced.
	Page1FromClient
	// Page1SchemaChanged (conflict): head changed byte 40 or beyond since
	// base — the schema cookie, user_version or the schema b-tree's root.
	Page1SchemaChanged
	// Page1BothChanged (conflict): head and the commit both changed page 1.
	Page1BothChanged
	// Page1Invalid (conflict): a copy of page 1 is not a database header
	// that agrees with its page count, or the copies differ in size.
	Page1Invalid
	// Page1Unread: the caller did not read the stored copies of page 1
	// (Input.Page1Unread) because another page conflicts already; page 1
	// is not judged, and the commit does not merge.
	Page1Unread
)

// Conflicts reports whether the verdict forbids merging.
func (v Page1Verdict) Conflicts() bool { return v >= Page1SchemaChanged }

func (v Page1Verdict) String() string {
	switch v {
	case Page1Unchanged:
		return "unchanged"
	case Page1FromHead:
		return "from head"
	case Page1FromClient:
		return "from commit"
	case Page1SchemaChanged:
		return "schema changed on head"
	case Page1BothChanged:
		return "changed on both sides"
	case Page1Invalid:
		return "invalid"
	case Page1Unread:
		return "not read"
	}
	return fmt.Sprintf("Page1Verdict(%d)", uint8(v))
}

// Offsets in the database header
// (https://www.sqlite.org/fileformat2.html#the_database_header).
const (
	hdrPageSize      = 16 // 2 bytes; 1 means 65536
	hdrReserved      = 20 // 1 byte: unused bytes at the end of each page
	hdrChangeCounter = 24 // 4 bytes, normalized
	hdrPageCount     = 28 // 4 bytes: "in-header database size"
	hdrFreelistTrunk = 32
	hdrFreelistCount = 36
	hdrSchemaCookie  = 40 // first byte of the schema part
	hdrLargestRoot   = 52 // non-zero in auto-vacuum databases
	hdrTextEncoding  = 56
	hdrVersionValid  = 92 // 4 bytes, normalized
	hdrLibVersion    = 96 // 4 bytes, normalized: SQLITE_VERSION_NUMBER of the last writer
	hdrSize          = 100

	minPageSize = 512
	maxPageSize = 65536
)

const magic = "SQLite format 3\x00"

// compared are the byte ranges of page 1 that are content. The rest —
// 24–27, 92–95, 96–99 — is stamped by the pager on every commit
// (pager_write_changecounter in SQLite's pager.c writes all three), so two
// pages differing only there hold the same database.
var compared = [...][2]int{{0, hdrChangeCounter}, {hdrChangeCounter + 4, hdrVersionValid}, {hdrSize, -1}}

// firstDiff returns the first content offset at or after from where a and b
// (same length) differ, or -1.
func firstDiff(a, b []byte, from int) int {
	for _, r := range compared {
		lo, hi := max(r[0], from), r[1]
		if hi < 0 {
			hi = len(a)
		}
		if lo >= hi || bytes.Equal(a[lo:hi], b[lo:hi]) {
			continue
		}
		for i := lo; i < hi; i++ {
			if a[i] != b[i] {
				return i
			}
		}
	}
	return -1
}

// page1Judgement is judgePage1's outcome.
type page1Judgement struct {
	verdict Page1Verdict
	// headOff and clientOff are the first content bytes where head and the
	// commit differ from base, or -1.
	headOff, clientOff int
	invalid            string // why, for Page1Invalid
	page1              []byte // for a merge: page 1 to store
	pageCount          uint32 // for a merge: the page count to store
}

// judgePage1 applies the page-1 rule of DESIGN.md's commit protocol, step 4.
func judgePage1(in *Input) page1Judgement {
	j := page1Judgement{headOff: -1, clientOff: -1}
	if in.Page1Unread {
		j.verdict = Page1Unread
		if !Overlaps(*in) {
			j.verdict, j.invalid = Page1Invalid, "not read, though no other page conflicts"
		}
		return j
	}
	size := 0
	for _, p := range [...][]byte{in.BasePage1, in.HeadPage1, in.ClientPage1} {
		if p == nil {
			continue
		}
		if size != 0 && len(p) != size {
			j.verdict, j.invalid = Page1Invalid, fmt.Sprintf("copies are %d and %d bytes", size, len(p))
			return j
		}
		size = len(p)
	}
	if size == 0 {
		j.verdict, j.invalid = Page1Invalid, "no copy of page 1"
		return j
	}
	for _, c := range [...]struct {
		who   string
		p     []byte
		count uint32
	}{
		{"base", in.BasePage1, in.BaseCount},
		{"head", in.HeadPage1, in.HeadCount},
		{"commit", in.ClientPage1, in.ClientCount},
	} {
		if msg := checkHeader(c.p, size, c.count, c.who); msg != "" {
			j.verdict, j.invalid = Page1Invalid, msg
			return j
		}
	}
	// A commit that did not write page 1 left base's in place, so its page
	// count is base's.
	if in.ClientPage1 == nil && in.ClientCount != in.BaseCount {
		j.verdict, j.invalid = Page1Invalid, fmt.Sprintf("commit has %d pages without writing page 1, base has %d", in.ClientCount, in.BaseCount)
		return j
	}

	// An empty version (version 0) has no page 1: compare against zeros, so
	// creating the database counts as a change.
	zero := make([]byte, size)
	orZero := func(p []byte) []byte {
		if p == nil {
			return zero
		}
		return p
	}
	base, head, client := orZero(in.BasePage1), orZero(in.HeadPage1), in.ClientPage1
	if client == nil {
		client = base
	}
	if off := firstDiff(base, head, hdrSchemaCookie); off >= 0 {
		j.verdict, j.headOff = Page1SchemaChanged, off
		return j
	}
	j.headOff, j.clientOff = firstDiff(base, head, 0), firstDiff(base, client, 0)
	supplier := head
	j.pageCount = in.HeadCount
	switch {
	case j.headOff >= 0 && j.clientOff >= 0:
		j.verdict = Page1BothChanged
		return j
	case j.clientOff >= 0:
		j.verdict, supplier, j.pageCount = Page1FromClient, client, in.ClientCount
	case j.headOff >= 0:
		j.verdict = Page1FromHead
	default:
		j.verdict = Page1Unchanged
	}
	j.page1 = bytes.Clone(supplier)
	counter := binary.BigEndian.Uint32(head[hdrChangeCounter:]) + 1
	binary.BigEndian.PutUint32(j.page1[hdrChangeCounter:], counter)
	binary.BigEndian.PutUint32(j.page1[hdrVersionValid:], counter)
	return j
}

// checkHeader returns why p, one copy of page 1, is not a database header
// of a database of size-byte pages and count pages, or "". A nil p stands
// for an empty version, which must have no pages — except for the commit,
// whose nil means it did not write page 1 (checked by the caller).
func checkHeader(p []byte, size int, count uint32, who string) string {
	if p == nil {
		if count != 0 && who != "commit" {
			return fmt.Sprintf("%s has %d pages and no page 1", who, count)
		}
		return ""
	}
	switch {
	case size < minPageSize || size > maxPageSize:
		return fmt.Sprintf("%s page 1 is %d bytes", who, size)
	case string(p[:len(magic)]) != magic:
		return fmt.Sprintf("%s page 1 has no SQLite header string", who)
	case headerPageSize(p) != size:
		return fmt.Sprintf("%s page 1 says page size %d, it is %d bytes", who, headerPageSize(p), size)
	}
	if n := binary.BigEndian.Uint32(p[hdrPageCount:]); n != count || n == 0 {
		return fmt.Sprintf("%s page 1 says %d pages, the %s has %d", who, n, who, count)
	}
	return ""
}

// headerPageSize decodes bytes 16–17 of page 1.
func headerPageSize(p []byte) int {
	n := int(binary.BigEndian.Uint16(p[hdrPageSize:]))
	if n == 1 {
		return 65536
	}
	return n
}

// headerField names the header field holding byte off of page 1 and
// returns its first byte, for Reason; past the header it is the schema
// table's b-tree page, and off itself is returned.
func headerField(off int) (string, int) {
	fields := [...]struct {
		end  int
		name string
	}{
		{16, "header string"}, {18, "page size"}, {20, "file format version"},
		{21, "reserved space"}, {24, "payload fractions"}, {28, "change counter"},
		{32, "database size"}, {36, "first freelist trunk page"}, {40, "freelist page count"},
		{44, "schema cookie"}, {48, "schema format"}, {52, "default cache size"},
		{56, "largest root page"}, {60, "text encoding"}, {64, "user_version"},
		{68, "incremental vacuum"}, {72, "application_id"}, {92, "reserved header bytes"},
		{96, "version-valid-for"}, {100, "SQLite version"},
	}
	start := 0
	for _, f := range fields {
		if off < f.end {
			return f.name, start
		}
		start = f.end
	}
	return "schema table", off
}
