// Package conflict decides whether a stale commit can be merged on top of
// head (DESIGN.md, the commit protocol, step 4) and explains why not.
//
// Detect is pure and reads no page: it takes what the page index already
// knows (the pages versions base+1..head wrote, with the newest version of
// each), the commit's read and write sets, the page counts, and the three
// copies of page 1 (at base, at head, as the commit wrote it). It returns a
// Report: the conflicting pages (bounded, with a total), the verdict on
// page 1, and, when the commit merges, the page 1 and page count to store.
//
// NameTables is the slow path: it reads the SQLite b-trees of a snapshot to
// name the table or index that owns a page, so a rejection can say "page 7
// (table accounts)". It is meant for explaining a conflict, never for
// deciding one, and it is hardened against corrupt pages.
//
// The package owns the rules, not their inputs: it does not read the page
// index or the page store (pgschema, pages), store decisions (commit) or
// replay records (replay). It imports none of them, so commit can import it.
//
// # Page 1
//
// Every transaction reads page 1 and every commit writes it, so page 1 is
// left out of the page overlap and judged by its header
// (https://www.sqlite.org/fileformat2.html#the_database_header) instead.
// Bytes 24–27 (file change counter), 92–95 (version-valid-for) and 96–99
// (SQLITE_VERSION_NUMBER of the last writer) are stamped by whichever pager
// commits, so they are normalized away before comparing; bytes 28–31 (page
// count), 32–39 (freelist) and the rest are content. A difference at byte 40
// or beyond between base and head — schema cookie, user_version, the schema
// b-tree itself — conflicts with every stale commit: its statements were
// prepared against the old schema, and page overlap cannot see an index it
// never knew about. Otherwise page 1 changed on both sides conflicts, and
// the side that changed it (head when neither did) supplies it, with both
// counters set to head's change counter + 1 so that every pager that saw
// head notices the new version.
package conflict
