package dirstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/pagestest"
)

func TestStore(t *testing.T) {
	pagestest.Run(t, func(t *testing.T) pages.Store {
		return mustOpen(t, t.TempDir())
	})
}

func mustOpen(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s)=%v", dir, err)
	}
	t.Cleanup(func() { mustNoTemp(t, s.Dir()) })
	return s
}

// mustNoTemp fails t if a temporary file is left anywhere under dir.
func mustNoTemp(t testing.TB, dir string) {
	t.Helper()
	for _, f := range tempFiles(t, dir) {
		t.Errorf("temporary file left behind: %s", f)
	}
}

func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return found
}

func keys(t testing.TB, s pages.Store, prefix string) []string {
	t.Helper()
	var got []string
	for o, err := range s.List(t.Context(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		got = append(got, o.Key)
	}
	return got
}

func TestOpen(t *testing.T) {
	t.Run("CreatesDir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		s := mustOpen(t, dir)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("Stat(%s)=%v, %v, want a directory", dir, fi, err)
		}
		if !filepath.IsAbs(s.Dir()) {
			t.Fatalf("Dir()=%s, want an absolute path", s.Dir())
		}
	})
	t.Run("NotADirectory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(file); err == nil {
			t.Fatalf("Open(%s) of a file=nil, want an error", file)
		}
	})
}

// TestStore_Put_Crash simulates a process that died in the middle of a Put:
// a temporary file, complete or partial, is left next to where the object
// would be.
func TestStore_Put_Crash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const key = "segments/ab12"
	want := bytes.Repeat([]byte("page"), 1024)
	mustPutFile := func(name string, b []byte) string {
		t.Helper()
		path := filepath.Join(dir, "segments", name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	partial := mustPutFile(tempPrefix+"123", want[:100])
	complete := mustPutFile(tempPrefix+"456", want)

	t.Run("Invisible", func(t *testing.T) {
		if _, err := s.Read(ctx, key); !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("Read(%q)=%v, want ErrNotFound", key, err)
		}
		if _, err := s.ReadRange(ctx, key, 0, 1); !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("ReadRange(%q)=%v, want ErrNotFound", key, err)
		}
		if got := keys(t, s, ""); len(got) != 0 {
			t.Fatalf("List()=%q, want no objects", got)
		}
		if _, err := s.Read(ctx, "segments/"+tempPrefix+"123"); !errors.Is(err, pages.ErrInvalidKey) {
			t.Fatalf("Read of a temporary file's name=%v, want ErrInvalidKey", err)
		}
	})
	t.Run("RetriedPut", func(t *testing.T) {
		if err := s.Put(ctx, key, want); err != nil {
			t.Fatalf("Put(%q)=%v", key, err)
		}
		got, err := s.Read(ctx, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Read(%q)=%d bytes, %v; want the %d bytes put", key, len(got), err, len(want))
		}
		if got := keys(t, s, ""); !slices.Equal(got, []string{key}) {
			t.Fatalf("List()=%q, want [%q]", got, key)
		}
	})
	reopen := func() {
		t.Helper()
		if _, err := Open(dir); err != nil {
			t.Fatalf("Open(%s)=%v", dir, err)
		}
	}
	t.Run("OpenKeepsFresh", func(t *testing.T) {
		reopen()
		if got := tempFiles(t, dir); len(got) != 2 {
			t.Fatalf("after Open: temporary files %q, want both kept (younger than TempExpiry)", got)
		}
	})
	t.Run("OpenRemovesStale", func(t *testing.T) {
		old := time.Now().Add(-TempExpiry - time.Minute)
		if err := os.Chtimes(partial, old, old); err != nil {
			t.Fatal(err)
		}
		reopen()
		if got, want := tempFiles(t, dir), []string{complete}; !slices.Equal(got, want) {
			t.Fatalf("after Open: temporary files %q, want %q", got, want)
		}
		if err := os.Chtimes(complete, old, old); err != nil {
			t.Fatal(err)
		}
		reopen()
		if got := tempFiles(t, dir); len(got) != 0 {
			t.Fatalf("after Open: temporary files %q, want none", got)
		}
	})
}

// TestStore_Put_Fail fails Put at each step through the fault seam: before
// the rename the object must not exist, after it the object is complete, and
// no temporary file is ever left behind.
func TestStore_Put_Fail(t *testing.T) {
	errInjected := errors.New("injected")
	for _, step := range []string{"create", "write", "sync", "rename", "syncdir"} {
		t.Run(step, func(t *testing.T) {
			s := mustOpen(t, t.TempDir())
			s.step = func(name string) error {
				if name == step {
					return errInjected
				}
				return nil
			}
			const key = "segments/x"
			data := []byte("complete object")
			err := s.Put(t.Context(), key, data)
			if !errors.Is(err, errInjected) {
				t.Fatalf("Put failing at %s=%v, want the injected error", step, err)
			}
			got, err := s.Read(t.Context(), key)
			if step == "syncdir" {
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("Read after a failed directory fsync=%q, %v; want the whole object", got, err)
				}
				return
			}
			if !errors.Is(err, pages.ErrNotFound) {
				t.Fatalf("Read after Put failed at %s=%q, %v; want ErrNotFound", step, got, err)
			}
		})
	}
}

// TestStore_Read_NoPartial reads an object while it is being put: every
// successful Read returns all of it.
func TestStore_Read_NoPartial(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	ctx := t.Context()
	data := bytes.Repeat([]byte{0xA5}, 4<<20)
	const puts = 8
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := s.Read(ctx, "segments/hot")
				if errors.Is(err, pages.ErrNotFound) {
					continue
				}
				if err != nil {
					t.Errorf("Read=%v", err)
					return
				}
				if len(got) != len(data) {
					t.Errorf("Read=%d bytes during a Put, want %d", len(got), len(data))
					return
				}
			}
		})
	}
	for range puts {
		if err := s.Put(ctx, "segments/hot", data); err != nil {
			t.Fatalf("Put=%v", err)
		}
	}
	close(done)
	wg.Wait()
}

func TestStore_Put_KeyConflict(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	ctx := t.Context()
	if err := s.Put(ctx, "a/b/c", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// "a/b" is a directory, so it can be no object.
	if err := s.Put(ctx, "a/b", []byte("y")); err == nil || errors.Is(err, pages.ErrInvalidKey) {
		t.Fatalf(`Put("a/b") over a directory=%v, want an I/O error`, err)
	}
	// "a/b/c" is a file, so it can hold no objects.
	if err := s.Put(ctx, "a/b/c/d", []byte("z")); err == nil || errors.Is(err, pages.ErrInvalidKey) {
		t.Fatalf(`Put("a/b/c/d") under a file=%v, want an I/O error`, err)
	}
	if got := keys(t, s, ""); !slices.Equal(got, []string{"a/b/c"}) {
		t.Fatalf("List()=%q, want [a/b/c]", got)
	}
}
