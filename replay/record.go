package replay

// Logical record encoding, version 2. All integers are unsigned LEB128
// varints (uvarint) unless said otherwise; strings and byte strings are a
// uvarint length followed by the bytes.
//
//	record    = magic "CR" | version 0x02 | context | body | crc32c
//	context   = varint unix_ms (zigzag) | seed (8 bytes, little endian) | string tz
//	body      = 0x01 (SQL)      | uvarint n | n × statement
//	          | 0x02 (mutation) | string name | bytes args (JSON)
//	statement = string sql | uvarint n | n × arg
//	arg       = string name ("" for positional) | kind byte | payload
//	payload   = null: nothing | int: varint (zigzag) | float: 8 bytes LE IEEE 754 bits
//	            | text: string | blob: bytes
//	crc32c    = 4 bytes little endian, Castagnoli CRC of everything before it
//
// Version 1, which DecodeRecord still reads, has no body kind byte: its
// body is always uvarint n | n × statement.
//
// Values are normalised the way mattn/go-sqlite3 binds them: bool becomes
// int 0/1, time.Time becomes text in mattn's first timestamp format, a nil
// []byte becomes null.

import (
	"database/sql/driver"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// RecordVersion is the encoding version Encode writes.
const RecordVersion = 2

// Body kinds of a version-2 record.
const (
	bodySQL      = 0x01
	bodyMutation = 0x02
)

var recordMagic = [2]byte{'C', 'R'}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrCorruptRecord is wrapped by every DecodeError.
	ErrCorruptRecord = errors.New("replay: corrupt record")
	// ErrRecordVersion is returned for a record of an unknown version.
	ErrRecordVersion = errors.New("replay: unsupported record version")
	// ErrUnsupportedValue is returned by ValueOf for a type mattn cannot bind.
	ErrUnsupportedValue = errors.New("replay: unsupported value type")
	// ErrInvalidRecord is wrapped by Validate's errors: a record that
	// decodes but cannot be run.
	ErrInvalidRecord = errors.New("replay: invalid record")
)

// DecodeError reports where and why a record failed to decode.
type DecodeError struct {
	Offset int
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("replay: corrupt record at byte %d: %s", e.Offset, e.Reason)
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

// Mutation is a named mutation: a name the server resolves through its
// Mutators, and the JSON arguments it is called with.
type Mutation struct {
	Name string
	Args json.RawMessage
}

// Record is the logical record of one write transaction: the SQL it ran,
// or the named mutation it was, with its replay context. Exactly one of
// Statements and Mutation is set (Validate).
type Record struct {
	Context    Context
	Statements []Statement
	Mutation   *Mutation
}

// Validate reports whether r can be run: exactly one of Statements and
// Mutation, and a mutation name that ValidateName accepts. Errors wrap
// ErrInvalidRecord.
func (r *Record) Validate() error {
	switch {
	case r == nil:
		return fmt.Errorf("no record: %w", ErrInvalidRecord)
	case r.Mutation != nil && len(r.Statements) > 0:
		return fmt.Errorf("record has both statements and a mutation: %w", ErrInvalidRecord)
	case r.Mutation == nil && len(r.Statements) == 0:
		return fmt.Errorf("empty record: %w", ErrInvalidRecord)
	case r.Mutation != nil:
		if err := ValidateName(r.Mutation.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
	}
	return nil
}

// Encode returns r in the version-2 encoding. A record with a Mutation is
// encoded as that mutation, its Statements ignored (see Validate).
func (r *Record) Encode() []byte { return r.AppendEncode(nil) }

// AppendEncode appends Encode's output to b and returns the extended
// buffer, so a caller can reuse one.
func (r *Record) AppendEncode(b []byte) []byte {
	start := len(b)
	b = append(b, recordMagic[:]...)
	b = append(b, RecordVersion)
	b = binary.AppendVarint(b, r.Context.Time.UnixMilli())
	b = binary.LittleEndian.AppendUint64(b, r.Context.Seed)
	b = appendString(b, r.Context.TZ)
	if m := r.Mutation; m != nil {
		b = append(b, bodyMutation)
		b = appendString(b, m.Name)
		b = binary.AppendUvarint(b, uint64(len(m.Args)))
		b = append(b, m.Args...)
		return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], crcTable))
	}
	b = append(b, bodySQL)
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

// DecodeRecord decodes an encoded record of version 1 or 2. Errors are a
// *DecodeError (wrapping ErrCorruptRecord) or wrap ErrRecordVersion; it
// never panics, and allocates in proportion to len(b).
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) < len(recordMagic)+1+4 || b[0] != recordMagic[0] || b[1] != recordMagic[1] {
		return nil, &DecodeError{Offset: 0, Reason: "bad magic or too short"}
	}
	version := b[2]
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("decode record: version %d: %w", version, ErrRecordVersion)
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
	kind := byte(bodySQL)
	if version >= 2 {
		kind = d.byte()
	}
	switch kind {
	case bodySQL:
		r.Statements = d.statements()
	case bodyMutation:
		m := &Mutation{Name: d.string()}
		if args := d.string(); args != "" {
			m.Args = json.RawMessage(args)
		}
		r.Mutation = m
	default:
		d.fail("unknown body kind")
	}
	if d.err == nil && d.off != len(body) {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// statements reads uvarint n | n × statement.
func (d *decoder) statements() []Statement {
	n := d.count(2) // a statement takes at least 2 bytes
	if n == 0 {
		return nil
	}
	out := make([]Statement, n)
	for i := range out {
		s := &out[i]
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
			return nil
		}
	}
	return out
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
