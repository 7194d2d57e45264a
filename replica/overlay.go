package replica

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// Checkpoint steps, in the order a checkpoint runs them. faults.step is
// called with each name just before the step; an error there simulates a
// crash at that point.
const (
	// stepCommit: a local commit was appended to the redo log (at the
	// replica's durability) and is about to join the overlay.
	stepCommit = "commit"
	// stepSidecarSync: fold the redo log into the sidecar and fsync it,
	// covering every commit up to seq.
	stepSidecarSync = "sidecar-sync"
	// stepMainWrite: write pages into the main file and set its size.
	stepMainWrite = "main-write"
	// stepMainSync: fsync the main file.
	stepMainSync = "main-sync"
	// stepMarkApplied: record in the sidecar that the main file holds
	// every commit up to seq.
	stepMarkApplied = "mark-applied"
)

// overlay is the part of the local state that is in the sidecar but not yet
// in the main file: the pages written by the commits since the last
// checkpoint, newest bytes per page, and the page count after them.
//
// Invariant: while mu is read-locked, the latest committed local state is,
// for page p <= count: pages[p] if present, else zeros if p > floor, else
// page p of the main file. floor is the lowest page count since the last
// checkpoint, the main file's included: a page above it that no later
// commit rewrote was cut off by a shrinking commit (VACUUM) and reads as
// the zeros a regrown file would hold. Only a checkpoint writes the main
// file while the overlay is not empty, it writes exactly this state, and
// it empties the overlay last, so a reader sees the same bytes throughout.
//
// mu guards the fields against concurrent readers (ReadPage, PageCount);
// they only change with the replica's state lock held, so code holding
// that lock may read them without mu.
type overlay struct {
	mu        sync.RWMutex
	pages     map[uint32][]byte
	commits   int    // commits folded in since the last checkpoint
	upTo      uint64 // the newest of them
	count     uint32 // page count of the latest state, when commits > 0
	floor     uint32
	mainCount uint32 // the main file's page count
}

// add folds in one commit; its page slices are kept, not copied.
func (o *overlay) add(seq uint64, count uint32, pages map[uint32][]byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.commits == 0 {
		o.count, o.floor = o.mainCount, o.mainCount
	}
	if count < o.count {
		for pgno := range o.pages {
			if pgno > count {
				delete(o.pages, pgno)
			}
		}
	}
	o.floor = min(o.floor, count)
	for pgno, p := range pages {
		if pgno <= count {
			o.pages[pgno] = p
		}
	}
	o.count = count
	o.commits++
	o.upTo = seq
}

// bytes is the memory the overlay's pages take.
func (o *overlay) bytes(pageSize int) int { return len(o.pages) * pageSize }

// PageCount implements vfs.PageSource: the overlay's page count, or the
// main file's.
func (r *Replica) PageCount(ctx context.Context) (uint32, error) {
	if err := r.brokenErr(); err != nil {
		return 0, err
	}
	r.ov.mu.RLock()
	defer r.ov.mu.RUnlock()
	if r.ov.commits > 0 {
		return r.ov.count, nil
	}
	return r.ov.mainCount, nil
}

// ReadPage implements vfs.PageSource: from the overlay, else from the main
// file (see overlay for the zeros above floor); a lazy replica fetches a
// page its main file does not hold (lazy.go).
func (r *Replica) ReadPage(ctx context.Context, pgno uint32, p []byte) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	r.ov.mu.RLock()
	if r.ov.commits > 0 {
		if q, ok := r.ov.pages[pgno]; ok {
			copy(p, q)
			r.ov.mu.RUnlock()
			return nil
		}
		if pgno > r.ov.floor {
			clear(p)
			r.ov.mu.RUnlock()
			return nil
		}
	}
	if r.lz.on && !r.lz.has(pgno) {
		r.ov.mu.RUnlock()
		return r.fetchPage(ctx, pgno, p)
	}
	_, err := r.main.ReadAt(p, int64(pgno-1)*int64(r.pageSize))
	r.ov.mu.RUnlock()
	return err
}

// saveFetched records the pages fetched since the last record, after an
// fsync of the main file that holds them.
func (r *Replica) saveFetched(ctx context.Context) error {
	r.state.Lock()
	defer r.state.Unlock()
	if !r.lz.on || len(r.lz.unsaved) == 0 {
		return nil
	}
	if err := r.main.Sync(); err != nil {
		return fmt.Errorf("sync main: %w", err)
	}
	return r.side.tx(ctx, func(tx *sql.Tx) error { return r.saveResidentLocked(ctx, tx, nil, nil, true) })
}

// Checkpoint moves the overlay into the main file: after it returns, the
// main file alone is the latest local state, durably (the sqlite3 shell
// sees it). It is a no-op when no commit happened since the last one. A
// failure leaves the replica broken (ErrBroken) until a reopen repairs it.
func (r *Replica) Checkpoint(ctx context.Context) error {
	r.state.Lock()
	defer r.state.Unlock()
	return r.checkpointLocked(ctx)
}

// overBoundLocked says whether the overlay has reached the checkpoint bound.
func (r *Replica) overBoundLocked() bool {
	return r.ov.commits >= r.opts.CheckpointCommits || r.ov.bytes(r.pageSize) >= r.opts.CheckpointBytes
}

// checkpointLocked runs the checkpoint protocol. The order is what keeps a
// power loss from corrupting the replica: the main file must never hold a
// page of a commit the sidecar could still lose.
//
//  1. fold the redo log into the sidecar's pending table in a FULL-sync
//     transaction (see sidecar.fold and durableTx), so every commit in the
//     overlay survives a power loss;
//  2. write the overlay's pages into the main file and set its size;
//  3. fsync the main file;
//  4. record applied_seq (and the main file's page count) in the sidecar,
//     so Open stops re-applying these commits; this needs no fsync of its
//     own: if a power loss takes it, Open re-applies them, idempotently;
//  5. empty the overlay.
//
// A crash anywhere before 4 is repaired by Open re-applying, in order, the
// pending commits after applied_seq.
func (r *Replica) checkpointLocked(ctx context.Context) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	o := &r.ov
	if o.commits == 0 {
		return nil
	}
	seq := o.upTo
	if err := r.checkpointSteps(ctx, seq); err != nil {
		r.setBroken(err)
		return fmt.Errorf("checkpoint %d: %w", seq, err)
	}
	r.state.applied = seq
	o.mu.Lock()
	o.pages = make(map[uint32][]byte)
	o.commits = 0
	o.mainCount = o.count
	o.mu.Unlock()
	return nil
}

func (r *Replica) checkpointSteps(ctx context.Context, seq uint64) error {
	o := &r.ov
	if err := r.step(stepSidecarSync, seq); err != nil {
		return err
	}
	if folded, err := r.side.fold(ctx); err != nil {
		return err
	} else if !folded {
		// The overlay's commits were folded already, by an earlier
		// sidecar transaction, with an fsync; this one covers rows an
		// older version inserted without one.
		if err := r.side.durableTx(ctx, func(tx *sql.Tx) error {
			return setMeta(ctx, tx, metaSyncedSeq, seq)
		}); err != nil {
			return fmt.Errorf("sync sidecar: %w", err)
		}
	}
	if err := r.writeMain(seq, o.pages, o.floor, o.count); err != nil {
		return err
	}
	if err := r.step(stepMarkApplied, seq); err != nil {
		return err
	}
	add, drop := r.checkpointResident(o.pages, o.floor, o.count)
	return r.side.tx(ctx, func(tx *sql.Tx) error {
		if err := setMeta(ctx, tx, metaAppliedSeq, seq); err != nil {
			return err
		}
		if err := r.saveResidentLocked(ctx, tx, add, drop, true); err != nil {
			return err
		}
		return setMeta(ctx, tx, metaMainPageCount, o.count)
	})
}

// writeMain brings the main file to a state: it cuts the file to floor
// pages if longer, writes pages (those within count), sets the size to
// count pages and fsyncs. Writing the same state again is harmless, so a
// crash midway is repaired by doing it again. seq is passed to the step
// seam (0 for a remote state).
func (r *Replica) writeMain(seq uint64, pages map[uint32][]byte, floor, count uint32) error {
	if err := r.step(stepMainWrite, seq); err != nil {
		return err
	}
	ps := int64(r.pageSize)
	fi, err := r.main.Stat()
	if err != nil {
		return fmt.Errorf("stat main: %w", err)
	}
	if int64(floor)*ps < fi.Size() {
		if err := r.main.Truncate(int64(floor) * ps); err != nil {
			return fmt.Errorf("truncate main: %w", err)
		}
	}
	for _, pgno := range sortedKeys(pages) {
		if pgno > count {
			continue
		}
		if _, err := r.main.WriteAt(pages[pgno], int64(pgno-1)*ps); err != nil {
			return fmt.Errorf("write main page %d: %w", pgno, err)
		}
	}
	if err := r.main.Truncate(int64(count) * ps); err != nil {
		return fmt.Errorf("truncate main: %w", err)
	}
	if err := r.step(stepMainSync, seq); err != nil {
		return err
	}
	if err := r.main.Sync(); err != nil {
		return fmt.Errorf("sync main: %w", err)
	}
	return nil
}

// step runs the fault seam for a named step.
func (r *Replica) step(name string, seq uint64) error {
	if f := r.faults.step; f != nil {
		return f(name, seq)
	}
	return nil
}

// recoverLocked loads the bookkeeping and re-applies, in order, what the
// sidecar holds and the main file may lack: the pending commits after
// applied_seq (through the overlay and a checkpoint, so the sidecar is
// fsynced before the main file is written: after a process crash the
// sidecar's WAL frames may be in the OS cache only), then an unfinished
// remote state. openSidecar has folded the redo log already.
func (r *Replica) recoverLocked(ctx context.Context) error {
	db := r.side.db
	var metaNext, maxSeq, base, baseCount, applied int64
	for _, m := range []struct {
		key string
		v   *int64
	}{{metaNextSeq, &metaNext}, {metaBaseVersion, &base}, {metaBasePageCount, &baseCount}, {metaAppliedSeq, &applied}} {
		v, err := getMetaInt(ctx, db, m.key)
		if err != nil {
			return err
		}
		*m.v = v
	}
	if err := db.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) FROM pending").Scan(&maxSeq); err != nil {
		return err
	}
	r.state.nextSeq = uint64(max(metaNext, maxSeq+1, 1))
	r.state.base, r.state.basePageCount, r.state.applied = uint64(base), uint32(baseCount), uint64(applied)

	fi, err := r.main.Stat()
	if err != nil {
		return err
	}
	r.ov.mainCount = uint32(fi.Size() / int64(r.pageSize))
	r.ov.pages = make(map[uint32][]byte)

	// One commit at a time: the rows are read while the overlay, and the
	// checkpoints its bound forces, use the same single connection. The
	// first commit after applied_seq followed a checkpoint, so it has no
	// deltas (pageset.go) and the chain starts there.
	chain := make(pageChain)
	for next := uint64(applied); ; {
		var seq uint64
		var count uint32
		var nums, deltas, packed []byte
		err := db.QueryRowContext(ctx, "SELECT seq, page_count, page_numbers, deltas, pages FROM pending WHERE seq > ? ORDER BY seq LIMIT 1",
			next).Scan(&seq, &count, &nums, &deltas, &packed)
		if err == sql.ErrNoRows {
			break
		}
		if err != nil {
			return err
		}
		pages, err := chain.decode(nums, deltas, packed, r.pageSize)
		if err != nil {
			return fmt.Errorf("pending %d: %w", seq, err)
		}
		if next == uint64(applied) {
			if err := r.loadMainCountLocked(ctx); err != nil {
				return err
			}
		}
		r.ov.add(seq, count, pages)
		if r.overBoundLocked() {
			if err := r.checkpointLocked(ctx); err != nil {
				return err
			}
		}
		next = seq
	}
	if err := r.checkpointLocked(ctx); err != nil {
		return err
	}
	var version int64
	var count uint32
	err = db.QueryRowContext(ctx, "SELECT version, page_count FROM remote").Scan(&version, &count)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	pages, err := r.loadPages(ctx, "SELECT pgno, data FROM remote_page WHERE version = ?", version)
	if err != nil {
		return err
	}
	return r.finishRemoteLocked(ctx, uint64(version), count, pages)
}

// loadMainCountLocked sets the overlay's idea of the main file's page count
// to the one the last checkpoint left, recorded with applied_seq: a crash
// during a later one may have cut or grown the file since, and re-applying
// must start from that state (see writeMain's floor).
func (r *Replica) loadMainCountLocked(ctx context.Context) error {
	v, ok, err := getMeta(ctx, r.side.db, metaMainPageCount)
	if err != nil || !ok {
		return err
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("meta %s=%q: %w", metaMainPageCount, v, err)
	}
	r.ov.mainCount = uint32(n)
	return nil
}

func (r *Replica) loadPages(ctx context.Context, q string, key int64) (map[uint32][]byte, error) {
	rows, err := r.side.db.QueryContext(ctx, q, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	pages := make(map[uint32][]byte)
	for rows.Next() {
		var pgno uint32
		var data []byte
		if err := rows.Scan(&pgno, &data); err != nil {
			return nil, err
		}
		pages[pgno] = data
	}
	return pages, rows.Err()
}

// sortedKeys returns a page set's page numbers ascending.
func sortedKeys[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
