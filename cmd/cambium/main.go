// Command cambium is Cambium's command-line client: it manages volumes on a
// cambiumd server and works with local replicas. See `cambium --help`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cambiumdb/cambium/api"
)

const usage = `cambium: the Cambium client for replicated SQLite.

Usage:
  cambium COMMAND [flags] [args]

Commands:
  volume create NAME    create a volume on the server
  volume list           list the server's volumes
  volume set-policy NAME POLICY   replay (default), strict or no-merge
  mutator set VOLUME NAME SQL     define a named mutation (also: list, delete)
  token create [--volume NAME] [--write] [--admin]   an access token (also: list, revoke)
  clone NAME FILE       make FILE a local replica of volume NAME
  exec FILE SQL [ARG]   run one write transaction on a replica
  query FILE SQL [ARG]  print the rows of a query on a replica
  push FILE             send the replica's pending commits; prints each decision
  pull FILE [--reset]   bring the replica to the server's head
  status FILE           the replica's version, the head, pending commits
  demo                  the whole story in one process, no services needed
  bench                 the benchmark suite: strategies × workloads, report and charts
  help COMMAND          show a command's help

Every command takes --help. The server is --server URL, else $CAMBIUM_URL,
else http://127.0.0.1:7070; a server that requires tokens gets --token TOKEN,
else $CAMBIUM_TOKEN.

Example:
  cambium volume create notes
`

// command is one subcommand: its name and how to run it.
type command struct {
	name string
	run  func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv is what every command gets: its output streams.
type cliEnv struct {
	stdout, stderr io.Writer
}

func commands() []command {
	return append([]command{volumeCommand(), mutatorCommand(), tokenCommand(), demoCommand(), benchCommand()}, replicaCommands()...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "cambium:", explain(err))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env := &cliEnv{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		fmt.Fprint(stdout, usage)
		return nil
	}
	name := args[0]
	if name == "help" {
		name, args = args[1], []string{args[1], "--help"}
	}
	for _, c := range commands() {
		if c.name == name {
			if err := c.run(ctx, env, args[1:]); !errors.Is(err, flag.ErrHelp) {
				return err
			}
			return nil
		}
	}
	return fmt.Errorf("unknown command %q (see cambium --help)", name)
}

// newFlags returns a flag set whose --help prints text to stdout.
func newFlags(env *cliEnv, name, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() { fmt.Fprint(env.stdout, text) }
	return fs
}

// remote is the server a command talks to, and the token it shows.
type remote struct {
	url, token *string
}

// serverFlag adds --server and --token with their environment fallbacks.
func serverFlag(fs *flag.FlagSet) remote {
	def := os.Getenv("CAMBIUM_URL")
	if def == "" {
		def = "http://127.0.0.1:7070"
	}
	return remote{url: fs.String("server", def, ""), token: fs.String("token", os.Getenv("CAMBIUM_TOKEN"), "")}
}

func (r remote) client() *api.Client {
	c := api.NewClient(strings.TrimRight(*r.url, "/"))
	c.Token = *r.token
	return c
}

// parse parses flags placed anywhere among the arguments (flag stops at the
// first non-flag, which surprises people typing `cambium volume create x --json`).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// explain adds what to do to errors whose cause a user may not see at once.
func explain(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("cannot reach the server (is cambiumd running? set --server or CAMBIUM_URL): %w", err)
	}
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
