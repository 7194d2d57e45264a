package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pgschema"
)

const adminSecret = "admin-secret-0123456789abcdef"

// as returns a client of the same server showing token.
func as(c *api.Client, token string) *api.Client {
	cc := *c
	cc.Token = token
	return &cc
}

func mustToken(t *testing.T, admin *api.Client, req api.CreateTokenRequest) *api.Client {
	t.Helper()
	tok, err := admin.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateToken(%+v): %v", req, err)
	}
	if !strings.HasPrefix(tok.Token, "cbt_"+tok.ID+"_") {
		t.Fatalf("token %q does not carry its id %s", tok.Token, tok.ID)
	}
	return as(admin, tok.Token)
}

// volumeOps are the requests a client can make on one volume, with the
// access each needs.
func volumeOps(volume string) map[string]struct {
	need api.Access
	do   func(ctx context.Context, c *api.Client) error
} {
	type op = struct {
		need api.Access
		do   func(ctx context.Context, c *api.Client) error
	}
	return map[string]op{
		"head": {api.AccessRead, func(ctx context.Context, c *api.Client) error { _, err := c.Volume(ctx, volume); return err }},
		"pull": {api.AccessRead, func(ctx context.Context, c *api.Client) error {
			_, err := c.Pull(ctx, volume, 0, func(api.StreamedPage) error { return nil })
			return err
		}},
		"pages": {api.AccessRead, func(ctx context.Context, c *api.Client) error {
			_, err := c.ReadPages(ctx, volume, 1, []uint32{1}, func(api.StreamedPage) error { return nil })
			return err
		}},
		"changes":  {api.AccessRead, func(ctx context.Context, c *api.Client) error { _, err := c.Changes(ctx, volume, 0); return err }},
		"mutators": {api.AccessRead, func(ctx context.Context, c *api.Client) error { _, err := c.Mutators(ctx, volume); return err }},
		"commits": {api.AccessRead, func(ctx context.Context, c *api.Client) error {
			_, err := c.ClientCommits(ctx, volume, "x", 1, 10)
			return err
		}},
		"push": {api.AccessWrite, func(ctx context.Context, c *api.Client) error {
			_, err := c.Push(ctx, volume, []commit.Request{commitReq("intruder", 1, 0, 1, 1, 1)})
			return err
		}},
		"settings": {api.AccessAdmin, func(ctx context.Context, c *api.Client) error {
			_, err := c.Configure(ctx, volume, api.Settings{Policy: "strict"})
			return err
		}},
		"set-mutator": {api.AccessAdmin, func(ctx context.Context, c *api.Client) error {
			return c.SetMutator(ctx, volume, "m", "UPDATE t SET x = :x")
		}},
	}
}

// TestAuth_Invariant7: a token for volume A can neither read nor write
// volume B (DESIGN.md, invariant 7), and grants on A exactly what it says.
func TestAuth_Invariant7(t *testing.T) {
	for name, backend := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			cfg := backend(t)
			cfg.AdminToken = adminSecret
			_, anon := MustServer(t, cfg)
			admin := as(anon, adminSecret)
			for _, v := range []string{"a", "b"} {
				if _, err := admin.CreateVolume(ctx, v, 0); err != nil {
					t.Fatal(err)
				}
				if _, err := admin.Push(ctx, v, []commit.Request{commitReq("seed", 1, 0, 0, 1, 1)}); err != nil {
					t.Fatal(err)
				}
			}

			tokens := map[string]struct {
				c     *api.Client
				grant func(api.Access) bool // on volume a
			}{
				"read": {mustToken(t, admin, api.CreateTokenRequest{Volume: "a", Read: true}),
					func(a api.Access) bool { return a == api.AccessRead }},
				"read-write": {mustToken(t, admin, api.CreateTokenRequest{Volume: "a", Read: true, Write: true}),
					func(a api.Access) bool { return a == api.AccessRead || a == api.AccessWrite }},
				"write-only": {mustToken(t, admin, api.CreateTokenRequest{Volume: "a", Write: true}),
					func(a api.Access) bool { return a == api.AccessWrite }},
				"admin": {mustToken(t, admin, api.CreateTokenRequest{Volume: "a", Admin: true}),
					func(a api.Access) bool { return a == api.AccessRead || a == api.AccessAdmin }},
			}
			for tname, tok := range tokens {
				// On b, and on a volume that does not exist, everything is
				// forbidden: a scoped token learns nothing of other volumes.
				for _, other := range []string{"b", "nonexistent"} {
					for oname, op := range volumeOps(other) {
						if err := op.do(ctx, tok.c); !errors.Is(err, api.ErrForbidden) {
							t.Errorf("token %s, %s on %s: %v, want forbidden", tname, oname, other, err)
						}
					}
				}
				for oname, op := range volumeOps("a") {
					err := op.do(ctx, tok.c)
					if tok.grant(op.need) {
						if errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrUnauthenticated) {
							t.Errorf("token %s, %s on a: %v, want it allowed", tname, oname, err)
						}
					} else if !errors.Is(err, api.ErrForbidden) {
						t.Errorf("token %s, %s on a: %v, want forbidden", tname, oname, err)
					}
				}
				vs, err := tok.c.Volumes(ctx)
				switch {
				case tok.grant(api.AccessRead) && err == nil:
					if len(vs) != 1 || vs[0].Name != "a" {
						t.Errorf("token %s lists %v, want only a", tname, vs)
					}
				case tok.grant(api.AccessRead):
					t.Errorf("token %s: list volumes: %v", tname, err)
				case !errors.Is(err, api.ErrForbidden):
					t.Errorf("token %s: list volumes: %v, want forbidden", tname, err)
				}
				if _, err := tok.c.CreateVolume(ctx, "c", 0); !errors.Is(err, api.ErrForbidden) {
					t.Errorf("token %s: create volume: %v, want forbidden", tname, err)
				}
				if _, err := tok.c.CreateToken(ctx, api.CreateTokenRequest{Volume: "b", Read: true, Write: true}); !errors.Is(err, api.ErrForbidden) {
					t.Errorf("token %s: create a token for b: %v, want forbidden", tname, err)
				}
			}

			// b is as it was: one commit, the seed's, under its default policy.
			vb, err := admin.Volume(ctx, "b")
			if err != nil {
				t.Fatal(err)
			}
			if vb.Head != 1 || vb.Policy != pgschema.DefaultPolicy {
				t.Fatalf("volume b after the forbidden requests: head %d policy %s, want 1 and %s", vb.Head, vb.Policy, pgschema.DefaultPolicy)
			}
			if ms, err := admin.Mutators(ctx, "b"); err != nil || len(ms) != 0 {
				t.Fatalf("mutators of b: %v %v, want none", ms, err)
			}

			// A read token for every volume reads both, writes neither, and
			// is told a missing volume is missing.
			all := mustToken(t, admin, api.CreateTokenRequest{Read: true})
			vs, err := all.Volumes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, v := range vs {
				names = append(names, v.Name)
			}
			if !slices.Equal(names, []string{"a", "b"}) {
				t.Fatalf("every-volume reader lists %v, want [a b]", names)
			}
			if _, err := all.Volume(ctx, "nonexistent"); !errors.Is(err, pgschema.ErrVolumeNotFound) {
				t.Fatalf("every-volume reader, missing volume: %v, want not found", err)
			}
			if _, err := all.Push(ctx, "b", []commit.Request{commitReq("r", 1, 0, 1, 1, 1)}); !errors.Is(err, api.ErrForbidden) {
				t.Fatalf("every-volume reader pushing: %v, want forbidden", err)
			}
		})
	}
}

// TestAuth_Tokens: requests without a valid token are refused with a typed
// error; revoked and expired tokens stop working; /healthz needs none.
func TestAuth_Tokens(t *testing.T) {
	ctx := context.Background()
	cfg := backends["Embedded"](t)
	cfg.AdminToken = adminSecret
	_, anon := MustServer(t, cfg)
	admin := as(anon, adminSecret)
	if _, err := admin.CreateVolume(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, api.CreateTokenRequest{Volume: "a", Read: true, Note: "test"})
	if err != nil {
		t.Fatal(err)
	}
	good := as(anon, tok.Token)
	if _, err := good.Volume(ctx, "a"); err != nil {
		t.Fatal(err)
	}

	// Wrong secret with the right id; junk; none; the admin secret's prefix.
	last := "A"
	if strings.HasSuffix(tok.Token, "A") {
		last = "B"
	}
	tampered := tok.Token[:len(tok.Token)-1] + last
	for name, token := range map[string]string{"none": "", "junk": "hello", "tampered": tampered, "admin prefix": adminSecret[:20]} {
		if _, err := as(anon, token).Volume(ctx, "a"); !errors.Is(err, api.ErrUnauthenticated) {
			t.Errorf("%s token: %v, want unauthenticated", name, err)
		}
	}
	resp, err := http.Get(anon.BaseURL + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: HTTP %d, WWW-Authenticate %q; want 401 with a Bearer challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	resp, err = http.Get(anon.BaseURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok\n" {
		t.Fatalf("/healthz without a token: %d %q", resp.StatusCode, b)
	}

	// The list shows the token, never its secret.
	ts, err := admin.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].ID != tok.ID || ts[0].Volume != "a" || !ts[0].Read || ts[0].Write || ts[0].Note != "test" {
		t.Fatalf("tokens = %+v", ts)
	}

	// Expired: refused, saying so.
	old, err := admin.CreateToken(ctx, api.CreateTokenRequest{Volume: "a", Read: true, ExpiresAt: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as(anon, old.Token).Volume(ctx, "a"); !errors.Is(err, api.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v, want unauthenticated, expired", err)
	}

	// Revoked: refused at once by the server that revoked it.
	if err := admin.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := good.Volume(ctx, "a"); !errors.Is(err, api.ErrUnauthenticated) {
		t.Fatalf("revoked token: %v, want unauthenticated", err)
	}
	if err := admin.DeleteToken(ctx, tok.ID); !errors.Is(err, pgschema.ErrTokenNotFound) {
		t.Fatalf("revoking it again: %v, want token not found", err)
	}
	if _, err := admin.CreateToken(ctx, api.CreateTokenRequest{Volume: "a"}); err == nil {
		t.Fatal("a token granting nothing was created")
	}
	if _, err := admin.CreateToken(ctx, api.CreateTokenRequest{Volume: "nonexistent", Read: true}); !errors.Is(err, pgschema.ErrVolumeNotFound) {
		t.Fatalf("token for a missing volume: %v, want volume not found", err)
	}
}

// TestAuth_Off: without Auth or an admin token, the server serves everyone
// (the embedded quick start), and ignores a token it is shown.
func TestAuth_Off(t *testing.T) {
	ctx := context.Background()
	_, c := MustServer(t, backends["Embedded"](t))
	if _, err := c.CreateVolume(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := as(c, "cbt_x_y").Volume(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}
