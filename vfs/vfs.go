package vfs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/psanford/sqlite3vfs"
)

// TagParam is the URI parameter whose value is copied into Capture.Tag, so
// a caller with several connections on one database can tell which one
// committed (e.g. "file:/db?vfs=x&cambium_tag=7").
const TagParam = "cambium_tag"

var (
	// ErrNameTaken is returned by Register for a name already registered.
	ErrNameTaken = errors.New("vfs: name already registered")
	// ErrNotMounted is recorded when SQLite opens a main database that was
	// not mounted on the VFS.
	ErrNotMounted = errors.New("vfs: database not mounted")
	// ErrMounted is returned by Mount for a name already mounted.
	ErrMounted = errors.New("vfs: database already mounted")
	// ErrJournalFile is recorded when SQLite tries to open a rollback
	// journal, WAL or super journal: connections must use journal_mode=MEMORY.
	ErrJournalFile = errors.New("vfs: journal files are not supported; use journal_mode=MEMORY")
	// ErrPartialPage is recorded for a write that is not one whole, aligned
	// page of the source's page size.
	ErrPartialPage = errors.New("vfs: write is not one whole aligned page")
	// ErrPageSize is recorded when SQLite writes a database header whose page
	// size differs from the source's.
	ErrPageSize = errors.New("vfs: page size does not match the source")
	// ErrHeaderSize is recorded when a commit's page 1 claims more pages
	// than were written: SQLite never does that, so the commit is refused.
	ErrHeaderSize = errors.New("vfs: header database size exceeds the file")
	// ErrUnlocked is recorded for a write or truncate without a RESERVED lock.
	ErrUnlocked = errors.New("vfs: write without a reserved lock")
	// ErrLimit is wrapped by LimitError.
	ErrLimit = errors.New("vfs: memory limit reached")
)

// LimitError reports a write refused by a memory limit: a transaction
// holding more dirty pages than SetDirtyLimit allows (recorded for
// LastError), or scratch files growing past SetScratchLimit (recorded for
// ScratchError, since they belong to no mount). SQLite sees an I/O error
// and rolls the statement or transaction back.
type LimitError struct {
	Name  string // the mount's name; "" for scratch files
	What  string // "dirty pages" or "scratch bytes"
	Limit int64
}

func (e *LimitError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("vfs: more than %d %s", e.Limit, e.What)
	}
	return fmt.Sprintf("vfs: %s: more than %d %s", e.Name, e.Limit, e.What)
}

// Unwrap returns ErrLimit.
func (e *LimitError) Unwrap() error { return ErrLimit }

// CommitError wraps the error a CommitFunc returned; it is what
// (*VFS).LastError reports after a COMMIT failed for that reason.
type CommitError struct {
	Name string
	Err  error
}

func (e *CommitError) Error() string { return fmt.Sprintf("vfs: commit %s: %v", e.Name, e.Err) }
func (e *CommitError) Unwrap() error { return e.Err }

// PageSource serves the committed state of one database. A lazy replica
// fetches from a server; the server's replay reads a snapshot of the page
// store. Implementations must be safe for concurrent use.
type PageSource interface {
	// PageSize is the database's fixed page size in bytes (512..65536, a
	// power of two). It never changes.
	PageSize() int
	// PageCount returns the number of pages of the current committed state;
	// 0 for an empty database.
	PageCount(ctx context.Context) (uint32, error)
	// ReadPage fills p (len(p) == PageSize()) with page pgno of the current
	// committed state, 1 <= pgno <= PageCount().
	ReadPage(ctx context.Context, pgno uint32, p []byte) error
}

// CommitFunc persists one committed transaction. It is called from inside
// SQLite's COMMIT, with the database's exclusive lock held. It must be
// atomic: on a nil return the PageSource serves the new state; on an error
// nothing of c is visible, and the application's COMMIT fails. c and its
// page slices are handed over: the VFS never touches them again.
type CommitFunc func(ctx context.Context, c *Capture) error

// Capture is one committed write transaction.
type Capture struct {
	// Name is the database's mount name.
	Name string
	// Tag is the TagParam URI parameter of the committing connection.
	Tag string
	// PageSize is the source's page size.
	PageSize int
	// PageCount is the number of pages after the transaction.
	PageCount uint32
	// Pages maps each page number written (and not truncated away) to
	// exactly the bytes SQLite wrote last. Page 1 is always present.
	Pages map[uint32][]byte
	// ReadSet lists, ascending, every page SQLite read during the
	// transaction, from the dirty buffer or the source.
	ReadSet []uint32
}

// VFS is one registered SQLite VFS name with its clock and its mounted
// databases.
type VFS struct {
	name string
	// nowMS is the fixed clock in Unix milliseconds, or liveClock.
	nowMS atomic.Int64
	// scratchLimit bounds scratchUsed, the bytes held by the scratch files
	// opened through this name; 0 is no bound.
	scratchLimit atomic.Int64
	scratchUsed  atomic.Int64
	scratchErr   atomic.Pointer[LimitError]

	mu struct {
		sync.Mutex
		mounts  map[string]*mount
		lastErr map[string]error
	}
}

const liveClock = math.MinInt64

var registry struct {
	sync.Mutex
	names map[string]*VFS
}

// Register registers a new VFS under name with SQLite and returns it. Names
// cannot be unregistered. Register must not run while any connection of the
// process is using a VFS registered through this package (the binding's
// registry is not synchronized): register everything at startup.
func Register(name string) (*VFS, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.names == nil {
		registry.names = make(map[string]*VFS)
	}
	if _, ok := registry.names[name]; ok {
		return nil, fmt.Errorf("register %q: %w", name, ErrNameTaken)
	}
	v := &VFS{name: name}
	v.nowMS.Store(liveClock)
	v.mu.mounts = make(map[string]*mount)
	v.mu.lastErr = make(map[string]error)
	if err := sqlite3vfs.RegisterVFS(name, &binding{v: v}); err != nil {
		return nil, fmt.Errorf("register %q: %w", name, err)
	}
	registry.names[name] = v
	return v, nil
}

// Name is the VFS name to pass as vfs= when opening a connection.
func (v *VFS) Name() string { return v.name }

// SetTime fixes the clock SQLite sees ('now', CURRENT_TIMESTAMP, ...) through
// this VFS name, at millisecond precision. The zero time restores the wall
// clock.
func (v *VFS) SetTime(t time.Time) {
	if t.IsZero() {
		v.nowMS.Store(liveClock)
		return
	}
	v.nowMS.Store(t.UnixMilli())
}

// Now returns the time SQLite currently sees through this VFS.
func (v *VFS) Now() time.Time {
	ms := v.nowMS.Load()
	if ms == liveClock {
		return time.Now()
	}
	return time.UnixMilli(ms)
}

// SetDirtyLimit bounds the pages one write transaction on the mounted
// database name may hold in memory until its commit (0: no bound). A write
// past it fails and records a *LimitError. The server's replay sets it; a
// replica does not.
func (v *VFS) SetDirtyLimit(name string, pages int) error {
	m := v.lookup(name)
	if m == nil {
		return fmt.Errorf("dirty limit %q: %w", name, ErrNotMounted)
	}
	m.maxDirty.Store(int64(pages))
	return nil
}

// SetScratchLimit bounds the bytes that all of SQLite's scratch files
// opened through this VFS name (temp tables, sorter spill, transient
// indexes, statement journals) hold together (0: no bound). A write past
// it fails, and ScratchError reports it. It clears ScratchError.
func (v *VFS) SetScratchLimit(bytes int64) {
	v.scratchLimit.Store(bytes)
	v.scratchErr.Store(nil)
}

// ScratchError returns the *LimitError of the last scratch write refused
// since SetScratchLimit, or nil.
func (v *VFS) ScratchError() error {
	if e := v.scratchErr.Load(); e != nil {
		return e
	}
	return nil
}

// reserveScratch accounts for n more scratch bytes (n < 0 releases),
// refusing growth past the limit.
func (v *VFS) reserveScratch(n int64) bool {
	if n <= 0 {
		v.scratchUsed.Add(n)
		return true
	}
	limit := v.scratchLimit.Load()
	if used := v.scratchUsed.Add(n); limit > 0 && used > limit {
		v.scratchUsed.Add(-n)
		v.scratchErr.Store(&LimitError{What: "scratch bytes", Limit: limit})
		return false
	}
	return true
}

// Mount makes name (the path SQLite is given, after xFullPathname, which
// this VFS leaves unchanged) a main database served by src and committed by
// commit.
func (v *VFS) Mount(name string, src PageSource, commit CommitFunc) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.mu.mounts[name]; ok {
		return fmt.Errorf("mount %q: %w", name, ErrMounted)
	}
	v.mu.mounts[name] = &mount{v: v, name: name, src: src, commit: commit, locks: newLockTable()}
	return nil
}

// Unmount removes a mount. Connections already open on it keep working;
// new ones fail to open.
func (v *VFS) Unmount(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.mu.mounts, name)
	delete(v.mu.lastErr, name)
}

// LastError returns the last error the VFS reported to SQLite for name
// (SQLite only sees an error code), or nil.
func (v *VFS) LastError(name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.lastErr[name]
}

// Exclusive runs fn while holding name's EXCLUSIVE lock, waiting until no
// connection holds any lock on it. Use it to change a source's state out of
// band (e.g. applying pages pulled from a server): no SQLite transaction can
// observe a half-applied change.
func (v *VFS) Exclusive(ctx context.Context, name string, fn func() error) error {
	m := v.lookup(name)
	if m == nil {
		return fmt.Errorf("exclusive %q: %w", name, ErrNotMounted)
	}
	if err := m.locks.acquireAll(ctx); err != nil {
		return fmt.Errorf("exclusive %q: %w", name, err)
	}
	defer m.locks.releaseAll()
	return fn()
}

func (v *VFS) lookup(name string) *mount {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.mounts[name]
}

func (v *VFS) setErr(name string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mu.lastErr[name] = err
}

// mount is one database mounted on a VFS.
type mount struct {
	v      *VFS
	name   string
	src    PageSource
	commit CommitFunc
	locks  *lockTable
	// maxDirty bounds a write transaction's dirty pages; 0 is no bound.
	maxDirty atomic.Int64
}

// binding adapts VFS to sqlite3vfs.ExtendedVFSv1.
type binding struct{ v *VFS }

var (
	_ sqlite3vfs.ExtendedVFSv1 = (*binding)(nil)
	_ sqlite3vfs.URIOpener     = (*binding)(nil)
)

func (b *binding) Open(name string, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	return b.OpenURI(name, nil, flags)
}

func (b *binding) OpenURI(name string, params map[string]string, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	switch {
	case flags&sqlite3vfs.OpenMainDB != 0:
		m := b.v.lookup(name)
		if m == nil {
			b.v.setErr(name, fmt.Errorf("open %q: %w", name, ErrNotMounted))
			return nil, 0, sqlite3vfs.CantOpenError
		}
		return newMainFile(m, params[TagParam]), flags, nil
	case flags&(sqlite3vfs.OpenMainJournal|sqlite3vfs.OpenWAL|sqlite3vfs.OpenSuperJournal) != 0:
		b.v.setErr(strings.TrimSuffix(strings.TrimSuffix(name, "-journal"), "-wal"),
			fmt.Errorf("open %q: %w", name, ErrJournalFile))
		return nil, 0, sqlite3vfs.CantOpenError
	default:
		// TEMP databases, VACUUM's transient database, sorter spill files
		// and statement journals: private scratch space, never replicated.
		return &scratchFile{v: b.v}, flags, nil
	}
}

// Delete is only ever asked for files this VFS never creates on disk.
func (b *binding) Delete(name string, dirSync bool) error { return nil }

// Access reports mounted databases as existing and everything else (journals,
// WAL files SQLite probes for) as absent, which keeps SQLite from looking for
// a hot journal (https://www.sqlite.org/atomiccommit.html#hot_rollback_journals).
func (b *binding) Access(name string, flags sqlite3vfs.AccessFlag) (bool, error) {
	return b.v.lookup(name) != nil, nil
}

// FullPathname leaves names unchanged: mount names are the keys.
func (b *binding) FullPathname(name string) string { return name }

func (b *binding) Randomness(p []byte) int {
	n, _ := rand.Read(p)
	return n
}

func (b *binding) Sleep(d time.Duration) { time.Sleep(d) }

func (b *binding) CurrentTime() time.Time { return b.v.Now() }

// sortedPages returns the keys of a page set ascending.
func sortedPages[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
