package server_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pgschema"
)

func TestAPI_Settings(t *testing.T) {
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := MustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
				t.Fatal(err)
			}
			t.Run("Configure", func(t *testing.T) {
				v, err := c.Configure(ctx, "v", api.Settings{Policy: "strict", AllowDDL: true})
				if err != nil || v.Policy != "strict" || !v.AllowDDL {
					t.Fatalf("Configure = %+v, %v; want strict with DDL", v, err)
				}
				if v, err := c.Volume(ctx, "v"); err != nil || v.Policy != "strict" || !v.AllowDDL {
					t.Fatalf("Volume after Configure = %+v, %v", v, err)
				}
				if _, err := c.Configure(ctx, "v", api.Settings{Policy: "yolo"}); !isBadArg(err) {
					t.Fatalf("Configure(yolo): err=%v, want *pgschema.InvalidError", err)
				}
				if _, err := c.Configure(ctx, "nope", api.Settings{Policy: "strict"}); !errors.Is(err, pgschema.ErrVolumeNotFound) {
					t.Fatalf("Configure(unknown volume): err=%v, want ErrVolumeNotFound", err)
				}
			})
			t.Run("Mutators", func(t *testing.T) {
				if err := c.SetMutator(ctx, "v", "deposit", "UPDATE a SET n = n + :amount WHERE id = :id"); err != nil {
					t.Fatal(err)
				}
				if err := c.SetMutator(ctx, "v", "add", "INSERT INTO a(id, n) VALUES (:id, 0)"); err != nil {
					t.Fatal(err)
				}
				ms, err := c.Mutators(ctx, "v")
				if err != nil || len(ms) != 2 || ms[0].Name != "add" || ms[1].Name != "deposit" || ms[1].SQL == "" {
					t.Fatalf("Mutators = %+v, %v; want add and deposit", ms, err)
				}
				if err := c.SetMutator(ctx, "v", "add", ""); err != nil {
					t.Fatal(err)
				}
				if ms, _ := c.Mutators(ctx, "v"); len(ms) != 1 {
					t.Fatalf("Mutators after delete = %+v, want one", ms)
				}
				if err := c.SetMutator(ctx, "v", "Bad Name", "SELECT 1"); !isBadArg(err) {
					t.Fatalf("SetMutator(bad name): err=%v, want *pgschema.InvalidError", err)
				}
			})
			t.Run("ClientCommits", func(t *testing.T) {
				res, err := c.Push(ctx, "v", []commit.Request{
					commitReq("a", 1, 0, 0, 2, 1, 2),
					commitReq("a", 2, 1, 0, 2, 2),
				})
				if err != nil || res[1].Version != 2 {
					t.Fatalf("Push = %+v, %v", res, err)
				}
				got, err := c.ClientCommits(ctx, "v", "a", 2, 9)
				if err != nil || len(got) != 1 || got[0].Seq != 2 || got[0].Version != 2 || got[0].Decision != string(commit.FastPath) {
					t.Fatalf("ClientCommits(a, 2..9) = %+v, %v; want seq 2 at version 2", got, err)
				}
				if got, err := c.ClientCommits(ctx, "v", "b", 1, 9); err != nil || len(got) != 0 {
					t.Fatalf("ClientCommits(b) = %+v, %v; want none", got, err)
				}
				if _, err := c.ClientCommits(ctx, "v", "", 1, 9); !isBadArg(err) {
					t.Fatalf("ClientCommits(no client): err=%v, want *pgschema.InvalidError", err)
				}
			})
		})
	}
}

func isBadArg(err error) bool {
	var e *pgschema.InvalidError
	return errors.As(err, &e)
}
