package pgschema

import (
	"errors"
	"fmt"
)

var (
	// ErrVolumeNotFound means no volume has that name or id.
	ErrVolumeNotFound = errors.New("volume not found")

	// ErrVolumeExists means CreateVolume was given a name already taken.
	ErrVolumeExists = errors.New("volume already exists")

	// ErrCommitNotFound means no stored commit matches.
	ErrCommitNotFound = errors.New("commit not found")

	// ErrPageNotFound means the snapshot has no such page.
	ErrPageNotFound = errors.New("page not found")

	// ErrVolumeNotLocked means Tx.Append or Tx.AppendAll was given a
	// commit to a volume that the transaction has not locked with
	// Tx.LockVolume or Tx.LockVolumes.
	ErrVolumeNotLocked = errors.New("volume not locked in this transaction")

	// ErrMutatorNotFound means the volume has no mutator of that name.
	ErrMutatorNotFound = errors.New("mutator not found")

	// ErrTokenNotFound means no token has that id.
	ErrTokenNotFound = errors.New("token not found")

	// ErrTokenExists means CreateToken was given an id already taken.
	ErrTokenExists = errors.New("token already exists")

	// ErrDuplicateCommit means the commit's idempotency key
	// (volume, client id, client sequence) is already stored.
	ErrDuplicateCommit = errors.New("duplicate commit")
)

// StaleHeadError reports an Append whose version is not the volume's head + 1:
// another commit became that version first.
type StaleHeadError struct {
	Volume  int64
	Head    int64 // the volume's head under the lock
	Version int64 // the version the commit asked to become
}

func (e *StaleHeadError) Error() string {
	return fmt.Sprintf("volume %d: cannot append version %d, head is %d", e.Volume, e.Version, e.Head)
}

// InvalidError reports an argument the metastore refuses to store: a bad
// volume name, page size or commit field. Nothing was stored.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

// SchemaTooNewError reports a database whose schema was migrated by a newer
// Cambium than this binary: it refuses to run rather than misread it.
type SchemaTooNewError struct {
	Applied int // highest migration recorded in the database
	Known   int // highest migration this binary has
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema is at migration %d, newer than this binary knows (%d): upgrade cambium", e.Applied, e.Known)
}
