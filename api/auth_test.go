package api_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/pgschema/sqlitestore"
)

// TestAuth_RevokedElsewhere: a token deleted by another server (straight in
// the metastore here) keeps working on this one until its cached
// verification is TTL old, and not after; an expiry is checked on every
// request, cached or not.
func TestAuth_RevokedElsewhere(t *testing.T) {
	ctx := context.Background()
	meta, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	auth := &api.Auth{Meta: meta, TTL: 5 * time.Second, Now: func() time.Time { return now }}

	secret, tok, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tok.Read = true
	tok.ExpiresAt = now.Add(time.Hour)
	if _, err := meta.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	g, err := auth.Verify(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if g.TokenID != tok.ID || !g.Read || g.Write || g.Admin || g.Volume != 0 {
		t.Fatalf("grant = %+v", g)
	}
	if err := meta.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	now = now.Add(4 * time.Second)
	if _, err := auth.Verify(ctx, secret); err != nil {
		t.Fatalf("within the TTL of its verification: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := auth.Verify(ctx, secret); !errors.Is(err, api.ErrUnauthenticated) {
		t.Fatalf("past the TTL: %v, want unauthenticated", err)
	}

	// Expiry needs no new lookup.
	secret, tok, err = api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tok.Write, tok.ExpiresAt = true, now.Add(time.Second)
	if _, err := meta.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Verify(ctx, secret); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if _, err := auth.Verify(ctx, secret); !errors.Is(err, api.ErrUnauthenticated) {
		t.Fatalf("at its expiry: %v, want unauthenticated", err)
	}
}

// TestNewToken: tokens are distinct, carry their id, and the stored hash is
// the secret's, never the secret.
func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, tok, err := api.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] || seen[tok.ID] {
			t.Fatal("a token repeated")
		}
		seen[s], seen[tok.ID] = true, true
		if len(tok.SecretHash) != 32 || len(tok.ID) != 16 || len(s) < 40 {
			t.Fatalf("token %q id %q hash %d bytes", s, tok.ID, len(tok.SecretHash))
		}
	}
}
