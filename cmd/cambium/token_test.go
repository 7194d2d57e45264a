package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/server"
)

// TestCLI_Tokens: an operator with the bootstrap admin token creates a
// volume and a token for it; a replica works with that token and nothing
// else; once revoked, the token is refused.
func TestCLI_Tokens(t *testing.T) {
	const admin = "cli-admin-token-0123456789"
	srv, err := server.Open(context.Background(), server.Config{DataDir: t.TempDir(), AdminToken: admin})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close(context.Background()) })
	s, as := "--server="+ts.URL, "--token="+admin
	file := filepath.Join(t.TempDir(), "a.db")

	if _, err := cli(t, "volume", "create", "notes", s); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("volume create without a token: %v, want unauthenticated", err)
	}
	mustCLI(t, "volume", "create", "notes", s, as)
	mustCLI(t, "volume", "create", "secret", s, as)

	var tok api.NewTokenResponse
	out := mustCLI(t, "token", "create", "--volume", "notes", "--write", "--note", "laptop", "--json", s, as)
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token create --json: %v\n%s", err, out)
	}
	if tok.Volume != "notes" || !tok.Read || !tok.Write || tok.Admin || tok.Token == "" {
		t.Fatalf("token create = %+v", tok)
	}
	plain := strings.Fields(mustCLI(t, "token", "create", "--volume", "notes", s, as))[0]
	if !strings.HasPrefix(plain, "cbt_") {
		t.Fatalf("token create prints %q first, want the token", plain)
	}
	use := "--token=" + tok.Token

	mustCLI(t, "clone", "notes", file, s, use)
	mustCLI(t, "exec", file, "CREATE TABLE n(body TEXT)")
	if out := mustCLI(t, "push", file, s, use); !strings.Contains(out, "fast-path") {
		t.Fatalf("push with the volume's token:\n%s", out)
	}
	if out := mustCLI(t, "volume", "list", s, use); strings.Contains(out, "secret") || !strings.Contains(out, "notes") {
		t.Fatalf("volume list with a token for notes shows:\n%s", out)
	}
	if _, err := cli(t, "clone", "secret", filepath.Join(t.TempDir(), "b.db"), s, use); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("clone of another volume: %v, want forbidden", err)
	}
	if _, err := cli(t, "token", "list", s, use); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("token list with a volume's token: %v, want forbidden", err)
	}

	if out := mustCLI(t, "token", "list", s, as); !strings.Contains(out, tok.ID) || !strings.Contains(out, "read, write on notes") || !strings.Contains(out, "laptop") || strings.Contains(out, tok.Token) {
		t.Fatalf("token list:\n%s", out)
	}
	mustCLI(t, "token", "revoke", tok.ID, s, as)
	mustCLI(t, "exec", file, "INSERT INTO n VALUES ('x')")
	if _, err := cli(t, "push", file, s, use); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("push with a revoked token: %v, want unauthenticated", err)
	}
	if out := mustCLI(t, "status", file, s, as); !strings.Contains(out, "1 commit(s) pending push") {
		t.Fatalf("status after the refused push: want the commit still pending:\n%s", out)
	}
}
