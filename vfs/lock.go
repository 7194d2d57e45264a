package vfs

import (
	"context"

	"github.com/psanford/sqlite3vfs"
)

// lockTable implements SQLite's five lock levels between the connections of
// one process on one mount, with the semantics of os_unix.c's in-process
// locks (https://www.sqlite.org/lockingv3.html): many SHARED, at most one
// RESERVED, and PENDING then EXCLUSIVE once every other SHARED is gone.
// It does not coordinate with other processes.
type lockTable struct {
	mu      chan struct{} // a one-slot semaphore, so waiters can also watch a context
	shared  int           // holders of SHARED or above
	writer  *mainFile     // holder of RESERVED, PENDING or EXCLUSIVE
	pending bool          // writer holds PENDING: no new SHARED
	excl    bool          // writer holds EXCLUSIVE
	changed chan struct{} // made by a waiting Exclusive, closed at the next release
}

func newLockTable() *lockTable {
	return &lockTable{mu: make(chan struct{}, 1)}
}

func (t *lockTable) lock()   { t.mu <- struct{}{} }
func (t *lockTable) unlock() { <-t.mu }

// notifyLocked wakes Exclusive waiters, if any.
func (t *lockTable) notifyLocked() {
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
}

// changedLocked returns a channel closed at the next release.
func (t *lockTable) changedLocked() <-chan struct{} {
	if t.changed == nil {
		t.changed = make(chan struct{})
	}
	return t.changed
}

// acquire raises f from level cur to want, or returns sqlite3vfs.BusyError
// leaving f at the highest level reached (as os_unix.c does with PENDING).
func (t *lockTable) acquire(f *mainFile, cur, want sqlite3vfs.LockType) (sqlite3vfs.LockType, error) {
	t.lock()
	defer t.unlock()
	if cur == sqlite3vfs.LockNone && want >= sqlite3vfs.LockShared {
		if t.pending || t.excl {
			return cur, sqlite3vfs.BusyError
		}
		t.shared++
		cur = sqlite3vfs.LockShared
	}
	if want >= sqlite3vfs.LockReserved && cur < sqlite3vfs.LockReserved {
		if t.writer != nil && t.writer != f {
			return cur, sqlite3vfs.BusyError
		}
		t.writer = f
		cur = sqlite3vfs.LockReserved
	}
	if want >= sqlite3vfs.LockPending && cur < sqlite3vfs.LockPending {
		t.pending = true
		cur = sqlite3vfs.LockPending
	}
	if want == sqlite3vfs.LockExclusive && cur < sqlite3vfs.LockExclusive {
		if t.shared > 1 {
			return cur, sqlite3vfs.BusyError
		}
		t.excl = true
		cur = sqlite3vfs.LockExclusive
	}
	return cur, nil
}

// release lowers f from cur to want (SHARED or NONE).
func (t *lockTable) release(f *mainFile, cur, want sqlite3vfs.LockType) {
	t.lock()
	defer t.unlock()
	if cur >= sqlite3vfs.LockReserved && want <= sqlite3vfs.LockShared && t.writer == f {
		t.writer, t.pending, t.excl = nil, false, false
	}
	if cur >= sqlite3vfs.LockShared && want == sqlite3vfs.LockNone {
		t.shared--
	}
	t.notifyLocked()
}

// reservedByOther reports whether a connection other than f holds RESERVED
// or above.
func (t *lockTable) reservedByOther(f *mainFile) bool {
	t.lock()
	defer t.unlock()
	return t.writer != nil && t.writer != f
}

// acquireAll takes the equivalent of EXCLUSIVE for an out-of-band change,
// waiting for every connection to step down to NONE.
func (t *lockTable) acquireAll(ctx context.Context) error {
	for {
		t.lock()
		if t.writer == nil {
			// Announce PENDING so no new reader starts while we wait.
			t.writer, t.pending = outOfBand, true
		}
		if t.writer == outOfBand && t.shared == 0 {
			t.shared, t.excl = 1, true
			t.unlock()
			return nil
		}
		ch := t.changedLocked()
		t.unlock()
		select {
		case <-ctx.Done():
			t.lock()
			if t.writer == outOfBand {
				t.writer, t.pending = nil, false
				t.notifyLocked()
			}
			t.unlock()
			return ctx.Err()
		case <-ch:
		}
	}
}

func (t *lockTable) releaseAll() {
	t.lock()
	defer t.unlock()
	t.shared, t.writer, t.pending, t.excl = 0, nil, false, false
	t.notifyLocked()
}

// outOfBand stands for the holder of an Exclusive call.
var outOfBand = &mainFile{}
