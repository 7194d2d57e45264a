package replica

import (
	"database/sql/driver"

	"github.com/cambiumdb/cambium/replay"
)

// The logical record and its encoding live in package replay, which the
// server decodes and replays them with; these aliases keep replica's API.
type (
	Record      = replay.Record
	Statement   = replay.Statement
	Arg         = replay.Arg
	Value       = replay.Value
	Context     = replay.Context
	Kind        = replay.Kind
	Mutation    = replay.Mutation
	DecodeError = replay.DecodeError
)

// Value kinds and the record encoding version, from package replay.
const (
	KindNull      = replay.KindNull
	KindInt       = replay.KindInt
	KindFloat     = replay.KindFloat
	KindText      = replay.KindText
	KindBlob      = replay.KindBlob
	RecordVersion = replay.RecordVersion
)

// Record errors, the same values as package replay's.
var (
	ErrCorruptRecord    = replay.ErrCorruptRecord
	ErrRecordVersion    = replay.ErrRecordVersion
	ErrUnsupportedValue = replay.ErrUnsupportedValue
)

// DecodeRecord is replay.DecodeRecord.
func DecodeRecord(b []byte) (*Record, error) { return replay.DecodeRecord(b) }

// ValueOf is replay.ValueOf.
func ValueOf(v driver.Value) (Value, error) { return replay.ValueOf(v) }
