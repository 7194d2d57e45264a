package commit

import (
	"errors"
	"fmt"
)

// Every error a client can receive has a stable code that survives the wire
// (package api maps codes to these types and back), so errors.Is and
// errors.As work the same on both sides.
const (
	CodeStaleBase      = "stale_base"
	CodeBaseAhead      = "base_ahead"
	CodeInvalidCommit  = "invalid_commit"
	CodeBadChecksum    = "bad_checksum"
	CodeParentMissing  = "parent_missing"
	CodeUnknownVolume  = "unknown_volume"
	CodeVolumeExists   = "volume_exists"
	CodeInvalid        = "invalid"
	CodeTooLarge       = "too_large"
	CodeUnavailable    = "unavailable"
	CodeInternal       = "internal"
	CodeUnauthorized   = "unauthorized"
	CodeNotImplemented = "not_implemented"
	CodeReplayRejected = "replay_rejected"
	CodeConflict       = "conflict"
	CodeResolver       = "resolver_rejected"
	CodeUnknownMutator = "unknown_mutator"
)

var (
	// ErrUnavailable means the server could not decide now (its metastore or
	// page store failed or it is shutting down): nothing was decided, and the
	// same request may be retried.
	ErrUnavailable = errors.New("commit service unavailable")
)

// StaleBaseError rejects a commit whose base is behind the head when the
// server may not merge or replay it: the client must pull and redo it.
type StaleBaseError struct {
	Seq  int64
	Base int64
	Head int64
}

func (e *StaleBaseError) Error() string {
	return fmt.Sprintf("stale base %d, head is %d: pull and redo", e.Base, e.Head)
}

// BaseAheadError rejects a commit based on a version the server never had.
type BaseAheadError struct {
	Seq  int64
	Base int64
	Head int64
}

func (e *BaseAheadError) Error() string {
	return fmt.Sprintf("base %d is ahead of head %d", e.Base, e.Head)
}

// InvalidCommitError rejects a malformed commit; nothing was stored.
type InvalidCommitError struct {
	Seq    int64
	Reason string
}

func (e *InvalidCommitError) Error() string {
	return fmt.Sprintf("invalid commit %d: %s", e.Seq, e.Reason)
}

// ChecksumError rejects a commit whose bytes do not match the checksum the
// client computed: it was damaged on the way.
type ChecksumError struct {
	Seq       int64
	Got, Want uint32
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("commit %d damaged in transit: checksum %08x, client sent %08x", e.Seq, e.Got, e.Want)
}

// ParentMissingError rejects a commit whose parent (the client's previous
// commit it was made on top of) is not stored: it was rejected or never sent.
type ParentMissingError struct {
	Seq    int64
	Parent int64
}

func (e *ParentMissingError) Error() string {
	return fmt.Sprintf("parent commit %d is not stored (rejected or never sent)", e.Parent)
}

// ReplayError rejects a stale commit whose logical record failed on head:
// a constraint, the sandbox, a time or size bound, SQL that does not run,
// or a mutation's own check. Kind is the replay engine's stable code
// (constraint, sandbox, timeout, too_big, sql, mutation, unknown_mutation,
// record). Nothing was stored; the client drops the transaction.
type ReplayError struct {
	Seq    int64
	Kind   string
	Reason string
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("replay on head rejected (%s): %s", e.Kind, e.Reason)
}

// ConflictError rejects a stale commit that conflicts with what changed
// since its base and cannot be replayed: it has no logical record, or the
// volume's policy does not let the server replay it.
type ConflictError struct {
	Seq    int64
	Base   int64
	Head   int64
	Reason string // what conflicted
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("conflict with versions %d..%d: %s", e.Base+1, e.Head, e.Reason)
}

// ResolverError rejects a commit because the embedding application's
// resolver hook said no.
type ResolverError struct {
	Seq    int64
	Reason string
}

func (e *ResolverError) Error() string { return "rejected by the application: " + e.Reason }
