package replica

import (
	"errors"
	"reflect"
	"testing"
)

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
