package replica

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/cambiumdb/cambium/vfs"
)

// ApplyRemote atomically brings the main file to server version version,
// given its page count and every page that differs from the replica's
// current state. It waits for open transactions on the replica to finish,
// checkpoints, and fails with ErrPendingCommits while local commits are
// pending.
//
// A lazy replica forgets every page it holds that pages does not carry:
// it fetches them again when read. (Pull tells it which pages changed.)
func (r *Replica) ApplyRemote(ctx context.Context, version uint64, pageCount uint32, pages map[uint32][]byte) error {
	if err := r.remote(ctx, &remoteState{version: version, count: pageCount, pages: pages}, false); err != nil {
		return fmt.Errorf("apply remote %d: %w", version, err)
	}
	return nil
}

// Reset atomically drops every pending local commit and brings the replica
// to server version version: pageCount is that version's page count, and
// pages must hold, at that version, every page that changed since the
// replica's base version and every page PendingPageNumbers lists. Like
// ApplyRemote it waits for open transactions and checkpoints first; a
// crash midway is finished by Open.
func (r *Replica) Reset(ctx context.Context, version uint64, pageCount uint32, pages map[uint32][]byte) error {
	if err := r.remote(ctx, &remoteState{version: version, count: pageCount, pages: pages}, true); err != nil {
		return fmt.Errorf("reset to %d: %w", version, err)
	}
	return nil
}

// remoteState is a server version to bring the replica to: its page count,
// the pages to write, and, for a lazy replica, the pages that changed since
// the replica's base (nil: not known).
type remoteState struct {
	version uint64
	count   uint32
	pages   map[uint32][]byte
	changed []uint32
}

// remote is ApplyRemote, or Reset when drop is set. The sidecar records the
// remote state (and, for Reset, drops the pending commits; for a lazy
// replica, forgets the pages it makes wrong) in one fsynced transaction;
// then the main file is written and fsynced; then the remote state is
// cleared. Open finishes a remote state it finds.
func (r *Replica) remote(ctx context.Context, rs *remoteState, drop bool) error {
	version, pageCount, pages := rs.version, rs.count, rs.pages
	if err := r.brokenErr(); err != nil {
		return err
	}
	for pgno, p := range pages {
		if len(p) != r.pageSize {
			return fmt.Errorf("page %d has %d bytes: %w", pgno, len(p), vfs.ErrPartialPage)
		}
		if pgno == 0 {
			return fmt.Errorf("page 0: %w", vfs.ErrPartialPage)
		}
	}
	return r.slot.Exclusive(ctx, r.path, func() error {
		r.state.Lock()
		defer r.state.Unlock()
		// The main file must be the whole local state before it is
		// overwritten, and the overlay empty so reads go to it.
		if err := r.checkpointLocked(ctx); err != nil {
			return err
		}
		forget := r.remoteForget(rs.changed, pageCount, pages)
		err := r.side.durableTx(ctx, func(tx *sql.Tx) error {
			if err := r.saveResidentLocked(ctx, tx, nil, forget, false); err != nil {
				return err
			}
			if drop {
				if _, err := tx.ExecContext(ctx, "DELETE FROM pending"); err != nil {
					return err
				}
				// next_seq survives: the server knows commits by
				// (client id, seq), so a number is never reused.
				if err := setMeta(ctx, tx, metaNextSeq, r.state.nextSeq); err != nil {
					return err
				}
				if r.resetExtra != nil {
					if err := r.resetExtra(ctx, tx); err != nil {
						return err
					}
				}
			} else {
				var n int
				if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM pending").Scan(&n); err != nil {
					return err
				}
				if n > 0 {
					return fmt.Errorf("%d commits: %w", n, ErrPendingCommits)
				}
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO remote(version, page_count) VALUES(?, ?)", version, pageCount); err != nil {
				return err
			}
			stmt, err := tx.PrepareContext(ctx, "INSERT INTO remote_page(version, pgno, data) VALUES(?,?,?)")
			if err != nil {
				return err
			}
			defer stmt.Close()
			for _, pgno := range sortedKeys(pages) {
				if _, err := stmt.ExecContext(ctx, version, pgno, pages[pgno]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if f := r.faults.afterSidecarCommit; f != nil {
			if err := f(); err != nil {
				r.setBroken(err)
				return err
			}
		}
		if err := r.finishRemoteLocked(ctx, version, pageCount, pages); err != nil {
			r.setBroken(err)
			return err
		}
		return nil
	})
}

// finishRemoteLocked writes a stored remote state into the main file, then
// drops it from the sidecar and records the new base. The overlay is empty.
func (r *Replica) finishRemoteLocked(ctx context.Context, version uint64, pageCount uint32, pages map[uint32][]byte) error {
	if err := r.writeMain(0, pages, pageCount, pageCount); err != nil {
		return err
	}
	r.ov.mu.Lock()
	r.ov.mainCount = pageCount
	r.ov.mu.Unlock()
	// No fsync needed: if a power loss takes this transaction, Open
	// writes the same pages again.
	if err := r.side.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM remote"); err != nil {
			return err
		}
		if err := r.saveResidentLocked(ctx, tx, sortedKeys(pages), nil, true); err != nil {
			return err
		}
		for k, v := range map[string]any{metaBaseVersion: version, metaBasePageCount: pageCount, metaMainPageCount: pageCount} {
			if err := setMeta(ctx, tx, k, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	r.state.base, r.state.basePageCount = version, pageCount
	return nil
}

// PendingPageNumbers returns, ascending, every page whose content at the
// latest local state may differ from the replica's base version because of
// pending commits: the pages they wrote, and the pages a shrinking commit
// (VACUUM) cut off below the base's page count. Reset needs those pages at
// the new version on top of the ones the server changed.
func (r *Replica) PendingPageNumbers(ctx context.Context) ([]uint32, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	r.state.Lock()
	defer r.state.Unlock()
	set := make(map[uint32]struct{})
	low, found := int64(0), false
	err := r.pendingRowsLocked(ctx,
		"SELECT seq, base_version, page_count, x'', page_numbers, x'', x'', x'' FROM pending ORDER BY seq",
		func(row pendingRow) error {
			if !found || row.pageCount < low {
				low, found = row.pageCount, true
			}
			nums, err := DecodeReadSet(row.pageNumbers)
			if err != nil {
				return err
			}
			for _, pgno := range nums {
				set[pgno] = struct{}{}
			}
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("pending pages: %w", err)
	}
	if !found {
		return nil, nil
	}
	for pgno := uint32(low) + 1; pgno <= r.state.basePageCount; pgno++ {
		set[pgno] = struct{}{}
	}
	return sortedKeys(set), nil
}
