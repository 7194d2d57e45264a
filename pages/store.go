// Package pages owns where page bytes live: the Store contract for immutable
// segment objects (implemented by pages/s3store for MinIO/S3 and pages/dirstore
// for a local directory), the segment format (pages/segment), a page cache
// bounded by bytes, and reading one page from its Location.
//
// It does not know about a volume's history: the metastore (package pgschema)
// maps (volume, page number, version) to a Location, and this package turns a
// Location into verified bytes.
package pages

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"
)

// Store holds immutable objects (segments) by key. Implementations are safe for
// concurrent use, honour the context's deadline and cancellation on every call,
// and return ErrNotFound (possibly wrapped) for a missing object.
type Store interface {
	// Put stores data as the object key, durably, before it returns nil.
	// Segment keys are unique, so Put never replaces a different object; a
	// retried Put of the same key with the same bytes succeeds.
	Put(ctx context.Context, key string, data []byte) error

	// ReadRange returns exactly length bytes of object key starting at offset
	// (one ranged GET in S3 terms). A missing object is ErrNotFound; a range
	// that is not inside the object is a *RangeError.
	ReadRange(ctx context.Context, key string, offset, length int64) ([]byte, error)

	// Read returns the whole object key, or ErrNotFound.
	Read(ctx context.Context, key string) ([]byte, error)

	// Delete removes object key. Deleting a missing object returns nil, so a
	// garbage collector may retry freely.
	Delete(ctx context.Context, key string) error

	// List yields the objects whose key starts with prefix, in ascending key
	// order. It stops at the first error, which it yields with a zero Object.
	List(ctx context.Context, prefix string) iter.Seq2[Object, error]
}

// Object describes one stored object, as List reports it.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

var (
	// ErrNotFound means the object does not exist in the store.
	ErrNotFound = errors.New("object not found")

	// ErrInvalidKey means a key is empty, absolute, or would escape the store's
	// namespace (".." segments, backslashes, control characters).
	ErrInvalidKey = errors.New("invalid object key")
)

// RangeError reports a read of a range that is not inside the object.
type RangeError struct {
	Key            string
	Offset, Length int64
	Size           int64 // the object's actual size
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("range [%d, %d) outside object %s of %d bytes",
		e.Offset, e.Offset+e.Length, e.Key, e.Size)
}
