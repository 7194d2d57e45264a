package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/cambiumdb/cambium/api"
)

const volumeUsage = `Usage:
  cambium volume create NAME [--page-size N] [--json] [--server URL] [--token TOKEN]
  cambium volume list [--json] [--server URL] [--token TOKEN]
  cambium volume set-policy NAME POLICY [--allow-ddl] [--json] [--server URL] [--token TOKEN]

Creates or lists volumes (replicated SQLite databases on the server), or
sets what the server does with a commit whose base is stale:

  replay    (default) merge it when nothing it read or wrote changed since
            its base, else replay its logical record on head
  strict    reject it: the client pulls and redoes it (what Graft does)
  no-merge  never merge: replay every stale commit

The policy applies to every commit decided after the change.

Flags:
  --page-size N   page size of a new volume (default 4096); fixed for its life
  --allow-ddl     set-policy: let replayed records change the schema
                  (CREATE/DROP/ALTER); without it such a replay is rejected
  --json          print JSON for scripts
  --server URL    the server (default $CAMBIUM_URL or http://127.0.0.1:7070)
  --token TOKEN   bearer token, when the server requires one (default $CAMBIUM_TOKEN)

Example:
  cambium volume create notes
  cambium volume list --json
  cambium volume set-policy notes strict
`

func volumeCommand() command {
	return command{name: "volume", run: runVolume}
}

func runVolume(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "volume", volumeUsage)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "")
	pageSize := fs.Int("page-size", 0, "")
	allowDDL := fs.Bool("allow-ddl", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("volume: want a subcommand, create, list or set-policy (see cambium volume --help)")
	}
	c := server.client()
	switch pos[0] {
	case "create":
		if len(pos) != 2 {
			return fmt.Errorf("volume create: want one NAME (see cambium volume --help)")
		}
		v, err := c.CreateVolume(ctx, pos[1], *pageSize)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, v)
		}
		fmt.Fprintf(env.stdout, "created volume %s (page size %d)\n", v.Name, v.PageSize)
		return nil
	case "list":
		if len(pos) != 1 {
			return fmt.Errorf("volume list: takes no arguments (see cambium volume --help)")
		}
		vs, err := c.Volumes(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, vs)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tHEAD\tPAGES\tPAGE SIZE\tPOLICY")
		for _, v := range vs {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", v.Name, v.Head, v.PageCount, v.PageSize, v.Policy)
		}
		return tw.Flush()
	case "set-policy":
		if len(pos) != 3 {
			return fmt.Errorf("volume set-policy: want NAME and POLICY (see cambium volume --help)")
		}
		v, err := c.Configure(ctx, pos[1], api.Settings{Policy: pos[2], AllowDDL: *allowDDL})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, v)
		}
		ddl := "denied"
		if v.AllowDDL {
			ddl = "allowed"
		}
		fmt.Fprintf(env.stdout, "volume %s: policy %s, DDL on replay %s\n", v.Name, v.Policy, ddl)
		return nil
	}
	return fmt.Errorf("volume: unknown subcommand %q, want create, list or set-policy", pos[0])
}
