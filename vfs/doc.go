// Package vfs is the Cambium SQLite VFS: it captures, per write transaction,
// the exact pages written, the exact pages read and the page count after,
// and serves reads from a pluggable PageSource. The client replica and the
// server's replay both run SQLite on it.
//
// It owns the SQLite-facing side only: locking between connections of one
// process, the per-transaction dirty buffer, commit/rollback detection, the
// page-1 epoch that makes read sets exact, and a settable clock per
// registered VFS name. It does not own durability (the CommitFunc does), the
// logical record (package replica), or any network or page-store access (a
// PageSource does).
//
// # Files
//
// Only main database files that were mounted with (*VFS).Mount go through
// capture. Journals are never opened: connections must use
// journal_mode=MEMORY (or OFF); opening a main journal, a WAL or a super
// journal fails with SQLITE_CANTOPEN and ErrJournalFile. SQLite's scratch
// files (TEMP databases, VACUUM's transient copy, sorter spill files,
// statement journals) are served from process memory: they are never part
// of a database's state and are deleted on close.
//
// # Capture
//
// Writes are whole, aligned pages and go to a per-transaction dirty buffer;
// reads are served from that buffer, else from the PageSource, and every
// page read between the NONE→SHARED lock and the step back to NONE joins the
// transaction's read set. SQLite's pager keeps its cache across transactions
// and would hide re-reads, so page 1 coming from the source is served with
// bytes 24–27 (file change counter) and 92–95 (version-valid-for) replaced
// by a per-transaction epoch, bumped at each NONE→SHARED lock. The pager
// compares bytes 24–39 at every shared lock and drops its cache when they
// differ (https://www.sqlite.org/fileformat2.html#file_change_counter), so
// every transaction re-reads what it uses. Both counters move together
// because the in-header database size (bytes 28–31) is only trusted when
// they match (https://www.sqlite.org/fileformat2.html#in_header_database_size).
// Pages in a Capture are exactly the bytes SQLite wrote: page 1 carries
// epoch+1 in those two fields, which is why the rest of Cambium normalizes
// them before comparing page 1.
//
// # Commit point
//
// Recorded with SQLite 3.54.1 (mattn/go-sqlite3 v1.14.53), journal_mode=MEMORY,
// synchronous=NORMAL, by TestVFS_CallOrder (R reads, Wn writes page n):
//
//	autocommit UPDATE:    Lock1 R Size R Lock2 R R Lock4 W1 W4 Sync Unlock1 Unlock0
//	explicit COMMIT:      … Lock2 R R Lock4 W1 W2 W53 Sync Unlock1 Unlock0
//	ROLLBACK:             … Lock2 R R Unlock1 Unlock0
//	COMMIT after spill:   … Lock2 R R Lock4 W54…W106 W1 W2 W107…W113 Sync Unlock1 Unlock0
//	ROLLBACK after spill: … Lock2 R R Lock4 W54…W106 Size Trunc53 W2 W1 Sync Unlock1 Unlock0
//	VACUUM:               … Lock2 Lock4 R… W1…W6 Sync Size [Trunc6] Unlock1 Unlock0
//
// The commit point is xSync of the main database. SQLite syncs the database
// file at the end of CommitPhaseOne (https://www.sqlite.org/atomiccommit.html,
// "Flushing Changes To Mass Storage") and an error there fails the COMMIT
// and rolls the transaction back, so a CommitFunc that cannot persist a
// transaction makes the application's COMMIT fail instead of silently
// losing it. Unlocking is too late: an xUnlock error surfaces from
// CommitPhaseTwo after the pager already considers the transaction done.
// A rollback that had spilled pages also syncs (after playing back the
// in-memory journal), so xSync alone does not mean commit: a commit always
// rewrites page 1 with the change counter the pager last read plus one,
// while a rollback restores page 1 or truncates it away. A commit that
// shrinks the file (VACUUM) truncates only after xSync, in CommitPhaseTwo,
// so the captured page count is page 1's in-header database size, and
// xFileSize reports it from then on (SQLite then finds nothing to truncate).
// A transaction that changes no byte (an UPDATE to the same value) writes
// nothing and yields no Capture. The binding does
// not forward SQLITE_FCNTL_COMMIT_PHASETWO, which would otherwise tell.
//
// With synchronous=OFF SQLite never syncs; the step down from RESERVED or
// above then serves as a fallback commit point, and a failing CommitFunc
// there surfaces as an error from COMMIT only on a best-effort basis.
// Connections should therefore keep synchronous at NORMAL or FULL.
//
// # Time
//
// xCurrentTimeInt64 receives no connection handle, only the VFS, so each
// registered name carries its own clock (SetTime). Replay uses a pool of
// names, one per worker. Names cannot be unregistered, and the binding keeps
// its registry in an unguarded map: register every name before any
// connection of the process uses a registered VFS (e.g. at startup).
package vfs
