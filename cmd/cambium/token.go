package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/cambiumdb/cambium/api"
)

const tokenUsage = `Usage:
  cambium token create [--volume NAME] [--read=false] [--write] [--admin]
                       [--expires DURATION] [--note TEXT] [--json] [--server URL] [--token TOKEN]
  cambium token list [--json] [--server URL] [--token TOKEN]
  cambium token revoke ID [--server URL] [--token TOKEN]

Manages the access tokens of a server that requires them (cambiumd --auth,
or an admin token in CAMBIUM_ADMIN_TOKEN). A token grants read, write and
admin on one volume (--volume), or on every volume. Read: pull, read
pages, see the volume; write: push; admin: set the volume's policy and
mutators; admin on every volume also creates volumes and manages tokens.
These commands need such a token themselves: the server's bootstrap admin
token, or one created with --admin and no --volume.

create prints the new token once: the server keeps only a hash of it. A
token revoked on one server stops working on the others within seconds.

Flags:
  --volume NAME        the volume it is for (default: every volume)
  --read               may read (default true)
  --write              may push
  --admin              may change settings and mutators
  --expires DURATION   valid for this long, e.g. 720h (default: until revoked)
  --note TEXT          what it is for, shown by list
  --json               print JSON for scripts
  --server URL         the server (default $CAMBIUM_URL or http://127.0.0.1:7070)
  --token TOKEN        the admin token to act with (default $CAMBIUM_TOKEN)

Example:
  export CAMBIUM_TOKEN=$ADMIN_TOKEN
  cambium token create --volume notes --write --note 'notes app, laptop'
  cambium token list
  cambium token revoke 3f9a0c1d2e4b5a69
`

func tokenCommand() command {
	return command{name: "token", run: runToken}
}

func runToken(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "token", tokenUsage)
	server := serverFlag(fs)
	volume := fs.String("volume", "", "")
	read := fs.Bool("read", true, "")
	write := fs.Bool("write", false, "")
	admin := fs.Bool("admin", false, "")
	expires := fs.Duration("expires", 0, "")
	note := fs.String("note", "", "")
	asJSON := fs.Bool("json", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("token: want a subcommand, create, list or revoke (see cambium token --help)")
	}
	c := server.client()
	switch pos[0] {
	case "create":
		if len(pos) != 1 {
			return fmt.Errorf("token create: unexpected argument %q (see cambium token --help)", pos[1])
		}
		if *expires < 0 {
			return fmt.Errorf("token create: --expires %s is negative", *expires)
		}
		req := api.CreateTokenRequest{Volume: *volume, Read: *read, Write: *write, Admin: *admin, Note: *note}
		if *expires > 0 {
			req.ExpiresAt = time.Now().Add(*expires).UTC().Truncate(time.Second)
		}
		t, err := c.CreateToken(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, t)
		}
		fmt.Fprintln(env.stdout, t.Token)
		fmt.Fprintf(env.stderr, "token %s: %s; shown once, the server keeps only its hash\n", t.ID, grants(t.TokenInfo))
		return nil
	case "list":
		if len(pos) != 1 {
			return fmt.Errorf("token list: unexpected argument %q (see cambium token --help)", pos[1])
		}
		ts, err := c.Tokens(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.stdout, ts)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tGRANTS\tCREATED\tEXPIRES\tNOTE")
		for _, t := range ts {
			exp := "never"
			if !t.ExpiresAt.IsZero() {
				exp = t.ExpiresAt.Local().Format("2006-01-02 15:04")
				if !time.Now().Before(t.ExpiresAt) {
					exp += " (expired)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, grants(t), t.CreatedAt.Local().Format("2006-01-02 15:04"), exp, oneLine(t.Note, 40))
		}
		return tw.Flush()
	case "revoke":
		if len(pos) != 2 {
			return fmt.Errorf("token revoke: want ID (see cambium token list)")
		}
		if err := c.DeleteToken(ctx, pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "token %s revoked\n", pos[1])
		return nil
	}
	return fmt.Errorf("token: unknown subcommand %q, want create, list or revoke", pos[0])
}

// grants says what a token allows, e.g. "read, write on notes".
func grants(t api.TokenInfo) string {
	s := ""
	for _, g := range []struct {
		on   bool
		name string
	}{{t.Read, "read"}, {t.Write, "write"}, {t.Admin, "admin"}} {
		if g.on {
			if s != "" {
				s += ", "
			}
			s += g.name
		}
	}
	if t.Volume == "" {
		return s + " on every volume"
	}
	return s + " on " + t.Volume
}
