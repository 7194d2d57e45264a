package replica

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func sampleRecord() *Record {
	return &Record{
		Context: Context{Time: time.UnixMilli(1_700_000_000_123).UTC(), Seed: 0xdeadbeefcafe, TZ: "Europe/Paris"},
		Statements: []Statement{
			{SQL: "INSERT INTO t(a,b,c,d,e) VALUES(?,?,?,?,?)", Args: []Arg{
				{Value: Value{Kind: KindInt, Int: math.MinInt64}},
				{Value: Value{Kind: KindFloat, Float: -1.5}},
				{Value: Value{Kind: KindText, Text: "héllo"}},
				{Value: Value{Kind: KindBlob, Blob: []byte{0, 1, 2}}},
				{Value: Value{Kind: KindNull}},
			}},
			{SQL: "UPDATE t SET a=:x", Args: []Arg{{Name: "x", Value: Value{Kind: KindInt, Int: 7}}}},
			{SQL: "DELETE FROM t"},
		},
	}
}

func TestRecord_RoundTrip(t *testing.T) {
	want := sampleRecord()
	got, err := DecodeRecord(want.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeRecord(Encode(r))=%+v, want %+v", got, want)
	}
	empty := &Record{Context: Context{Time: time.UnixMilli(0).UTC()}}
	if got, err := DecodeRecord(empty.Encode()); err != nil || !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty record: %+v, %v", got, err)
	}
}

func TestRecord_Corrupt(t *testing.T) {
	b := sampleRecord().Encode()
	t.Run("Checksum", func(t *testing.T) {
		c := append([]byte{}, b...)
		c[10] ^= 1
		var de *DecodeError
		if _, err := DecodeRecord(c); !errors.As(err, &de) || !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("err=%v, want a DecodeError", err)
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		for n := 0; n < len(b); n++ {
			if _, err := DecodeRecord(b[:n]); !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("len %d: err=%v, want ErrCorruptRecord", n, err)
			}
		}
	})
	t.Run("Version", func(t *testing.T) {
		c := append([]byte{}, b...)
		c[2] = 9
		if _, err := DecodeRecord(c); !errors.Is(err, ErrRecordVersion) {
			t.Fatalf("err=%v, want ErrRecordVersion", err)
		}
	})
}

func TestValueOf(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tc := range []struct {
		in   any
		want Value
	}{
		{true, Value{Kind: KindInt, Int: 1}},
		{false, Value{Kind: KindInt}},
		{[]byte(nil), Value{Kind: KindNull}},
		{[]byte{}, Value{Kind: KindBlob, Blob: []byte{}}},
		{at, Value{Kind: KindText, Text: "2024-01-02 03:04:05.000000006+00:00"}},
	} {
		got, err := ValueOf(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("ValueOf(%#v)=%+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if _, err := ValueOf(struct{}{}); !errors.Is(err, ErrUnsupportedValue) {
		t.Fatalf("ValueOf(struct{})=%v, want ErrUnsupportedValue", err)
	}
}

func TestReadSet_RoundTrip(t *testing.T) {
	for _, want := range [][]uint32{nil, {1}, {1, 2, 3, 7, 9, 10, 4000000000}} {
		b := EncodeReadSet(want)
		got, err := DecodeReadSet(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeReadSet(EncodeReadSet(%v))=%v, %v", want, got, err)
		}
	}
	if _, err := DecodeReadSet([]byte{5}); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("err=%v, want ErrCorruptRecord", err)
	}
}

// TestRecord_FuzzSeeds keeps the checked-in seed corpus in sync with the encoder.
func TestRecord_FuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("seed corpus %s: %v (%d files)", dir, err, len(entries))
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleRecord().Encode())
	f.Add((&Record{}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) && !errors.Is(err, ErrRecordVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		enc := r.Encode()
		again, err := DecodeRecord(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		if !bytes.Equal(again.Encode(), enc) {
			t.Fatalf("encoding is not stable: %x vs %x", again.Encode(), enc)
		}
	})
}
