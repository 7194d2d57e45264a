package vfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/psanford/sqlite3vfs"
)

// Header offsets in page 1 (https://www.sqlite.org/fileformat2.html#the_database_header).
const (
	hdrChangeCounter = 24 // file change counter
	hdrVersionValid  = 92 // version-valid-for number
	hdrPageSize      = 16 // 2 bytes, 1 means 65536
	hdrInHeaderSize  = 28 // database size in pages
)

// trace, when set (by tests, before any traffic), receives every call on a
// main database file: the op name and its main argument.
var trace func(op string, arg int64)

// commitHook, when set by tests, runs just before a CommitFunc is called.
var commitHook func()

// mainFile is one connection's handle on a mounted database.
//
// Invariants: dirty and reads are only non-empty while level >= SHARED;
// dirty is only non-empty while level >= RESERVED; pageCount is the file
// size SQLite sees (source count at the shared lock, then grown by writes and
// cut by truncates). counter is the value served in page 1's counters while
// SHARED is held, and is what the pager believes the change counter to be.
type mainFile struct {
	m   *mount
	tag string

	// SQLite calls a file from one thread at a time, but a commit may run
	// while Exclusive waits; mu keeps the race detector and us honest.
	mu        sync.Mutex
	level     sqlite3vfs.LockType
	counter   uint32
	hadPage1  bool // the source had page 1 when SHARED was taken
	baseCount uint32
	pageCount uint32
	dirty     map[uint32][]byte
	reads     map[uint32]struct{}
	committed bool // this write transaction was handed to CommitFunc
	scratch   []byte
}

var _ sqlite3vfs.File = (*mainFile)(nil)

func newMainFile(m *mount, tag string) *mainFile {
	return &mainFile{m: m, tag: tag, scratch: make([]byte, m.src.PageSize())}
}

func (f *mainFile) ctx() context.Context { return context.Background() }

func (f *mainFile) pageSize() int64 { return int64(f.m.src.PageSize()) }

// fail records err for LastError and returns the SQLite error to report.
func (f *mainFile) fail(err error, code error) error {
	f.m.v.setErr(f.m.name, err)
	return code
}

func (f *mainFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.level != sqlite3vfs.LockNone {
		f.m.locks.release(f, f.level, sqlite3vfs.LockNone)
		f.level = sqlite3vfs.LockNone
	}
	f.dirty, f.reads = nil, nil
	return nil
}

// currentCount is the page count SQLite should see now.
func (f *mainFile) currentCountLocked() (uint32, error) {
	if f.level >= sqlite3vfs.LockShared {
		return f.pageCount, nil
	}
	return f.m.src.PageCount(f.ctx())
}

// pageLocked returns page pgno as SQLite should see it, or nil past the end.
func (f *mainFile) pageLocked(pgno uint32, count uint32) ([]byte, error) {
	if p, ok := f.dirty[pgno]; ok {
		return p, nil
	}
	if pgno > count {
		return nil, nil
	}
	if err := f.m.src.ReadPage(f.ctx(), pgno, f.scratch); err != nil {
		return nil, err
	}
	if pgno == 1 {
		f.setEpochLocked(f.scratch)
	}
	return f.scratch, nil
}

// setEpochLocked puts the epoch into page 1's two counters.
func (f *mainFile) setEpochLocked(p1 []byte) {
	binary.BigEndian.PutUint32(p1[hdrChangeCounter:], f.counter)
	binary.BigEndian.PutUint32(p1[hdrVersionValid:], f.counter)
}

// ReadAt serves any byte range (the pager reads whole pages, but also the
// 100-byte header at open and bytes 24–39 at each shared lock).
func (f *mainFile) ReadAt(p []byte, off int64) (int, error) {
	if trace != nil {
		trace("ReadAt", off)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	count, err := f.currentCountLocked()
	if err != nil {
		return 0, f.fail(fmt.Errorf("read %s: page count: %w", f.m.name, err), sqlite3vfs.IOErrorRead)
	}
	ps := f.pageSize()
	if int64(len(p)) == ps && off%ps == 0 {
		// The pager reads whole pages: read into p, not through scratch.
		pgno := uint32(off/ps) + 1
		if _, ok := f.dirty[pgno]; !ok && pgno <= count {
			if err := f.m.src.ReadPage(f.ctx(), pgno, p); err != nil {
				return 0, f.fail(fmt.Errorf("read %s page %d: %w", f.m.name, pgno, err), sqlite3vfs.IOErrorRead)
			}
			if pgno == 1 {
				f.setEpochLocked(p)
			}
			if f.level >= sqlite3vfs.LockShared {
				f.reads[pgno] = struct{}{}
			}
			return len(p), nil
		}
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		pgno := uint32(pos/ps) + 1
		page, err := f.pageLocked(pgno, count)
		if err != nil {
			return n, f.fail(fmt.Errorf("read %s page %d: %w", f.m.name, pgno, err), sqlite3vfs.IOErrorRead)
		}
		if page == nil {
			// Past the end: SQLite expects zeros and SQLITE_IOERR_SHORT_READ,
			// which it treats as a page not yet in the file.
			clear(p[n:])
			return n, io.EOF
		}
		if f.level >= sqlite3vfs.LockShared {
			f.reads[pgno] = struct{}{}
		}
		n += copy(p[n:], page[pos%ps:])
	}
	return n, nil
}

func (f *mainFile) WriteAt(p []byte, off int64) (int, error) {
	if trace != nil {
		trace("WriteAt", off)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.pageSize()
	if f.level < sqlite3vfs.LockReserved {
		return 0, f.fail(fmt.Errorf("write %s at %d: %w", f.m.name, off, ErrUnlocked), sqlite3vfs.IOErrorWrite)
	}
	if int64(len(p)) != ps || off%ps != 0 {
		return 0, f.fail(fmt.Errorf("write %s: %d bytes at %d, page size %d: %w",
			f.m.name, len(p), off, ps, ErrPartialPage), sqlite3vfs.IOErrorWrite)
	}
	pgno := uint32(off/ps) + 1
	if pgno == 1 {
		got := int64(binary.BigEndian.Uint16(p[hdrPageSize:]))
		if got == 1 {
			got = 65536
		}
		if got != ps {
			return 0, f.fail(fmt.Errorf("write %s: header page size %d, source %d: %w",
				f.m.name, got, ps, ErrPageSize), sqlite3vfs.IOErrorWrite)
		}
	}
	if f.dirty == nil {
		f.dirty = make(map[uint32][]byte)
	}
	if _, ok := f.dirty[pgno]; !ok {
		if lim := f.m.maxDirty.Load(); lim > 0 && int64(len(f.dirty)) >= lim {
			return 0, f.fail(&LimitError{Name: f.m.name, What: "dirty pages", Limit: lim}, sqlite3vfs.IOErrorWrite)
		}
	}
	f.dirty[pgno] = append([]byte(nil), p...)
	f.pageCount = max(f.pageCount, pgno)
	return len(p), nil
}

// Truncate happens on VACUUM, with auto_vacuum, and when a rollback undoes
// growth that had spilled to the file.
func (f *mainFile) Truncate(size int64) error {
	if trace != nil {
		trace("Truncate", size)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.pageSize()
	if f.level < sqlite3vfs.LockReserved {
		return f.fail(fmt.Errorf("truncate %s: %w", f.m.name, ErrUnlocked), sqlite3vfs.IOError)
	}
	if size%ps != 0 {
		return f.fail(fmt.Errorf("truncate %s to %d: %w", f.m.name, size, ErrPartialPage), sqlite3vfs.IOError)
	}
	n := uint32(size / ps)
	for pgno := range f.dirty {
		if pgno > n {
			delete(f.dirty, pgno)
		}
	}
	f.pageCount = n
	return nil
}

// Sync is the commit point; see the package documentation.
func (f *mainFile) Sync(flag sqlite3vfs.SyncType) error {
	if trace != nil {
		trace("Sync", int64(flag))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.level < sqlite3vfs.LockReserved || f.committed || !f.isCommitLocked() {
		return nil
	}
	return f.commitLocked()
}

// isCommitLocked applies the page-1 rule: a commit always rewrites page 1
// with the change counter the pager last read plus one (pager.c,
// pager_write_changecounter); a rollback restores page 1 or never wrote it.
// The pager's counter is ours (the epoch), or 0 for an empty database.
func (f *mainFile) isCommitLocked() bool {
	p1, ok := f.dirty[1]
	if !ok {
		return false
	}
	seen := uint32(0)
	if f.hadPage1 {
		seen = f.counter
	}
	return binary.BigEndian.Uint32(p1[hdrChangeCounter:]) == seen+1
}

func (f *mainFile) commitLocked() error {
	// A commit that shrinks the file truncates it in CommitPhaseTwo, after
	// xSync (pager.c, pager_end_transaction). The in-header database size
	// is already final here and valid, since the commit wrote bytes 24 and
	// 92 together (https://www.sqlite.org/fileformat2.html#in_header_database_size).
	p1 := f.dirty[1]
	if n := binary.BigEndian.Uint32(p1[hdrInHeaderSize:]); n > 0 &&
		binary.BigEndian.Uint32(p1[hdrChangeCounter:]) == binary.BigEndian.Uint32(p1[hdrVersionValid:]) {
		if n > f.pageCount {
			return f.fail(fmt.Errorf("commit %s: header size %d pages, file %d: %w",
				f.m.name, n, f.pageCount, ErrHeaderSize), sqlite3vfs.IOError)
		}
		for pgno := range f.dirty {
			if pgno > n {
				delete(f.dirty, pgno)
			}
		}
		f.pageCount = n
	}
	c := &Capture{
		Name:      f.m.name,
		Tag:       f.tag,
		PageSize:  int(f.pageSize()),
		PageCount: f.pageCount,
		Pages:     f.dirty,
		ReadSet:   sortedPages(f.reads),
	}
	if commitHook != nil {
		commitHook()
	}
	if err := f.m.commit(f.ctx(), c); err != nil {
		return f.fail(&CommitError{Name: f.m.name, Err: err}, sqlite3vfs.IOError)
	}
	// The pager now believes page 1's counter is what it wrote; serve that
	// until the next shared lock so a later transaction under the same
	// SHARED lock (statements left open) is still recognised as a commit.
	f.counter = binary.BigEndian.Uint32(f.dirty[1][hdrChangeCounter:])
	f.hadPage1 = true
	f.committed = true
	f.baseCount = f.pageCount
	f.dirty = nil // handed over; WriteAt makes a new one
	clear(f.reads)
	return nil
}

func (f *mainFile) FileSize() (int64, error) {
	if trace != nil {
		trace("FileSize", 0)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.currentCountLocked()
	if err != nil {
		return 0, f.fail(fmt.Errorf("size %s: %w", f.m.name, err), sqlite3vfs.IOError)
	}
	return int64(n) * f.pageSize(), nil
}

func (f *mainFile) Lock(want sqlite3vfs.LockType) error {
	if trace != nil {
		trace("Lock", int64(want))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want <= f.level {
		return nil
	}
	from := f.level
	got, err := f.m.locks.acquire(f, from, want)
	f.level = got
	if from == sqlite3vfs.LockNone && got >= sqlite3vfs.LockShared {
		if err := f.beginLocked(); err != nil {
			f.m.locks.release(f, got, sqlite3vfs.LockNone)
			f.level = sqlite3vfs.LockNone
			return f.fail(fmt.Errorf("lock %s: %w", f.m.name, err), sqlite3vfs.IOError)
		}
	}
	if from < sqlite3vfs.LockReserved && got >= sqlite3vfs.LockReserved {
		f.dirty = nil // WriteAt makes it
		f.committed = false
	}
	return err
}

// beginLocked starts a transaction at the NONE→SHARED step: a new epoch, so
// the pager drops its cache, and the source's page count.
func (f *mainFile) beginLocked() error {
	n, err := f.m.src.PageCount(f.ctx())
	if err != nil {
		return err
	}
	// +2 keeps the epoch away from both values the pager may hold: the
	// previous epoch, or the previous epoch+1 it wrote when committing.
	f.counter += 2
	f.hadPage1 = n > 0
	f.baseCount, f.pageCount = n, n
	if f.reads == nil {
		f.reads = make(map[uint32]struct{})
	}
	clear(f.reads)
	return nil
}

func (f *mainFile) Unlock(want sqlite3vfs.LockType) error {
	if trace != nil {
		trace("Unlock", int64(want))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want >= f.level {
		return nil
	}
	var err error
	if f.level >= sqlite3vfs.LockReserved && want <= sqlite3vfs.LockShared {
		// With synchronous=OFF SQLite never calls xSync: the step down is
		// the only remaining commit point.
		if !f.committed && f.isCommitLocked() {
			err = f.commitLocked()
		}
		if !f.committed {
			f.pageCount = f.baseCount
		}
		f.dirty, f.committed = nil, false
	}
	f.m.locks.release(f, f.level, want)
	f.level = want
	if want == sqlite3vfs.LockNone {
		clear(f.reads) // kept for the next transaction
	}
	return err
}

// CheckReservedLock reports whether another connection holds RESERVED or
// above. The binding inverts the boolean it hands SQLite (it writes 0 for
// true), so the answer is inverted here to keep SQLite's view right. SQLite
// only asks while probing for a hot journal, which Access rules out.
func (f *mainFile) CheckReservedLock() (bool, error) {
	return !f.m.locks.reservedByOther(f), nil
}

// SectorSize is SQLite's default (SQLITE_DEFAULT_SECTOR_SIZE); it only
// shapes journal padding, and the journal lives in memory.
func (f *mainFile) SectorSize() int64 { return 4096 }

// DeviceCharacteristics claims no atomic or batch-atomic writes, which would
// change the commit sequence, only that a page write does not disturb its
// neighbours.
func (f *mainFile) DeviceCharacteristics() sqlite3vfs.DeviceCharacteristic {
	return sqlite3vfs.IocapPowersafeOverwrite
}
