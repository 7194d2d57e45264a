package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

const mutatorUsage = `Usage:
  cambium mutator set VOLUME NAME SQL [--server URL] [--token TOKEN]
  cambium mutator delete VOLUME NAME [--server URL] [--token TOKEN]
  cambium mutator list VOLUME [--json] [--server URL] [--token TOKEN]

Defines, removes or lists a volume's SQL mutators: named mutations whose
SQL (statements separated by ';', with :name parameters) client and server
both run. A replica commits one with Replica.Mutate(ctx, NAME, args); its
JSON arguments bind the :name parameters. When the commit is stale, the
server replays the mutation by name on head.

Flags:
  --json          print JSON for scripts
  --server URL    the server (default $CAMBIUM_URL or http://127.0.0.1:7070)
  --token TOKEN   bearer token, when the server requires one (default $CAMBIUM_TOKEN)

Example:
  cambium mutator set bank transfer \
    'UPDATE accounts SET balance = balance - :amount WHERE id = :from;
     UPDATE accounts SET balance = balance + :amount WHERE id = :to'
  cambium mutator list bank
`

func mutatorCommand() command {
	return command{name: "mutator", run: runMutator}
}

func runMutator(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "mutator", mutatorUsage)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("mutator: want a subcommand, set, delete or list (see cambium mutator --help)")
	}
	c := server.client()
	switch pos[0] {
	case "set":
		if len(pos) != 4 {
			return fmt.Errorf("mutator set: want VOLUME NAME SQL (see cambium mutator --help)")
		}
		if pos[3] == "" {
			return fmt.Errorf("mutator set: SQL is empty (to remove a mutator: cambium mutator delete)")
		}
		if err := c.SetMutator(ctx, pos[1], pos[2], pos[3]); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "mutator %s set on volume %s\n", pos[2], pos[1])
		return nil
	case "delete":
		if len(pos) != 3 {
			return fmt.Errorf("mutator delete: want VOLUME NAME (see cambium mutator --help)")
		}
		if err := c.SetMutator(ctx, pos[1], pos[2], ""); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "mutator %s deleted from volume %s\n", pos[2], pos[1])
		return nil
	case "list":
		if len(pos) != 2 {
			return fmt.Errorf("mutator list: want VOLUME (see cambium mutator --help)")
		}
		ms, err := c.Mutators(ctx, pos[1])
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, ms)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUPDATED\tSQL")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, m.UpdatedAt.Format("2006-01-02 15:04:05"), oneLine(m.SQL, 80))
		}
		return tw.Flush()
	}
	return fmt.Errorf("mutator: unknown subcommand %q, want set, delete or list", pos[0])
}

// oneLine squeezes whitespace and cuts s to at most n runes for a table.
func oneLine(s string, n int) string {
	out := []rune{}
	space := false
	for _, r := range s {
		if r == ' ' || r == '\n' || r == '\t' || r == '\r' {
			space = len(out) > 0
			continue
		}
		if space {
			out = append(out, ' ')
			space = false
		}
		out = append(out, r)
	}
	if len(out) > n {
		return string(out[:n-1]) + "…"
	}
	return string(out)
}
