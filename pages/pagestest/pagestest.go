// Package pagestest is the conformance suite for pages.Store. Every backend
// (pages/dirstore, pages/s3store, and any fake a test writes) runs the same
// Run, so the contract documented on pages.Store is checked in one place.
//
// It owns the tests only; it holds no Store implementation.
//
// Decisions the suite pins down where the pages.Store comments leave room:
//   - A 0-byte object is valid: Put stores it, Read returns it empty, and
//     ReadRange(key, 0, 0) returns an empty slice.
//   - ReadRange with length 0 is valid for any 0 <= offset <= size and returns
//     an empty slice; a negative offset or length is a *RangeError.
//   - A *RangeError carries the key and range as asked and the object's real
//     Size, and is only returned for an object that exists: a missing object
//     is ErrNotFound whatever the range.
//   - Keys are slash-separated paths: empty keys, a leading '/', empty, "."
//     or ".." segments, backslashes and control characters are ErrInvalidKey
//     for every method. A List prefix follows the same rules, except that it
//     may be empty and may end with '/'.
//   - Keys that are a path prefix of another key ("a/b" and "a/b/c") are not
//     used: a directory-backed store cannot hold both, and segment keys
//     never nest.
package pagestest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/cambiumdb/cambium/pages"
)

// Run runs the conformance suite as subtests of t. newStore must return a
// fresh, empty store for each subtest and register its own cleanup with
// t.Cleanup. The whole suite puts about 1,200 objects and 9 MiB.
func Run(t *testing.T, newStore func(t *testing.T) pages.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s pages.Store)
	}{
		{"PutRead", testPutRead},
		{"ReadRange", testReadRange},
		{"EmptyObject", testEmptyObject},
		{"RangeError", testRangeError},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"DeleteMissing", testDeleteMissing},
		{"PutRetry", testPutRetry},
		{"List", testList},
		{"ListPaged", testListPaged},
		{"ListBreak", testListBreak},
		{"InvalidKey", testInvalidKey},
		{"Canceled", testCanceled},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// data returns n deterministic pseudo-random bytes for seed.
func data(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func mustPut(t testing.TB, s pages.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, b); err != nil {
		t.Fatalf("Put(%q, %d bytes)=%v, want nil", key, len(b), err)
	}
}

func mustRead(t testing.TB, s pages.Store, key string, want []byte) {
	t.Helper()
	got, err := s.Read(t.Context(), key)
	if err != nil {
		t.Fatalf("Read(%q)=%v, want nil", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Read(%q)=%d bytes, want %d bytes equal to those put", key, len(got), len(want))
	}
}

func mustReadRange(t testing.TB, s pages.Store, key string, obj []byte, off, n int64) {
	t.Helper()
	got, err := s.ReadRange(t.Context(), key, off, n)
	if err != nil {
		t.Fatalf("ReadRange(%q, %d, %d)=%v, want nil", key, off, n, err)
	}
	if got == nil {
		t.Fatalf("ReadRange(%q, %d, %d) returned a nil slice, want non-nil", key, off, n)
	}
	if want := obj[off : off+n]; !bytes.Equal(got, want) {
		t.Fatalf("ReadRange(%q, %d, %d)=%d bytes, want %d bytes equal to obj[%d:%d]",
			key, off, n, len(got), len(want), off, off+n)
	}
}

func wantNotFound(t testing.TB, op string, err error) {
	t.Helper()
	if !errors.Is(err, pages.ErrNotFound) {
		t.Fatalf("%s=%v, want ErrNotFound", op, err)
	}
}

func testPutRead(t *testing.T, s pages.Store) {
	for i, n := range []int{1, 7, 4096, 65537} {
		key := fmt.Sprintf("segments/putread-%d", i)
		b := data(uint64(i), n)
		mustPut(t, s, key, b)
		mustRead(t, s, key, b)
	}
}

func testReadRange(t *testing.T, s pages.Store) {
	const key = "segments/range"
	obj := data(1, 10_000)
	mustPut(t, s, key, obj)
	size := int64(len(obj))
	for _, r := range []struct{ off, n int64 }{
		{0, 1},               // first byte
		{size - 1, 1},        // last byte
		{0, size},            // whole object
		{0, 4096},            // a prefix
		{4096, 4096},         // a middle frame
		{size - 100, 100},    // a suffix
		{1234, 1},            // one byte inside
		{3, size - 3},        // everything but the head
		{size, 0},            // empty range at the end
		{5000, 0},            // empty range inside
		{0, 0},               // empty range at the start
		{size - 2, 2},        // the last two bytes
		{17, size - 17*2},    // odd offsets
		{size / 2, size / 2}, // the second half
	} {
		mustReadRange(t, s, key, obj, r.off, r.n)
	}
}

func testEmptyObject(t *testing.T, s pages.Store) {
	const key = "segments/empty"
	mustPut(t, s, key, []byte{})
	mustRead(t, s, key, []byte{})
	mustReadRange(t, s, key, []byte{}, 0, 0)
	_, err := s.ReadRange(t.Context(), key, 0, 1)
	wantRangeError(t, err, key, 0, 1, 0)
	var found bool
	for o, err := range s.List(t.Context(), "segments/") {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if o.Key == key {
			found = true
			if o.Size != 0 {
				t.Fatalf("List: %s has Size %d, want 0", key, o.Size)
			}
		}
	}
	if !found {
		t.Fatalf("List did not report the empty object %s", key)
	}
}

func wantRangeError(t testing.TB, err error, key string, off, n, size int64) {
	t.Helper()
	var re *pages.RangeError
	if !errors.As(err, &re) {
		t.Fatalf("ReadRange(%q, %d, %d)=%v, want *pages.RangeError", key, off, n, err)
	}
	if re.Key != key || re.Offset != off || re.Length != n || re.Size != size {
		t.Fatalf("ReadRange(%q, %d, %d): RangeError{Key:%q Offset:%d Length:%d Size:%d}, want {%q %d %d %d}",
			key, off, n, re.Key, re.Offset, re.Length, re.Size, key, off, n, size)
	}
	if errors.Is(err, pages.ErrNotFound) {
		t.Fatalf("ReadRange(%q, %d, %d)=%v is also ErrNotFound", key, off, n, err)
	}
}

func testRangeError(t *testing.T, s pages.Store) {
	const key = "segments/short"
	mustPut(t, s, key, data(2, 100))
	for _, r := range []struct{ off, n int64 }{
		{100, 1},  // starts at the end
		{99, 2},   // straddles the end
		{0, 101},  // one too long
		{150, 10}, // wholly after
		{101, 0},  // empty, but past the end
		{-1, 1},   // negative offset
		{0, -1},   // negative length
		{50, 1 << 40},
	} {
		_, err := s.ReadRange(t.Context(), key, r.off, r.n)
		wantRangeError(t, err, key, r.off, r.n, 100)
	}
}

func testNotFound(t *testing.T, s pages.Store) {
	ctx := t.Context()
	mustPut(t, s, "segments/present", data(3, 10))
	for _, key := range []string{"segments/missing", "segments/presen", "segments/present/x", "other"} {
		_, err := s.Read(ctx, key)
		wantNotFound(t, fmt.Sprintf("Read(%q)", key), err)
		_, err = s.ReadRange(ctx, key, 0, 1)
		wantNotFound(t, fmt.Sprintf("ReadRange(%q, 0, 1)", key), err)
		_, err = s.ReadRange(ctx, key, 0, 0)
		wantNotFound(t, fmt.Sprintf("ReadRange(%q, 0, 0)", key), err)
		_, err = s.ReadRange(ctx, key, 1000, 10)
		wantNotFound(t, fmt.Sprintf("ReadRange(%q, 1000, 10)", key), err)
	}
	// A key that is only a "directory" of other keys is not an object.
	_, err := s.Read(ctx, "segments")
	wantNotFound(t, `Read("segments")`, err)
}

func testDelete(t *testing.T, s pages.Store) {
	ctx := t.Context()
	const key = "segments/doomed"
	mustPut(t, s, key, data(4, 64))
	mustPut(t, s, "segments/kept", data(5, 64))
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete(%q)=%v, want nil", key, err)
	}
	_, err := s.Read(ctx, key)
	wantNotFound(t, "Read after Delete", err)
	_, err = s.ReadRange(ctx, key, 0, 1)
	wantNotFound(t, "ReadRange after Delete", err)
	if got, want := listKeys(t, s, ""), []string{"segments/kept"}; !slices.Equal(got, want) {
		t.Fatalf("List after Delete=%q, want %q", got, want)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("second Delete(%q)=%v, want nil", key, err)
	}
	mustRead(t, s, "segments/kept", data(5, 64))
}

func testDeleteMissing(t *testing.T, s pages.Store) {
	for _, key := range []string{"segments/never", "no/such/dir/key", "segments"} {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Fatalf("Delete(%q) of a missing object=%v, want nil", key, err)
		}
	}
}

func testPutRetry(t *testing.T, s pages.Store) {
	const key = "segments/retried"
	b := data(6, 5000)
	mustPut(t, s, key, b)
	mustPut(t, s, key, bytes.Clone(b))
	mustRead(t, s, key, b)
	if got := listKeys(t, s, ""); !slices.Equal(got, []string{key}) {
		t.Fatalf("List after a retried Put=%q, want [%q]", got, key)
	}
}

func listKeys(t testing.TB, s pages.Store, prefix string) []string {
	t.Helper()
	keys := []string{}
	for o, err := range s.List(t.Context(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

func testList(t *testing.T, s pages.Store) {
	// Byte order, not directory-walk order: "a/b-x" (0x2D) sorts before
	// "a/b/c" (0x2F), which sorts before "a/b0" (0x30).
	sizes := map[string]int{
		"a/b/c":        3,
		"a/b-x":        1,
		"a/b0":         0,
		"a/a":          10,
		"a/b/d/e":      7,
		"a/bz":         2,
		"b":            5,
		"segments/01":  4,
		"segments/02":  9,
		"segments/1":   6,
		"segments0/x":  8,
		"segmentsx":    1,
		"segments/.hi": 2,
	}
	for k, n := range sizes {
		mustPut(t, s, k, data(uint64(n), n))
	}
	all := make([]string, 0, len(sizes))
	for k := range sizes {
		all = append(all, k)
	}
	slices.Sort(all)
	for _, prefix := range []string{"", "a", "a/", "a/b", "a/b/", "a/b/d/e", "b", "segments", "segments/", "segments/0", "zzz", "a/c"} {
		var want []string
		for _, k := range all {
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
				want = append(want, k)
			}
		}
		var got []string
		for o, err := range s.List(t.Context(), prefix) {
			if err != nil {
				t.Fatalf("List(%q): %v", prefix, err)
			}
			if o.Size != int64(sizes[o.Key]) {
				t.Fatalf("List(%q): %s has Size %d, want %d", prefix, o.Key, o.Size, sizes[o.Key])
			}
			if o.ModTime.IsZero() {
				t.Fatalf("List(%q): %s has a zero ModTime", prefix, o.Key)
			}
			got = append(got, o.Key)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("List(%q)=%q, want %q", prefix, got, want)
		}
	}
}

// testListPaged lists more keys than S3 returns in one page (1,000).
func testListPaged(t *testing.T, s pages.Store) {
	const n = 1100
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("segments/%05d", i)
	}
	parallel(t, 16, n, func(i int) error {
		return s.Put(t.Context(), keys[i], data(uint64(i), i%7))
	})
	mustPut(t, s, "segmentz", []byte("x"))
	mustPut(t, s, "other/00001", []byte("y"))
	var got []string
	var sizes []int64
	for o, err := range s.List(t.Context(), "segments/") {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		got = append(got, o.Key)
		sizes = append(sizes, o.Size)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("List(segments/) returned %d keys, want %d in ascending order", len(got), len(keys))
	}
	for i, size := range sizes {
		if want := int64(i % 7); size != want {
			t.Fatalf("List: %s has Size %d, want %d", got[i], size, want)
		}
	}
}

// parallel runs fn(0..n-1) on workers goroutines and fails t on the first error.
func parallel(t testing.TB, workers, n int, fn func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func testListBreak(t *testing.T, s pages.Store) {
	for i := range 5 {
		mustPut(t, s, fmt.Sprintf("segments/%d", i), []byte{byte(i)})
	}
	var got []string
	for o, err := range s.List(t.Context(), "segments/") {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		got = append(got, o.Key)
		if len(got) == 2 {
			break
		}
	}
	if want := []string{"segments/0", "segments/1"}; !slices.Equal(got, want) {
		t.Fatalf("List stopped after 2=%q, want %q", got, want)
	}
	// The store is still usable after an abandoned listing.
	if got := listKeys(t, s, "segments/"); len(got) != 5 {
		t.Fatalf("List after a break=%q, want 5 keys", got)
	}
}

func testInvalidKey(t *testing.T, s pages.Store) {
	ctx := t.Context()
	bad := []string{
		"", "/segments/x", "/", "segments/../x", "..", "../x", "segments/..",
		"./x", "a/./b", "a//b", "a/", `segments\x`, `\`, "seg\x00ments", "a\nb",
		"a\tb", "a\x7fb", "a\x1fb", "\xff\xfe",
	}
	for _, key := range bad {
		if err := s.Put(ctx, key, []byte("x")); !errors.Is(err, pages.ErrInvalidKey) {
			t.Errorf("Put(%q)=%v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Read(ctx, key); !errors.Is(err, pages.ErrInvalidKey) {
			t.Errorf("Read(%q)=%v, want ErrInvalidKey", key, err)
		}
		if _, err := s.ReadRange(ctx, key, 0, 1); !errors.Is(err, pages.ErrInvalidKey) {
			t.Errorf("ReadRange(%q)=%v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, pages.ErrInvalidKey) {
			t.Errorf("Delete(%q)=%v, want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"/", "/a", "../", "a/../", `a\`, "a\x00", "a//"} {
		var got error
		for _, err := range s.List(ctx, prefix) {
			got = err
			break
		}
		if !errors.Is(got, pages.ErrInvalidKey) {
			t.Errorf("List(%q) yielded %v, want ErrInvalidKey", prefix, got)
		}
	}
	// Valid keys that look suspicious are accepted.
	for _, key := range []string{"a..b", ".hidden", "a/...", "x-y_z.0", "ünï/cödé"} {
		mustPut(t, s, key, []byte(key))
		mustRead(t, s, key, []byte(key))
	}
}

func testCanceled(t *testing.T, s pages.Store) {
	mustPut(t, s, "segments/x", data(7, 100))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	want := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context=%v, want an error wrapping context.Canceled", op, err)
		}
	}
	want("Put", s.Put(ctx, "segments/y", []byte("y")))
	_, err := s.Read(ctx, "segments/x")
	want("Read", err)
	_, err = s.ReadRange(ctx, "segments/x", 0, 10)
	want("ReadRange", err)
	want("Delete", s.Delete(ctx, "segments/x"))
	var listErr error
	for o, err := range s.List(ctx, "") {
		if err == nil {
			t.Errorf("List with a canceled context yielded %q", o.Key)
			continue
		}
		listErr = err
	}
	want("List", listErr)
	// Nothing was done: x is still there, y never appeared.
	mustRead(t, s, "segments/x", data(7, 100))
	_, err = s.Read(t.Context(), "segments/y")
	wantNotFound(t, "Read of a Put canceled before it began", err)
}

func testConcurrent(t *testing.T, s pages.Store) {
	const workers, rounds = 16, 6
	ctx := t.Context()
	parallel(t, workers, workers, func(w int) error {
		for r := range rounds {
			key := fmt.Sprintf("segments/w%02d-%d", w, r)
			b := data(uint64(w*100+r), 2000+w*10+r)
			if err := s.Put(ctx, key, b); err != nil {
				return err
			}
			got, err := s.ReadRange(ctx, key, int64(w), 1000)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, b[w:w+1000]) {
				return fmt.Errorf("ReadRange(%q) returned other bytes than were put", key)
			}
			if r%2 == 0 {
				if err := s.Delete(ctx, key); err != nil {
					return err
				}
				if _, err := s.Read(ctx, key); !errors.Is(err, pages.ErrNotFound) {
					return fmt.Errorf("Read(%q) after Delete=%v, want ErrNotFound", key, err)
				}
			}
		}
		return nil
	})
	if got, want := len(listKeys(t, s, "segments/")), workers*rounds/2; got != want {
		t.Fatalf("List after concurrent work: %d keys, want %d", got, want)
	}
}

func testLarge(t *testing.T, s pages.Store) {
	const key = "segments/large"
	obj := data(8, 8<<20)
	mustPut(t, s, key, obj)
	mustRead(t, s, key, obj)
	size := int64(len(obj))
	mustReadRange(t, s, key, obj, 3<<20+5, 1<<20)
	mustReadRange(t, s, key, obj, size-4096, 4096)
	_, err := s.ReadRange(t.Context(), key, size-4096, 4097)
	wantRangeError(t, err, key, size-4096, 4097, size)
}
