// Package dirstore implements pages.Store on a local directory, for tests,
// single-machine deployments and benchmarks that want no object store.
//
// Each object is a regular file at its key's path under the root directory
// ("segments/ab12" is <root>/segments/ab12). The package owns that layout and
// the durability of each file; it does not know what the objects contain.
//
// Invariants:
//   - A file at a key's path is always a complete object. Put writes a
//     temporary file in the destination directory, fsyncs it, renames it over
//     the final name and fsyncs the directory, so a reader or a crash sees
//     either no object or all of it, never a prefix.
//   - Temporary files are named with tempPrefix, which no valid key segment
//     may start with. Read and List never see them; Open removes the ones a
//     crashed Put left behind once they are older than TempExpiry.
//
// Because objects are files and key segments are directories, a store cannot
// hold both "a/b" and "a/b/c"; Put of the second fails. Segment keys never
// nest, so this costs nothing.
package dirstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cambiumdb/cambium/pages"
)

const (
	// tempPrefix starts the name of every temporary file Put creates.
	tempPrefix = pages.ReservedKeyPrefix

	// TempExpiry is how old a temporary file must be before Open removes it
	// as the leftover of a crashed Put. It is far longer than any Put takes,
	// so a Store opening a directory that another Store is writing to does
	// not remove files still in use.
	TempExpiry = time.Hour
)

var _ pages.Store = (*Store)(nil)

// Store is a pages.Store on a local directory. It is safe for concurrent use,
// also by several Stores (or processes) sharing one directory.
type Store struct {
	dir string // absolute path of the root directory

	// step, if set, is called before each named step of Put ("create",
	// "write", "sync", "rename", "syncdir"); an error it returns fails the
	// Put there. It is the fault seam for tests and must be set before use.
	step func(name string) error
}

// Open returns a Store rooted at dir, creating the directory if needed, and
// removes temporary files older than TempExpiry left by crashed Puts.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open dirstore %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("open dirstore %s: %w", dir, err)
	}
	s := &Store{dir: abs}
	if err := s.removeStaleTemp(time.Now().Add(-TempExpiry)); err != nil {
		return nil, fmt.Errorf("open dirstore %s: %w", dir, err)
	}
	return s, nil
}

// Dir returns the absolute path of the store's root directory.
func (s *Store) Dir() string { return s.dir }

// path returns the file path of a valid key.
func (s *Store) path(key string) string {
	return filepath.Join(s.dir, filepath.FromSlash(key))
}

func (s *Store) check(ctx context.Context, op, key string) error {
	if !pages.ValidKey(key) {
		return fmt.Errorf("%s %q: %w", op, key, pages.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return nil
}

// Put stores data as the file for key, atomically and durably: when it
// returns nil the object survives a crash, and no reader ever sees part of
// it. A Put over an existing object replaces it in one rename.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if err := s.check(ctx, "put", key); err != nil {
		return err
	}
	if err := s.put(key, data); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (s *Store) put(key string, data []byte) (err error) {
	path := s.path(key)
	dir := filepath.Dir(path)
	if err := s.mkdirAll(dir); err != nil {
		return err
	}
	if err := s.hook("create"); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := s.hook("write"); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := s.hook("sync"); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := s.hook("rename"); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// From here the object is visible; a failure only costs durability, and
	// a retried Put of the same bytes repairs it.
	if err := s.hook("syncdir"); err != nil {
		return err
	}
	return syncDir(dir)
}

func (s *Store) hook(name string) error {
	if s.step == nil {
		return nil
	}
	return s.step(name)
}

// mkdirAll creates dir and its missing parents under the root, fsyncing the
// parent of each directory it creates so the new entries are durable too.
func (s *Store) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if dir != s.dir && parent != dir {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // a concurrent Put made it; that Put syncs the parent
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// openObject opens the file of key and returns it with its size. A key whose
// path is missing, runs through a file, or names a directory is ErrNotFound.
func (s *Store) openObject(key string) (*os.File, int64, error) {
	f, err := os.Open(s.path(key))
	if err != nil {
		if isNotExist(err) {
			return nil, 0, pages.ErrNotFound
		}
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, pages.ErrNotFound
	}
	return f, fi.Size(), nil
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// ReadRange returns length bytes of object key from offset, read with one
// ReadAt. A missing object is ErrNotFound; a range not inside the object is a
// *pages.RangeError. A zero length at 0 <= offset <= size returns an empty
// slice.
func (s *Store) ReadRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	if err := s.check(ctx, "read range", key); err != nil {
		return nil, err
	}
	f, size, err := s.openObject(key)
	if err != nil {
		return nil, fmt.Errorf("read range %s: %w", key, err)
	}
	defer f.Close()
	if offset < 0 || length < 0 || offset > size || length > size-offset {
		return nil, fmt.Errorf("read range: %w",
			&pages.RangeError{Key: key, Offset: offset, Length: length, Size: size})
	}
	buf := make([]byte, length)
	if n, err := f.ReadAt(buf, offset); n < len(buf) {
		return nil, fmt.Errorf("read range %s [%d, %d): read %d bytes: %w",
			key, offset, offset+length, n, err)
	}
	return buf, nil
}

// Read returns the whole object key, or ErrNotFound.
func (s *Store) Read(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(ctx, "read", key); err != nil {
		return nil, err
	}
	f, size, err := s.openObject(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf, nil
}

// Delete removes the file of key and fsyncs its directory. A missing object
// returns nil. Emptied directories are left in place.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.check(ctx, "delete", key); err != nil {
		return err
	}
	path := s.path(key)
	fi, err := os.Lstat(path)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil // a directory of other keys is no object
	}
	if err := os.Remove(path); err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List yields the objects whose key starts with prefix in ascending byte
// order of key. It walks only the directories that can hold such keys,
// reading one directory at a time, and skips temporary files and files whose
// names are not valid keys. A file removed during the walk is skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[pages.Object, error] {
	return func(yield func(pages.Object, error) bool) {
		if !pages.ValidPrefix(prefix) {
			yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, pages.ErrInvalidKey))
			return
		}
		s.walk(ctx, "", prefix, yield)
	}
}

// walk yields the objects under the directory whose keys start with rel
// (empty, or ending in '/'), and reports whether the consumer wants more.
func (s *Store) walk(ctx context.Context, rel, prefix string, yield func(pages.Object, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, err))
		return false
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, filepath.FromSlash(rel)))
	if err != nil {
		if rel != "" && isNotExist(err) {
			return true // removed since its parent was read
		}
		yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, err))
		return false
	}
	// ReadDir sorts by name, but the keys under directory "b" start with
	// "b/", which sorts after a file "b-x" ('/' is 0x2F, '-' is 0x2D).
	// Sorting directories by name+"/" gives ascending key order overall.
	sortName := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int {
		return strings.Compare(sortName(a), sortName(b))
	})
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		key := rel + name
		if e.IsDir() {
			sub := key + "/"
			if strings.HasPrefix(sub, prefix) || strings.HasPrefix(prefix, sub) {
				if !s.walk(ctx, sub, prefix, yield) {
					return false
				}
			}
			continue
		}
		if !e.Type().IsRegular() || !strings.HasPrefix(key, prefix) || !pages.ValidKey(key) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			if isNotExist(err) {
				continue // deleted since the directory was read
			}
			yield(pages.Object{}, fmt.Errorf("list %q: %w", prefix, err))
			return false
		}
		if !yield(pages.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil) {
			return false
		}
	}
	return true
}

// removeStaleTemp removes temporary files modified before cutoff.
func (s *Store) removeStaleTemp(cutoff time.Time) error {
	return filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if isNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if isNotExist(err) {
				return nil
			}
			return err
		}
		if fi.ModTime().Before(cutoff) {
			if err := os.Remove(path); err != nil && !isNotExist(err) {
				return err
			}
		}
		return nil
	})
}
