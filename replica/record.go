package replica

// Logical record encoding, version 1. All integers are unsigned LEB128
// varints (uvarint) unless said otherwise; strings and byte strings are a
// uvarint length followed by the bytes.
//
//	record  = magic "CR" | version 0x01 | context | uvarint n | n × statement | crc32c
//	context = varint unix_ms (zigzag) | seed (8 bytes, little endian) | string tz
//	statement = string sql | uvarint n | n × arg
//	arg     = string name ("" for positional) | kind byte | payload
//	payload = null: nothing | int: varint (zigzag) | float: 8 bytes LE IEEE 754 bits
//	          | text: string | blob: bytes
//	crc32c  = 4 bytes little endian, Castagnoli CRC of everything before it
//
// Values are normalised the way mattn/go-sqlite3 binds them: bool becomes
// int 0/1, time.Time becomes text in mattn's first timestamp format, a nil
// []byte becomes null.

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// RecordVersion is the encoding version Encode writes.
const RecordVersion = 1

var recordMagic = [2]byte{'C', 'R'}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrCorruptRecord is wrapped by every DecodeError.
	ErrCorruptRecord = errors.New("replica: corrupt record")
	// ErrRecordVersion is returned for a record of an unknown version.
	ErrRecordVersion = errors.New("replica: unsupported record version")
	// ErrUnsupportedValue is returned by ValueOf for a type mattn cannot bind.
	ErrUnsupportedValue = errors.New("replica: unsupported value type")
)

// DecodeError reports where and why a record failed to decode.
type DecodeError struct {
	Offset int
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("replica: corrupt record at byte %d: %s", e.Offset, e.Reason)
}

// Unwrap returns ErrCorruptRecord.
func (e *DecodeError) Unwrap() error { return ErrCorruptRecord }

// Kind is the SQLite storage class of a bound value.
type Kind uint8

// Value kinds.
const (
	KindNull Kind = iota
	KindInt
	KindFloat
	KindText
	KindBlob
)

// Value is one bound argument, normalised to a SQLite storage class.
type Value struct {
	Kind  Kind
	Int   int64
	Float float64
	Text  string
	Blob  []byte
}

// ValueOf normalises a database/sql driver value the way mattn binds it.
func ValueOf(v driver.Value) (Value, error) {
	switch v := v.(type) {
	case nil:
		return Value{Kind: KindNull}, nil
	case int64:
		return Value{Kind: KindInt, Int: v}, nil
	case bool:
		if v {
			return Value{Kind: KindInt, Int: 1}, nil
		}
		return Value{Kind: KindInt}, nil
	case float64:
		return Value{Kind: KindFloat, Float: v}, nil
	case string:
		return Value{Kind: KindText, Text: v}, nil
	case []byte:
		if v == nil {
			return Value{Kind: KindNull}, nil
		}
		return Value{Kind: KindBlob, Blob: append([]byte{}, v...)}, nil
	case time.Time:
		return Value{Kind: KindText, Text: v.Format(sqlite3.SQLiteTimestampFormats[0])}, nil
	default:
		return Value{}, fmt.Errorf("value of type %T: %w", v, ErrUnsupportedValue)
	}
}

// Driver returns v as a driver.Value that mattn binds identically.
func (v Value) Driver() driver.Value {
	switch v.Kind {
	case KindInt:
		return v.Int
	case KindFloat:
		return v.Float
	case KindText:
		return v.Text
	case KindBlob:
		return append([]byte{}, v.Blob...)
	default:
		return nil
	}
}

// Arg is one argument of a statement: positional when Name is empty.
type Arg struct {
	Name  string
	Value Value
}

// Statement is one SQL string (possibly several statements, as Exec allows)
// with its arguments.
type Statement struct {
	SQL  string
	Args []Arg
}

// NamedValues returns the statement's arguments for a driver call.
func (s Statement) NamedValues() []driver.NamedValue {
	out := make([]driver.NamedValue, len(s.Args))
	for i, a := range s.Args {
		out[i] = driver.NamedValue{Name: a.Name, Ordinal: i + 1, Value: a.Value.Driver()}
	}
	return out
}

// Context is what a replay must reproduce besides the statements: the
// clock SQLite saw ('now'), the seed of random()/randomblob(), and the
// client's time zone ('localtime').
type Context struct {
	Time time.Time // millisecond precision, what the VFS clock returned
	Seed uint64
	TZ   string
}

// Record is the logical record of one write transaction.
type Record struct {
	Context    Context
	Statements []Statement
}

// Encode returns r in the version-1 encoding.
func (r *Record) Encode() []byte { return r.appendEncode(nil) }

// appendEncode appends Encode's output to b.
func (r *Record) appendEncode(b []byte) []byte {
	start := len(b)
	b = append(b, recordMagic[:]...)
	b = append(b, RecordVersion)
	b = binary.AppendVarint(b, r.Context.Time.UnixMilli())
	b = binary.LittleEndian.AppendUint64(b, r.Context.Seed)
	b = appendString(b, r.Context.TZ)
	b = binary.AppendUvarint(b, uint64(len(r.Statements)))
	for _, s := range r.Statements {
		b = appendString(b, s.SQL)
		b = binary.AppendUvarint(b, uint64(len(s.Args)))
		for _, a := range s.Args {
			b = appendString(b, a.Name)
			b = append(b, byte(a.Value.Kind))
			switch a.Value.Kind {
			case KindInt:
				b = binary.AppendVarint(b, a.Value.Int)
			case KindFloat:
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(a.Value.Float))
			case KindText:
				b = appendString(b, a.Value.Text)
			case KindBlob:
				b = binary.AppendUvarint(b, uint64(len(a.Value.Blob)))
				b = append(b, a.Value.Blob...)
			}
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], crcTable))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeRecord decodes an encoded record. Errors are a *DecodeError
// (wrapping ErrCorruptRecord) or wrap ErrRecordVersion.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) < len(recordMagic)+1+4 || b[0] != recordMagic[0] || b[1] != recordMagic[1] {
		return nil, &DecodeError{Offset: 0, Reason: "bad magic or too short"}
	}
	if b[2] != RecordVersion {
		return nil, fmt.Errorf("decode record: version %d: %w", b[2], ErrRecordVersion)
	}
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(b[len(b)-4:]); got != want {
		return nil, &DecodeError{Offset: len(body), Reason: "checksum mismatch"}
	}
	d := decoder{b: body, off: 3}
	r := &Record{}
	r.Context.Time = time.UnixMilli(d.varint()).UTC()
	r.Context.Seed = d.uint64()
	r.Context.TZ = d.string()
	n := d.count(2) // a statement takes at least 2 bytes
	if n > 0 {
		r.Statements = make([]Statement, n)
	}
	for i := range r.Statements {
		s := &r.Statements[i]
		s.SQL = d.string()
		if na := d.count(2); na > 0 {
			s.Args = make([]Arg, na)
		}
		for j := range s.Args {
			a := &s.Args[j]
			a.Name = d.string()
			a.Value.Kind = Kind(d.byte())
			switch a.Value.Kind {
			case KindNull:
			case KindInt:
				a.Value.Int = d.varint()
			case KindFloat:
				a.Value.Float = math.Float64frombits(d.uint64())
			case KindText:
				a.Value.Text = d.string()
			case KindBlob:
				a.Value.Blob = []byte(d.string())
			default:
				d.fail("unknown value kind")
			}
		}
		if d.err != nil {
			break
		}
	}
	if d.err == nil && d.off != len(body) {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// decoder reads from b, recording the first error and returning zero
// values after it.
type decoder struct {
	b   []byte
	off int
	err *DecodeError
}

func (d *decoder) fail(reason string) {
	if d.err == nil {
		d.err = &DecodeError{Offset: d.off, Reason: reason}
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail("truncated")
		return 0
	}
	d.off += 8
	return binary.LittleEndian.Uint64(d.b[d.off-8:])
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("length past the end")
		return ""
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

// count reads an element count and rejects one that the remaining bytes
// cannot hold (each element takes at least min bytes), so corrupt input
// cannot make the decoder allocate without bound.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64((len(d.b)-d.off)/min) {
		d.fail("count past the end")
		return 0
	}
	return int(n)
}
