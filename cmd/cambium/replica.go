package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replica"
)

const cloneUsage = `Usage:
  cambium clone NAME FILE [--lazy] [--server URL] [--token TOKEN]

Creates FILE, a local replica of volume NAME, at the server's head. FILE is a
plain SQLite database (beside it, FILE-cambium holds Cambium's bookkeeping).

With --lazy the replica starts with no page: each page is fetched from the
server the first time a query reads it (with a few following pages), and
kept. Pulls then fetch only the changed pages it holds. A lazy replica's
commands need the server (--server) whenever they read a page it lacks,
and FILE is complete only once every page was read.

Example:
  cambium clone notes notes.db
  cambium clone --lazy big big.db && cambium query big.db 'SELECT * FROM t WHERE id = 42'
`

const execUsage = `Usage:
  cambium exec FILE SQL [ARG...] [--server URL] [--token TOKEN]

Runs SQL as one write transaction on the replica FILE and stores it as a
local commit, to be sent by cambium push. Each ARG binds one ? in order; an
ARG that reads as an integer or a number binds as one, anything else as text.
The server is needed only by a lazy replica, for pages it lacks.

Example:
  cambium exec notes.db 'INSERT INTO notes(body) VALUES (?)' 'buy milk'
`

const queryUsage = `Usage:
  cambium query FILE SQL [ARG...] [--json] [--server URL] [--token TOKEN]

Runs a read-only query on the replica FILE and prints the rows, tab-separated
under a header (or as a JSON array of objects with --json). The server is
needed only by a lazy replica, for pages it lacks.

Example:
  cambium query notes.db 'SELECT id, body FROM notes ORDER BY id'
`

const pushUsage = `Usage:
  cambium push FILE [--json] [--server URL] [--token TOKEN]

Sends the replica's pending commits to the server, in order, and prints each
one's decision: fast-path (stored as it was), merged (stored as it was, on
top of others' work it did not touch), replayed (its SQL re-run on the head)
or rejected, with the reason and version. After a merge, replay or
rejection the replica catches up with the server (rebase): it goes to the
head and re-runs its other pending transactions there. A commit rejected as
stale (policy strict) stays pending, re-run on the head, for the next push;
any other rejected commit is dropped, and cambium status keeps its reason.
Exits non-zero when a commit was rejected.

Example:
  cambium push notes.db
`

const pullUsage = `Usage:
  cambium pull FILE [--reset] [--json] [--server URL] [--token TOKEN]

Brings the replica to the server's head, fetching each changed page once.
A replica with pending commits made on an older version rebases: it goes to
the head and re-runs those transactions there, so it shows the head plus its
own pending work. --reset drops the pending commits instead.

Example:
  cambium pull notes.db
  cambium pull --reset notes.db
`

const statusUsage = `Usage:
  cambium status FILE [--json] [--server URL] [--token TOKEN]

Prints the replica's version, the server's head, the pending commits, and
the transactions the server rejected, with their reasons.

Example:
  cambium status notes.db --json
`

func replicaCommands() []command {
	return []command{
		{name: "clone", run: runClone},
		{name: "exec", run: runExec},
		{name: "query", run: runQuery},
		{name: "push", run: runPush},
		{name: "pull", run: runPull},
		{name: "status", run: runStatus},
	}
}

// openReplica opens an existing replica; it refuses to create one, which is
// clone's job. A lazy replica fetches the pages it lacks from server.
func openReplica(ctx context.Context, path string, server remote) (*replica.Replica, error) {
	if _, err := os.Stat(path + "-cambium"); err != nil {
		return nil, fmt.Errorf("%s is not a Cambium replica (no %s-cambium); create one with cambium clone", path, path)
	}
	return replica.Open(ctx, path, replica.Options{Fetcher: server.client()})
}

// openFileArg parses a command's flags and its one argument, FILE, and
// opens that replica.
func openFileArg(ctx context.Context, fs *flag.FlagSet, args []string, name string, server remote) (*replica.Replica, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, fmt.Errorf("%s: want FILE (see cambium %s --help)", name, name)
	}
	return openReplica(ctx, pos[0], server)
}

func runClone(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "clone", cloneUsage)
	server := serverFlag(fs)
	lazy := fs.Bool("lazy", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("clone: want NAME and FILE (see cambium clone --help)")
	}
	name, path := pos[0], pos[1]
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("clone: %s already exists", path)
	}
	c := server.client()
	v, err := c.Volume(ctx, name)
	if err != nil {
		return err
	}
	r, err := replica.Open(ctx, path, replica.Options{Volume: name, PageSize: v.PageSize, Lazy: *lazy, Fetcher: c})
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	st, err := r.Pull(ctx, c)
	if err != nil {
		return err
	}
	if *lazy {
		fmt.Fprintf(env.stdout, "cloned %s into %s at version %d (%d pages, lazy: fetched when first read)\n", name, path, st.BaseVersion, st.PageCount)
		return nil
	}
	fmt.Fprintf(env.stdout, "cloned %s into %s at version %d (%d pages)\n", name, path, st.BaseVersion, st.PageCount)
	return nil
}

// bindArgs turns command-line arguments into SQL values: integers and
// numbers as such, anything else as text.
func bindArgs(args []string) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if n, err := strconv.ParseInt(a, 10, 64); err == nil {
			out[i] = n
		} else if f, err := strconv.ParseFloat(a, 64); err == nil && strings.ContainsAny(a, ".eE") {
			out[i] = f
		} else {
			out[i] = a
		}
	}
	return out
}

// sqlArgs is a statement from the command line with its bound arguments.
type sqlArgs struct {
	sql  string
	args []any
}

// openSQLArgs parses FILE SQL [ARG...], opens the replica and a *sql.DB on
// it. The caller closes both.
func openSQLArgs(ctx context.Context, fs *flag.FlagSet, args []string, name string) (*replica.Replica, *sql.DB, sqlArgs, error) {
	server := serverFlag(fs) // a lazy replica fetches the pages it lacks
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, sqlArgs{}, err
	}
	if len(pos) < 2 {
		return nil, nil, sqlArgs{}, fmt.Errorf("%s: want FILE and SQL (see cambium %s --help)", name, name)
	}
	r, err := openReplica(ctx, pos[0], server)
	if err != nil {
		return nil, nil, sqlArgs{}, err
	}
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		r.Close(ctx)
		return nil, nil, sqlArgs{}, err
	}
	return r, db, sqlArgs{sql: pos[1], args: bindArgs(pos[2:])}, nil
}

func runExec(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "exec", execUsage)
	r, db, stmt, err := openSQLArgs(ctx, fs, args, "exec")
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	res, err := db.ExecContext(ctx, stmt.sql, stmt.args...)
	db.Close()
	if err != nil {
		return err
	}
	st, err := r.Status(ctx)
	if err != nil {
		return err
	}
	n, _ := res.RowsAffected()
	fmt.Fprintf(env.stdout, "%d row(s) changed; %d commit(s) pending push\n", n, st.Pending)
	return nil
}

func runQuery(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "query", queryUsage)
	asJSON := fs.Bool("json", false, "")
	r, db, stmt, err := openSQLArgs(ctx, fs, args, "query")
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	defer db.Close()
	rows, err := db.QueryContext(ctx, stmt.sql, stmt.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	var objs []map[string]any
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if *asJSON {
			o := map[string]any{}
			for i, c := range cols {
				if b, ok := vals[i].([]byte); ok {
					o[c] = string(b)
				} else {
					o[c] = vals[i]
				}
			}
			objs = append(objs, o)
			continue
		}
		cells := make([]string, len(cols))
		for i, v := range vals {
			switch v := v.(type) {
			case nil:
				cells[i] = "NULL"
			case []byte:
				cells[i] = string(v)
			default:
				cells[i] = fmt.Sprint(v)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if *asJSON {
		if objs == nil {
			objs = []map[string]any{}
		}
		return printJSON(env.stdout, objs)
	}
	return tw.Flush()
}

// pushResultJSON is a push result as --json prints it.
type pushResultJSON struct {
	Seq      uint64 `json:"seq"`
	Decision string `json:"decision"`
	Version  uint64 `json:"version,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

func describe(res replica.PushResult) string {
	switch res.Decision {
	case commit.Rejected:
		return fmt.Sprintf("commit %d: rejected: %s", res.Seq, res.Reason)
	case commit.FastPath:
		return fmt.Sprintf("commit %d: %s, version %d", res.Seq, res.Decision, res.Version)
	}
	return fmt.Sprintf("commit %d: %s, version %d (%s)", res.Seq, res.Decision, res.Version, res.Reason)
}

func runPush(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "push", pushUsage)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "")
	r, err := openFileArg(ctx, fs, args, "push", server)
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	results, err := r.Push(ctx, server.client())
	if *asJSON {
		out := make([]pushResultJSON, len(results))
		for i, res := range results {
			out[i] = pushResultJSON{Seq: res.Seq, Decision: string(res.Decision), Version: res.Version, Reason: res.Reason}
		}
		if jerr := printJSON(env.stdout, out); jerr != nil {
			return jerr
		}
	} else {
		for _, res := range results {
			fmt.Fprintln(env.stdout, describe(res))
		}
		if len(results) == 0 && err == nil {
			fmt.Fprintln(env.stdout, "nothing to push")
		}
	}
	if err != nil {
		return err
	}
	for _, res := range results {
		var stale *commit.StaleBaseError
		switch {
		case res.Decision != commit.Rejected:
		case errors.As(res.Err, &stale):
			return fmt.Errorf("commit %d was rejected as stale; the replica re-ran it on the head and it is pending: push again", res.Seq)
		default:
			return fmt.Errorf("commit %d was rejected and dropped; cambium status shows why", res.Seq)
		}
	}
	return nil
}

func runPull(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "pull", pullUsage)
	server := serverFlag(fs)
	reset := fs.Bool("reset", false, "")
	asJSON := fs.Bool("json", false, "")
	r, err := openFileArg(ctx, fs, args, "pull", server)
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	c := server.client()
	var st replica.Status
	if *reset {
		st, err = r.PullReset(ctx, c)
	} else {
		st, err = r.Pull(ctx, c)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env.stdout, statusJSON(st, r.Lazy(), -1))
	}
	fmt.Fprintf(env.stdout, "at version %d (%d pages), %d commit(s) pending\n", st.BaseVersion, st.PageCount, st.Pending)
	return nil
}

// replicaStatus is a replica's status as --json prints it.
type replicaStatus struct {
	Volume   string `json:"volume"`
	ClientID string `json:"client_id"`
	Version  uint64 `json:"version"`
	Head     int64  `json:"head"` // -1 when the server was not asked or not reachable
	Pages    uint32 `json:"pages"`
	PageSize int    `json:"page_size"`
	Pending  int    `json:"pending"`
	Lazy     bool   `json:"lazy,omitempty"`     // pages are fetched when first read
	Resident int    `json:"resident,omitempty"` // for a lazy replica, the pages it holds

	Rejected []replica.RejectedCommit `json:"rejected,omitempty"`
}

func statusJSON(st replica.Status, lz replica.LazyStats, head int64) replicaStatus {
	return replicaStatus{Volume: st.Volume, ClientID: st.ClientID, Version: st.BaseVersion, Head: head,
		Pages: st.PageCount, PageSize: st.PageSize, Pending: st.Pending, Lazy: lz.Lazy, Resident: lz.Resident}
}

func runStatus(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "status", statusUsage)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "")
	r, err := openFileArg(ctx, fs, args, "status", server)
	if err != nil {
		return err
	}
	defer r.Close(ctx)
	st, err := r.Status(ctx)
	if err != nil {
		return err
	}
	head, herr := int64(-1), error(nil)
	var v api.VolumeInfo
	if v, herr = server.client().Volume(ctx, st.Volume); herr == nil {
		head = v.Head
	}
	rejected, err := r.Rejected(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		out := statusJSON(st, r.Lazy(), head)
		out.Rejected = rejected
		return printJSON(env.stdout, out)
	}
	fmt.Fprintf(env.stdout, "volume %s, replica at version %d (%d pages of %d bytes)\n", st.Volume, st.BaseVersion, st.PageCount, st.PageSize)
	if lz := r.Lazy(); lz.Lazy {
		fmt.Fprintf(env.stdout, "lazy: %d of %d pages held, the others fetched when first read\n", lz.Resident, st.PageCount)
	}
	if herr != nil {
		fmt.Fprintf(env.stdout, "server head unknown: %v\n", explain(herr))
	} else {
		fmt.Fprintf(env.stdout, "server head %d\n", head)
	}
	fmt.Fprintf(env.stdout, "%d commit(s) pending push\n", st.Pending)
	if head > int64(st.BaseVersion) && st.Pending > 0 {
		fmt.Fprintln(env.stdout, "the pending commits were made on an older version: push them (the server merges or replays them), or pull to re-run them on the head")
	}
	if len(rejected) > 0 {
		fmt.Fprintf(env.stdout, "%d transaction(s) rejected and dropped:\n", len(rejected))
		for _, rc := range rejected {
			kind := rc.Code
			if rc.Kind != "" {
				kind += "/" + rc.Kind
			}
			fmt.Fprintf(env.stdout, "  commit %d at %s: %s: %s\n", rc.Seq, rc.At.Format("2006-01-02 15:04:05"), kind, rc.Reason)
		}
	}
	return nil
}
