package replay

/*
#include <stdlib.h>

// Resolved against the SQLite that mattn/go-sqlite3 compiles into the
// binary, as psanford/sqlite3vfs resolves sqlite3_vfs_register.
typedef struct sqlite3 sqlite3;
extern void sqlite3_progress_handler(sqlite3*, int, int(*)(void*), void*);

static int cambium_progress(void *stop) {
	return __atomic_load_n((int *)stop, __ATOMIC_RELAXED);
}

static void cambium_set_progress(void *db, int *stop, int n) {
	sqlite3_progress_handler((sqlite3 *)db, n, cambium_progress, stop);
}
*/
import "C"

import (
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// progressOps is how many virtual machine instructions SQLite runs between
// two calls of the progress handler: a few microseconds.
const progressOps = 1000

// stopFlag is a C int that a replay's progress handler polls: once set,
// SQLite interrupts whatever statement runs (SQLITE_INTERRUPT).
//
// mattn interrupts SQLite when a statement's context ends, with one
// sqlite3_interrupt call. That call is lost when it lands before the
// statement's first step (SQLite clears the interrupt when a statement
// starts and none is running), which happens when the context ends between
// two statements of one SQL string: the next statement then runs unbounded
// and holds its replay slot for good. The flag stays set, so no statement
// escapes it (DESIGN "Sandbox": a progress handler bounds time).
type stopFlag struct {
	mu sync.Mutex // orders set and clear before free
	p  *C.int     // nil once freed
}

func newStopFlag() *stopFlag {
	p := (*C.int)(C.malloc(C.size_t(unsafe.Sizeof(C.int(0)))))
	*p = 0
	return &stopFlag{p: p}
}

// set makes every statement fail from now on; clear undoes it. Both are
// no-ops once the flag is freed.
func (f *stopFlag) set()   { f.store(1) }
func (f *stopFlag) clear() { f.store(0) }

func (f *stopFlag) store(v int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.p != nil {
		atomic.StoreInt32((*int32)(unsafe.Pointer(f.p)), v)
	}
}

// free releases the flag; the connection it was installed on must be
// closed.
func (f *stopFlag) free() {
	f.mu.Lock()
	defer f.mu.Unlock()
	C.free(unsafe.Pointer(f.p))
	f.p = nil
}

// install makes sc's progress handler poll f.
func (f *stopFlag) install(sc *sqlite3.SQLiteConn) error {
	db, err := dbHandle(sc)
	if err != nil {
		return err
	}
	C.cambium_set_progress(db, f.p, progressOps)
	return nil
}

// dbHandle returns sc's sqlite3* handle, which mattn keeps unexported.
// TestEngine_Hostile fails if a mattn upgrade moves it.
func dbHandle(sc *sqlite3.SQLiteConn) (unsafe.Pointer, error) {
	f := reflect.ValueOf(sc).Elem().FieldByName("db")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		return nil, errors.New("replay: mattn/go-sqlite3 connection has no sqlite3 handle field")
	}
	return f.UnsafePointer(), nil
}
