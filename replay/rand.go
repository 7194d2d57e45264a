package replay

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// Rand is the generator behind random() and randomblob() on a connection
// that records or replays: SQLite's own PRNG is process-global and
// ignores the VFS, so both functions are overridden per connection with a
// PCG seeded from the record's Context.Seed. The client replica and the
// server's replay use this one type, so they draw identical values; the
// sequence for a seed is part of the record format and must never change.
//
// A Rand is not safe for concurrent use; SQLite calls a connection's
// functions one at a time.
type Rand struct {
	pcg rand.PCG
}

// NewRand returns a generator seeded with seed.
func NewRand(seed uint64) *Rand {
	r := &Rand{}
	r.Reset(seed)
	return r
}

// Reset reseeds the generator: it then draws as NewRand(seed) does.
func (r *Rand) Reset(seed uint64) { r.pcg.Seed(seed, 0) }

// Random is random(): the next 64 bits as a signed integer.
func (r *Rand) Random() int64 { return int64(r.pcg.Uint64()) }

// RandomBlob is randomblob(n): n bytes (1 if n < 1), little-endian 64-bit
// draws truncated to n.
func (r *Rand) RandomBlob(n int64) []byte {
	if n < 1 {
		n = 1
	}
	b := make([]byte, n+7)
	for i := 0; i < len(b)-7; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.pcg.Uint64())
	}
	return b[:n]
}

// errBlobTooBig is randomblob's error past the connection's length limit;
// SQLite reports it as SQLITE_ERROR with this text.
var errBlobTooBig = errors.New(tooBigMessage)

// Register overrides random() and randomblob() on sc with r. randomblob
// refuses, before allocating, a size past sc's SQLITE_LIMIT_LENGTH, as
// SQLite's own does. The functions are not SQLITE_INNOCUOUS, so a schema
// that uses them (triggers, views, DEFAULT) needs trusted_schema=ON, the
// default.
func (r *Rand) Register(sc *sqlite3.SQLiteConn) error {
	if err := sc.RegisterFunc("random", r.Random, false); err != nil {
		return err
	}
	return sc.RegisterFunc("randomblob", func(n int64) ([]byte, error) {
		if lim := sc.GetLimit(sqlite3.SQLITE_LIMIT_LENGTH); lim >= 0 && n > int64(lim) {
			return nil, errBlobTooBig
		}
		return r.RandomBlob(n), nil
	}, false)
}
