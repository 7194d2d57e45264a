package vfs

import (
	"io"
	"sync"

	"github.com/psanford/sqlite3vfs"
)

// scratchFile is an in-memory file for SQLite's temporary files (TEMP
// databases, VACUUM's transient database, sorter spill, statement
// journals). It is private to one connection and gone on close. Its size
// counts against v's scratch limit.
type scratchFile struct {
	v    *VFS
	mu   sync.Mutex
	data []byte
}

var _ sqlite3vfs.File = (*scratchFile)(nil)

func (s *scratchFile) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v.reserveScratch(-int64(len(s.data)))
	s.data = nil
	return nil
}

func (s *scratchFile) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off >= int64(len(s.data)) {
		clear(p)
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		clear(p[n:])
		return n, io.EOF
	}
	return n, nil
}

func (s *scratchFile) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(s.data)) {
		if !s.v.reserveScratch(end - int64(len(s.data))) {
			return 0, sqlite3vfs.IOErrorWrite
		}
		if end > int64(cap(s.data)) {
			grown := make([]byte, end, max(end, 2*int64(cap(s.data))))
			copy(grown, s.data)
			s.data = grown
		} else {
			s.data = s.data[:end]
		}
	}
	return copy(s.data[off:], p), nil
}

func (s *scratchFile) Truncate(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if size < int64(len(s.data)) {
		s.v.reserveScratch(size - int64(len(s.data)))
		s.data = s.data[:size]
	}
	return nil
}

func (s *scratchFile) Sync(sqlite3vfs.SyncType) error { return nil }

func (s *scratchFile) FileSize() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.data)), nil
}

func (s *scratchFile) Lock(sqlite3vfs.LockType) error   { return nil }
func (s *scratchFile) Unlock(sqlite3vfs.LockType) error { return nil }

// CheckReservedLock returns true, which the binding turns into "not
// reserved" (see mainFile.CheckReservedLock).
func (s *scratchFile) CheckReservedLock() (bool, error) { return true, nil }
func (s *scratchFile) SectorSize() int64                { return 4096 }
func (s *scratchFile) DeviceCharacteristics() sqlite3vfs.DeviceCharacteristic {
	return sqlite3vfs.IocapPowersafeOverwrite
}
