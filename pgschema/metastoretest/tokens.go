package metastoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

// tokenTime is a token time with microsecond precision, outside UTC: both
// stores keep it exactly.
var tokenTime = time.Date(2025, 6, 1, 8, 30, 0, 123456000, time.FixedZone("Y", -7*3600))

// secretHash is the stored hash of secret.
func secretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// sameToken compares every field; times with Equal.
func sameToken(a, b pgschema.Token) bool {
	return a.ID == b.ID && bytes.Equal(a.SecretHash, b.SecretHash) && a.Volume == b.Volume &&
		a.Read == b.Read && a.Write == b.Write && a.Admin == b.Admin && a.Note == b.Note &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func mustCreateToken(t testing.TB, ms pgschema.Metastore, tok pgschema.Token) pgschema.Token {
	t.Helper()
	got, err := ms.CreateToken(context.Background(), tok)
	if err != nil {
		t.Fatalf("CreateToken(%q): %v", tok.ID, err)
	}
	return got
}

// mustToken checks that Token(want.ID) returns want.
func mustToken(t testing.TB, ms pgschema.Metastore, want pgschema.Token) {
	t.Helper()
	got, err := ms.Token(context.Background(), want.ID)
	if err != nil {
		t.Fatalf("Token(%q): %v", want.ID, err)
	}
	if !sameToken(got, want) {
		t.Fatalf("Token(%q)=%+v, want %+v", want.ID, got, want)
	}
}

func mustNoToken(t testing.TB, ms pgschema.Metastore, id string) {
	t.Helper()
	if got, err := ms.Token(context.Background(), id); !errors.Is(err, pgschema.ErrTokenNotFound) {
		t.Fatalf("Token(%q)=%+v, err=%v, want ErrTokenNotFound", id, got, err)
	}
}

// mustTokenIDs checks that Tokens returns exactly ids, in that order.
func mustTokenIDs(t testing.TB, ms pgschema.Metastore, ids ...string) []pgschema.Token {
	t.Helper()
	ts, err := ms.Tokens(context.Background())
	if err != nil {
		t.Fatalf("Tokens: %v", err)
	}
	got := make([]string, len(ts))
	for i, tok := range ts {
		got[i] = tok.ID
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") || len(got) != len(ids) {
		t.Fatalf("Tokens() ids=%q, want %q", got, ids)
	}
	return ts
}

func mustInvalidField(t testing.TB, err error, field, what string) {
	t.Helper()
	var ie *pgschema.InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("%s: err=%v (%T), want *pgschema.InvalidError", what, err, err)
	}
	if ie.Field != field || ie.Reason == "" {
		t.Fatalf("%s: InvalidError{Field: %q, Reason: %q}, want field %q and a reason", what, ie.Field, ie.Reason, field)
	}
}

func testCreateToken(t *testing.T, ms pgschema.Metastore) {
	v := mustCreate(t, ms, "v")
	other := mustCreate(t, ms, "other")
	// Each grant differs from its neighbours', so swapped columns show.
	for _, want := range []pgschema.Token{
		{ID: "scoped", SecretHash: secretHash("s1"), Volume: v.ID, Read: true, Admin: true,
			Note: "ci deploy", CreatedAt: tokenTime, ExpiresAt: tokenTime.Add(30 * 24 * time.Hour)},
		{ID: "scoped-other", SecretHash: secretHash("s2"), Volume: other.ID, Read: true, Write: true,
			Note: "für alle ✓ 'quoted'", CreatedAt: tokenTime.Add(time.Microsecond)},
		{ID: "every_volume", SecretHash: secretHash("s3"), Write: true,
			CreatedAt: tokenTime.Add(-time.Hour), ExpiresAt: tokenTime.Add(time.Hour)},
		// Expired already: stored and returned all the same.
		{ID: "ADMIN-0", SecretHash: secretHash("s4"), Read: true, Write: true, Admin: true,
			Note: "root", CreatedAt: tokenTime, ExpiresAt: tokenTime.Add(-time.Second)},
	} {
		got := mustCreateToken(t, ms, want)
		if !sameToken(got, want) {
			t.Fatalf("CreateToken()=%+v, want %+v", got, want)
		}
		if want.ExpiresAt.IsZero() != got.ExpiresAt.IsZero() {
			t.Fatalf("CreateToken(%q).ExpiresAt=%v, want %v", want.ID, got.ExpiresAt, want.ExpiresAt)
		}
		mustToken(t, ms, want)
	}

	t.Run("DefaultsAndNever", func(t *testing.T) {
		start := time.Now().Truncate(time.Second)
		want := pgschema.Token{ID: "bare", SecretHash: secretHash("bare")}
		got := mustCreateToken(t, ms, want)
		if got.CreatedAt.Before(start) || got.CreatedAt.After(time.Now().Add(time.Minute)) {
			t.Fatalf("CreateToken(zero CreatedAt).CreatedAt=%v, want about now (%v)", got.CreatedAt, start)
		}
		if !got.ExpiresAt.IsZero() {
			t.Fatalf("CreateToken(zero ExpiresAt).ExpiresAt=%v, want zero (never)", got.ExpiresAt)
		}
		if got.Volume != 0 || got.Read || got.Write || got.Admin || got.Note != "" {
			t.Fatalf("CreateToken(%+v)=%+v, want every volume, no grants, no note", want, got)
		}
		mustToken(t, ms, got)
	})

	t.Run("Precision", func(t *testing.T) {
		// Nanoseconds are beyond both stores' microseconds: the token as
		// stored is within a microsecond, and reads back as CreateToken
		// returned it.
		at := tokenTime.Add(789 * time.Nanosecond)
		got := mustCreateToken(t, ms, pgschema.Token{ID: "nanos", SecretHash: secretHash("n"), CreatedAt: at, ExpiresAt: at})
		for name, ts := range map[string]time.Time{"CreatedAt": got.CreatedAt, "ExpiresAt": got.ExpiresAt} {
			if d := ts.Sub(at); d <= -time.Microsecond || d >= time.Microsecond {
				t.Fatalf("CreateToken().%s=%v, want within 1µs of %v", name, ts, at)
			}
		}
		mustToken(t, ms, got)
	})
}

func testCreateTokenExists(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	first := mustCreateToken(t, ms, pgschema.Token{ID: "dup", SecretHash: secretHash("1"), Read: true, CreatedAt: tokenTime})
	for _, again := range []pgschema.Token{
		{ID: "dup", SecretHash: secretHash("1"), Read: true, CreatedAt: tokenTime},
		{ID: "dup", SecretHash: secretHash("2"), Volume: v.ID, Write: true, Admin: true, Note: "other"},
	} {
		if _, err := ms.CreateToken(ctx, again); !errors.Is(err, pgschema.ErrTokenExists) {
			t.Fatalf("CreateToken(%+v) again: err=%v, want ErrTokenExists", again, err)
		}
	}
	mustToken(t, ms, first)
	// Ids are case-sensitive: "DUP" is another token.
	mustCreateToken(t, ms, pgschema.Token{ID: "DUP", SecretHash: secretHash("3")})
	mustTokenIDs(t, ms, "DUP", "dup")
}

func testCreateTokenVolumeNotFound(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	for _, vol := range []int64{v.ID + 1000, -1} {
		tok := pgschema.Token{ID: "t", SecretHash: secretHash("t"), Volume: vol, Read: true}
		if _, err := ms.CreateToken(ctx, tok); !errors.Is(err, pgschema.ErrVolumeNotFound) {
			t.Fatalf("CreateToken(volume %d): err=%v, want ErrVolumeNotFound", vol, err)
		}
	}
	mustNoToken(t, ms, "t")
	mustTokenIDs(t, ms)
	// The id is still free.
	mustCreateToken(t, ms, pgschema.Token{ID: "t", SecretHash: secretHash("t"), Volume: v.ID})
}

func testCreateTokenInvalid(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	for _, id := range []string{"", "a b", "a.b", "a/b", "a:b", "é", "a\n", "tok\x00", strings.Repeat("i", pgschema.MaxTokenIDLen+1)} {
		_, err := ms.CreateToken(ctx, pgschema.Token{ID: id, SecretHash: secretHash(id), Read: true})
		mustInvalidField(t, err, "token id", fmt.Sprintf("CreateToken(id %q)", id))
	}
	hex := []byte(strings.Repeat("ab", sha256.Size)) // the hex digest, not the digest
	for _, h := range [][]byte{nil, {}, secretHash("x")[:31], append(secretHash("x"), 0), hex} {
		_, err := ms.CreateToken(ctx, pgschema.Token{ID: "hash", SecretHash: h, Read: true})
		mustInvalidField(t, err, "token secret hash", fmt.Sprintf("CreateToken(%d-byte hash)", len(h)))
	}
	// Validation comes before the volume is looked up.
	_, err := ms.CreateToken(ctx, pgschema.Token{ID: "", SecretHash: secretHash("x"), Volume: 1 << 40})
	mustInvalidField(t, err, "token id", "CreateToken(bad id, missing volume)")
	mustTokenIDs(t, ms)

	// The longest id and every allowed character.
	for _, id := range []string{strings.Repeat("i", pgschema.MaxTokenIDLen), "AZaz09_-", "_", "-"} {
		mustCreateToken(t, ms, pgschema.Token{ID: id, SecretHash: secretHash(id)})
	}
	mustTokenIDs(t, ms, "-", "AZaz09_-", "_", strings.Repeat("i", pgschema.MaxTokenIDLen))
}

func testTokenNotFound(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	mustCreateToken(t, ms, pgschema.Token{ID: "yes", SecretHash: secretHash("yes")})
	for _, id := range []string{"no", "YES", "ye", "", "bad id"} {
		mustNoToken(t, ms, id)
		if err := ms.DeleteToken(ctx, id); !errors.Is(err, pgschema.ErrTokenNotFound) {
			t.Fatalf("DeleteToken(%q): err=%v, want ErrTokenNotFound", id, err)
		}
	}
	mustTokenIDs(t, ms, "yes")
}

func testTokens(t *testing.T, ms pgschema.Metastore) {
	mustTokenIDs(t, ms)
	v := mustCreate(t, ms, "v")
	// Created out of order; listed in byte order: '-' < digits < upper
	// case < '_' < lower case, whatever the database's collation.
	ids := []string{"b", "a_1", "Z9", "a-1", "0", "_x", "A", "a", "-"}
	want := make(map[string]pgschema.Token, len(ids))
	for i, id := range ids {
		tok := pgschema.Token{ID: id, SecretHash: secretHash(id), Read: i%2 == 0, Write: i%3 == 0, Admin: i%4 == 0,
			Note: "note " + id, CreatedAt: tokenTime.Add(time.Duration(i) * time.Second)}
		if i%2 == 1 {
			tok.Volume = v.ID
			tok.ExpiresAt = tokenTime.Add(time.Duration(i) * time.Hour)
		}
		want[id] = mustCreateToken(t, ms, tok)
	}
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	for _, got := range mustTokenIDs(t, ms, sorted...) {
		if !sameToken(got, want[got.ID]) {
			t.Fatalf("Tokens(): %+v, want %+v", got, want[got.ID])
		}
	}
}

func testDeleteToken(t *testing.T, ms pgschema.Metastore) {
	ctx := context.Background()
	v := mustCreate(t, ms, "v")
	gone := mustCreateToken(t, ms, pgschema.Token{ID: "gone", SecretHash: secretHash("gone"), Volume: v.ID, Read: true})
	kept := mustCreateToken(t, ms, pgschema.Token{ID: "kept", SecretHash: secretHash("kept"), Read: true, Note: "stays"})
	mustToken(t, ms, gone)
	if err := ms.DeleteToken(ctx, "gone"); err != nil {
		t.Fatalf("DeleteToken(gone): %v", err)
	}
	mustNoToken(t, ms, "gone")
	if err := ms.DeleteToken(ctx, "gone"); !errors.Is(err, pgschema.ErrTokenNotFound) {
		t.Fatalf("DeleteToken(gone) again: err=%v, want ErrTokenNotFound", err)
	}
	mustToken(t, ms, kept)
	mustTokenIDs(t, ms, "kept")
	// A deleted id can be used again, for a new secret.
	again := mustCreateToken(t, ms, pgschema.Token{ID: "gone", SecretHash: secretHash("new"), Write: true})
	mustToken(t, ms, again)
	mustTokenIDs(t, ms, "gone", "kept")
}
