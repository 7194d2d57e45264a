// Package commit owns the commit protocol's server side: validating hybrid
// commits, deciding each one (DESIGN.md, the commit protocol), and making the
// accepted ones durable through group commit — one segment upload and one
// metadata transaction shared by every commit that arrives together, while
// each keeps its own version and decision.
//
// It does not detect conflicts or replay records (packages conflict and
// replay), and it does not speak HTTP (package api).
package commit

import (
	"fmt"

	"github.com/cambiumdb/cambium/pgschema"
)

// Request is one hybrid commit as a client sends it.
type Request struct {
	ClientID string
	Seq      int64 // the client's sequence number: with the volume and ClientID, the idempotency key

	// Parent is the Seq of the client's previous commit when this one was made
	// on top of it before the server acknowledged it, else 0. Base is then the
	// server version that the client's chain of pending commits started from,
	// and the commit's effective base is the version its parent became.
	Parent int64
	Base   int64 // the server version the client's state was based on

	PageSize  int
	PageCount uint32      // database size in pages after the commit
	Pages     []Page      // the pages written, ascending by page number
	ReadSet   []PageRange // the pages read, as ascending, disjoint ranges
	Record    []byte      // the encoded logical record; may be empty
	Checksum  uint32      // CRC-32C over the commit's wire encoding, as the client computed it
}

// PageRange is the pages First, First+1, ..., First+Count-1. Read sets are
// kept as ranges, never expanded, so their memory is bounded by what the
// client sent, whatever page numbers it names; a transaction that reads
// pages and then shrinks the file (VACUUM) reads pages beyond its final page
// count, so no page count bounds them.
type PageRange struct {
	First, Count uint32
}

// Last returns the range's last page.
func (r PageRange) Last() uint32 { return r.First + r.Count - 1 }

// RangesOf turns ascending, distinct page numbers into ranges.
func RangesOf(pages []uint32) []PageRange {
	var out []PageRange
	for i := 0; i < len(pages); {
		j := i + 1
		for j < len(pages) && pages[j] == pages[j-1]+1 {
			j++
		}
		out = append(out, PageRange{First: pages[i], Count: uint32(j - i)})
		i = j
	}
	return out
}

// Page is one page a commit wrote.
type Page struct {
	No   uint32
	Data []byte
}

// Decision says what became of a commit. The stored decisions are those of
// pgschema; Rejected commits store nothing.
type Decision string

const (
	FastPath          = Decision(pgschema.FastPath)
	Merged            = Decision(pgschema.Merged)
	Replayed          = Decision(pgschema.Replayed)
	Rejected Decision = "rejected"
)

// Result is the decision on one Request.
type Result struct {
	Seq       int64
	Decision  Decision
	Version   int64  // the version it became; 0 when rejected
	Reason    string // why, in words
	Duplicate bool   // an idempotent retry: the stored decision of an earlier attempt
	Err       error  // when Rejected: the typed reason (e.g. *StaleBaseError)
}

// Validate checks the commit on its own, against the volume's page size:
// everything that needs neither the history nor a lock. It returns an
// *InvalidCommitError naming the first problem.
func (r *Request) Validate(pageSize int) error {
	bad := func(format string, a ...any) error {
		return &InvalidCommitError{Seq: r.Seq, Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case r.ClientID == "" || len(r.ClientID) > MaxClientIDLen:
		return bad("client id must be 1-%d bytes", MaxClientIDLen)
	case r.Seq < 1:
		return bad("sequence %d: sequences start at 1", r.Seq)
	case r.Parent < 0 || r.Parent >= r.Seq:
		return bad("parent %d: want 0 or a sequence below %d", r.Parent, r.Seq)
	case r.Base < 0:
		return bad("base %d is negative", r.Base)
	case r.PageSize != pageSize:
		return bad("page size %d, volume has %d", r.PageSize, pageSize)
	case r.PageCount == 0 && len(r.Pages) > 0:
		return bad("page count 0 with pages written")
	}
	var prev uint32
	for i, p := range r.Pages {
		switch {
		case p.No == 0:
			return bad("page number 0: pages are numbered from 1")
		case p.No > r.PageCount:
			return bad("page %d beyond page count %d", p.No, r.PageCount)
		case i > 0 && p.No <= prev:
			return bad("pages not in ascending order at page %d", p.No)
		case len(p.Data) != pageSize:
			return bad("page %d has %d bytes, page size is %d", p.No, len(p.Data), pageSize)
		}
		prev = p.No
	}
	return nil
}

// MaxClientIDLen bounds a client id's length in bytes.
const MaxClientIDLen = 128
