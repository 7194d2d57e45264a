package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replica"
	"github.com/cambiumdb/cambium/server"
)

const demoUsage = `Usage:
  cambium demo [--dir DIR] [--keep]

Runs the whole story in one process on the embedded default, with no other
service: it starts a server, two replicas write and push, one falls behind and
is told why, pulls, and both end byte-identical. It prints each step.

Flags:
  --dir DIR   where the server's data and the replicas go (default: a new temporary directory)
  --keep      keep the directory afterwards

Example:
  cambium demo
`

func demoCommand() command { return command{name: "demo", run: runDemo} }

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "demo", demoUsage)
	dir := fs.String("dir", "", "")
	keep := fs.Bool("keep", false, "")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "cambium-demo-")
		if err != nil {
			return err
		}
		*dir = d
		if !*keep {
			defer os.RemoveAll(d)
		}
	}
	say := func(format string, a ...any) { fmt.Fprintf(env.stdout, format+"\n", a...) }

	srv, err := server.Open(ctx, server.Config{DataDir: filepath.Join(*dir, "server")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() {
		stop()
		<-served
		srv.Close(context.Background())
	}()
	url := "http://" + ln.Addr().String()
	c := api.NewClient(url)
	say("1. started cambiumd at %s on the embedded default (%s)", url, srv.Backends())

	if _, err := c.CreateVolume(ctx, "notes", 0); err != nil {
		return err
	}
	say("2. created volume notes")

	open := func(name string) (*replica.Replica, *sql.DB, error) {
		r, err := replica.Open(ctx, filepath.Join(*dir, name+".db"), replica.Options{Volume: "notes"})
		if err != nil {
			return nil, nil, err
		}
		if _, err := r.Pull(ctx, c); err != nil {
			return nil, nil, err
		}
		db, err := sql.Open("cambium", r.Path())
		return r, db, err
	}
	a, dbA, err := open("alice")
	if err != nil {
		return err
	}
	defer a.Close(ctx)
	defer dbA.Close()
	b, dbB, err := open("bob")
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	defer dbB.Close()
	say("3. cloned two replicas: alice.db and bob.db")

	push := func(who string, r *replica.Replica) ([]replica.PushResult, error) {
		res, err := r.Push(ctx, c)
		for _, p := range res {
			say("   %s: %s", who, describe(p))
		}
		return res, err
	}
	if _, err := dbA.ExecContext(ctx, `CREATE TABLE notes(id INTEGER PRIMARY KEY, author TEXT, body TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP)`); err != nil {
		return err
	}
	if _, err := dbA.ExecContext(ctx, `INSERT INTO notes(author, body) VALUES (?, ?)`, "alice", "hello from alice"); err != nil {
		return err
	}
	say("4. alice creates a table and writes a note (two local commits), then pushes:")
	if _, err := push("alice", a); err != nil {
		return err
	}

	if _, err := b.Pull(ctx, c); err != nil {
		return err
	}
	if _, err := dbB.ExecContext(ctx, `INSERT INTO notes(author, body) VALUES (?, ?)`, "bob", "hi alice, bob here"); err != nil {
		return err
	}
	say("5. bob pulls, writes a note and pushes:")
	if _, err := push("bob", b); err != nil {
		return err
	}

	if _, err := dbA.ExecContext(ctx, `INSERT INTO notes(author, body) VALUES (?, ?)`, "alice", "meeting at noon"); err != nil {
		return err
	}
	say("6. alice, not having pulled, writes another note and pushes:")
	res, err := push("alice", a)
	if err != nil {
		return err
	}
	if len(res) == 0 || res[len(res)-1].Decision != commit.Replayed {
		return fmt.Errorf("demo: alice's stale commit was not replayed: %+v", res)
	}
	say("   her commit was based on an old version and touched what bob changed, so the")
	say("   server replayed its SQL on the head; her replica then caught up (rebase).")

	if _, err := dbA.ExecContext(ctx, `INSERT INTO notes(author, body) VALUES (?, ?)`, "alice", "bring the slides"); err != nil {
		return err
	}
	say("7. alice writes again, on the head now, and pushes:")
	if _, err := push("alice", a); err != nil {
		return err
	}

	if _, err := c.Configure(ctx, "notes", api.Settings{Policy: "strict"}); err != nil {
		return err
	}
	if _, err := dbB.ExecContext(ctx, `INSERT INTO notes(author, body) VALUES (?, ?)`, "bob", "see you there"); err != nil {
		return err
	}
	say("8. the volume's policy becomes strict (stale commits rejected, as Graft does);")
	say("   bob, behind, writes and pushes:")
	res, err = push("bob", b)
	if err != nil {
		return err
	}
	var stale *commit.StaleBaseError
	if len(res) == 0 || !errors.As(res[len(res)-1].Err, &stale) {
		return fmt.Errorf("demo: bob's stale push was not rejected as stale: %+v", res)
	}
	say("   bob is told why (based on version %d, head %d); his replica re-ran the", stale.Base, stale.Head)
	say("   transaction on the head, and he pushes again:")
	if _, err := push("bob", b); err != nil {
		return err
	}
	if _, err := a.Pull(ctx, c); err != nil {
		return err
	}

	st, err := b.Pull(ctx, c)
	if err != nil {
		return err
	}
	say("9. both pull: at version %d", st.BaseVersion)

	rows, err := dbB.QueryContext(ctx, `SELECT author, body FROM notes ORDER BY id`)
	if err != nil {
		return err
	}
	say("10. bob's replica now reads:")
	for rows.Next() {
		var author, body string
		if err := rows.Scan(&author, &body); err != nil {
			rows.Close()
			return err
		}
		say("      %-6s %s", author, body)
	}
	rows.Close()

	dbA.Close()
	dbB.Close()
	if err := errors.Join(a.Close(ctx), b.Close(ctx)); err != nil {
		return err
	}
	fa, err := os.ReadFile(a.Path())
	if err != nil {
		return err
	}
	fb, err := os.ReadFile(b.Path())
	if err != nil {
		return err
	}
	if !bytes.Equal(fa, fb) {
		return fmt.Errorf("demo: alice.db (%d bytes) and bob.db (%d bytes) differ", len(fa), len(fb))
	}
	say("11. alice.db and bob.db are byte-identical (%d bytes). Done.", len(fa))
	if *keep {
		say("    files kept in %s", *dir)
	}
	return nil
}
