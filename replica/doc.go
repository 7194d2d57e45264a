// Package replica is the Cambium client replica: a SQLite database that
// applications use through database/sql (driver "cambium"), whose every
// write transaction becomes a pending hybrid commit — the pages it wrote,
// the pages it read, and its logical record — waiting to be pushed.
//
// It owns the replica's files and their crash atomicity, the database/sql
// driver and the capture of logical records (with their replay context:
// clock, random seed, time zone), named mutations run locally (Mutate),
// and the read-set encoding. It does not own the VFS mechanics (package
// vfs), nor the record's encoding, its deterministic random() and the
// executor of records and mutations (package replay). Pending, MarkPushed,
// ApplyRemote, Reset, PendingPageNumbers, Checkpoint and Status are the
// seams for push and pull (sync.go).
//
// # Files
//
// path is a plain SQLite database file; the sqlite3 shell can read it.
// path+"-cambium" is the sidecar, a SQLite database in WAL mode (schema in
// sidecarSchema): metadata, and the pending commits with their pages.
// path+"-cambium-log" is the sidecar's redo log (redolog.go): the pending
// commits made since the last fold, one checksummed frame each, appended.
// A fold moves them into the sidecar's pending table; every checkpoint
// folds, and so does every other sidecar transaction, and a clean Close
// removes the then empty log, leaving the sidecar one SQLite file.
//
// While a replica is open, its process holds the sidecar in SQLite's
// exclusive locking mode (https://www.sqlite.org/pragma.html#pragma_locking_mode),
// which spares every commit the file-lock system calls: no other process,
// the sqlite3 shell included, may open the sidecar until Close. Open of a
// replica that another process has open fails with ErrAlreadyOpen once the
// sidecar's busy timeout (5 s) runs out. The main file takes no such
// lock; what the sqlite3 shell sees in it is said below.
//
// The main file holds the state as of the last checkpoint, not the latest
// one: the sqlite3 shell sees that state. Close checkpoints, so after Close
// the main file is complete.
//
// # Commits and the overlay
//
// A local commit is one frame appended to the redo log with one write
// system call: the columns of a pending row, the commit's read set, record
// and pages (S2-compressed, a rewritten page stored as its XOR with its
// previous version; see pageset.go). It is the commit point; a SQLite
// transaction per commit cost more than the plain insert it captured
// (issue #3). The commit's pages then go into the overlay, an
// in-memory map of page number to bytes plus the current page count, which
// ReadPage and PageCount consult before the main file. Nothing is written
// to the main file per commit.
//
// # Durability
//
// Options.Durability picks what COMMIT waits for, as SQLite's WAL does:
//
//   - DurabilityNormal (default): a commit is a redo log append with no
//     fsync, and the sidecar runs synchronous=NORMAL. A commit survives a
//     crash of the process. A power loss may lose the last commits, never
//     an earlier one without the later ones (Open keeps the log's longest
//     run of whole frames with good checksums and consecutive sequence
//     numbers, and every sidecar transaction folds the log, with an fsync,
//     before it changes anything), and never corrupts the replica or the
//     main file. This is the guarantee of a plain WAL database with
//     synchronous=NORMAL.
//   - DurabilityFull: every commit fdatasyncs the redo log before COMMIT
//     returns, and the sidecar runs synchronous=FULL.
//
// # Checkpoint
//
// A checkpoint moves the overlay into the main file:
//
//  1. fold the redo log: one sidecar transaction, committed with
//     synchronous=FULL, inserts its commits as pending rows and records
//     the last as synced_seq; its WAL fsync covers every earlier commit.
//     Then the log is emptied;
//  2. write the overlay's pages into the main file and set its size;
//  3. fsync the main file;
//  4. record applied_seq and the main file's page count in the sidecar;
//  5. empty the overlay.
//
// Step 1 before step 2 is what keeps a power loss from leaving pages in the
// main file of a commit the sidecar lost. Step 4 needs no fsync of its own:
// if it is lost, Open re-applies those commits, which is harmless.
// A checkpoint runs when a commit brings the overlay to
// Options.CheckpointBytes of pages or Options.CheckpointCommits commits
// (inside that COMMIT), on Close, before ApplyRemote and Reset, before
// MarkPushed drops a commit whose pages are still in the overlay, and
// when a caller runs Checkpoint. The overlay therefore holds at most the
// bound plus one transaction's pages.
//
// # Remote states and recovery
//
// ApplyRemote and Reset store the server state (and, for Reset, drop every
// pending commit) in one sidecar transaction with an fsync, write the main
// file and fsync it, then clear the stored state. Open folds the redo log
// (skipping frames at or below synced_seq, which a crash after a fold left
// behind), re-applies, in order, the pending commits after applied_seq
// (through the overlay and a checkpoint, so the sidecar is fsynced first;
// the first of them followed a checkpoint, so it stores no deltas and
// decoding starts there), then finishes a stored remote state. Re-applying commits over a main file that already has some
// of them yields the same file, so every crash is repaired by reopening.
// A failure that may leave the main file behind marks the replica broken
// (ErrBroken) until a reopen.
//
// # Lazy replicas
//
// A replica created with Options.Lazy starts with no page and fetches each
// from the server (Options.Fetcher) when SQLite first reads it; its main
// file is sparse until every page was read. lazy.go says which pages it
// holds and how that set stays right across pulls and crashes.
//
// # Connections
//
// Each open Replica takes one VFS name from a pool registered at init
// (MaxReplicas), because SQLite reads the clock through the VFS without a
// connection handle. Write transactions of one replica are serialized in Go
// so the clock they fix is theirs. Explicit transactions are BEGIN IMMEDIATE
// and always count as write transactions; an autocommit statement counts
// when sqlite3_stmt_readonly says it may write (Exec always does).
// Rows must be closed before COMMIT (database/sql does), or SQLite keeps
// its shared lock and the next transaction's read set misses cached pages.
package replica
