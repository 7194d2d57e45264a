// Package bench is Cambium's benchmark suite (`cambium bench`): it runs
// workloads × strategies against one server and its stores — the embedded
// default, or PostgreSQL + MinIO — and writes a Markdown report, a CSV and
// SVG charts.
//
// Every strategy goes through the same server binary and the same stores,
// so only the strategy differs:
//
//   - hybrid: Cambium as designed: fast-path, merged, replayed (policy replay);
//   - strict-pages: pages only, stale commits rejected; the replica re-runs
//     them on head and pushes again, as Graft does (policy strict);
//   - replay-all: the server replays every commit from its logical record,
//     as server-reconciliation systems (SQLSync) do (server.Config.ReplayAll);
//   - full-file: naive sync: every commit uploads every page of the database
//     file; a stale one is answered by downloading the whole file at head,
//     re-running the transaction and uploading again (fullfile.go).
//
// The server runs in a child process (Serve, started through
// Config.ServerCommand) so that its CPU time can be read from
// /proc/<pid>/stat apart from the clients'. Bytes are counted on the
// clients' TCP connections, so they include HTTP headers.
//
// It owns the workloads, the floor measurements and the report. It does not
// change how the server decides: the strategies are settings and clients
// that exist outside it.
package bench
