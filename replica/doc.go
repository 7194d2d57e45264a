// Package replica is the Cambium client replica: a SQLite database that
// applications use through database/sql (driver "cambium"), whose every
// write transaction becomes a pending hybrid commit — the pages it wrote,
// the pages it read, and its logical record — waiting to be pushed.
//
// It owns the replica's files and their crash atomicity, the database/sql
// driver and the capture of logical records (with their replay context:
// clock, random seed, time zone), and the record and read-set encodings. It
// does not own the VFS mechanics (package vfs) nor any network protocol:
// Pending, MarkPushed and ApplyRemote are the seams for push and pull.
//
// # Files
//
// path is a plain SQLite database file at the latest local state; the
// sqlite3 shell can read it. path+"-cambium" is the sidecar, a SQLite
// database in WAL mode (schema in sidecarSchema): metadata and the pending
// commits with their pages. A commit is durable once the sidecar transaction
// inserting it commits; its pages are then written into the main file and
// fsynced, and Open re-applies any commit whose pages may not have reached
// the main file. Page writes are idempotent, so re-applying is always safe.
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
