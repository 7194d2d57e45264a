// Package replay owns the logical record of a transaction and its
// re-execution: the record's binary encoding (record.go), the
// deterministic random() and randomblob() that client and server share
// (Rand), named mutations (Registry, Mutators) and the one executor that
// runs a record on any transaction (Apply), and the server's Engine, which
// replays a record on a snapshot in a sandbox and returns the pages it
// wrote, or a typed rejection (RejectError).
//
// It does not own the VFS mechanics (package vfs), where snapshots come
// from (the caller's vfs.PageSource), deciding what to do with a replay's
// pages or rejection (package commit), or a client's capture of records
// (package replica, which uses Rand and Apply).
package replay
