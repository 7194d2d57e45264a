package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pgschema"
)

// Access is what a route needs from the request's token (DESIGN.md,
// invariant 7: a token for volume A can neither read nor write volume B).
type Access int

const (
	AccessNone        Access = iota // no token needed
	AccessRead                      // read the named volume: head, pull, pages, mutators, decisions
	AccessWrite                     // push commits to the named volume
	AccessAdmin                     // change the named volume's settings and mutators
	AccessServerAdmin               // create volumes, manage tokens: an admin token for every volume
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessAdmin:
		return "admin"
	case AccessServerAdmin:
		return "admin on every volume"
	}
	return "none"
}

// Auth checks the bearer token of each request against the tokens in the
// metastore. A Server with a nil Auth serves everyone.
//
// A token string is "cbt_" + its public id + "_" + its secret; the
// metastore keeps only a SHA-256 of the secret. A verified token is trusted
// for TTL before the metastore is read again, so a token deleted on another
// server stops working within TTL (at once on the server that deleted it).
type Auth struct {
	Meta pgschema.Metastore
	// AdminSecret, when not empty, is a bootstrap token accepted as admin
	// on every volume. It is never stored; give every server the same one
	// (cambiumd reads it from CAMBIUM_ADMIN_TOKEN) and use it to create
	// the tokens clients get.
	AdminSecret string
	TTL         time.Duration // DefaultTokenTTL if 0
	Now         func() time.Time

	mu    sync.Mutex
	cache map[string]cachedToken
}

// DefaultTokenTTL bounds how long a server trusts a token it verified
// before reading it again.
const DefaultTokenTTL = 5 * time.Second

const (
	tokenPrefix   = "cbt_"
	maxCachedToks = 10000
)

type cachedToken struct {
	tok     pgschema.Token
	found   bool
	fetched time.Time
}

// Grant is what a verified token allows.
type Grant struct {
	TokenID string // "admin" for the bootstrap secret
	Volume  int64  // 0: every volume
	Read    bool
	Write   bool
	Admin   bool
}

// allows reports whether g grants a on volume; volume 0 is a request that
// names no volume (listing them: the handler shows only those g reads).
func (g Grant) allows(a Access, volume int64) bool {
	if volume != 0 && g.Volume != 0 && g.Volume != volume {
		return false
	}
	switch a {
	case AccessNone:
		return true
	case AccessRead:
		return g.Read || g.Admin
	case AccessWrite:
		return g.Write
	case AccessAdmin:
		return g.Admin
	case AccessServerAdmin:
		return g.Admin && g.Volume == 0
	}
	return false
}

// NewToken makes a token: the string to hand the client, once, and the
// pgschema.Token to store (its ID and SecretHash set).
func NewToken() (secret string, t pgschema.Token, err error) {
	var id [8]byte
	var s [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", t, err
	}
	if _, err := rand.Read(s[:]); err != nil {
		return "", t, err
	}
	enc := base64.RawURLEncoding.EncodeToString(s[:])
	h := sha256.Sum256([]byte(enc))
	t.ID = hex.EncodeToString(id[:])
	t.SecretHash = h[:]
	return tokenPrefix + t.ID + "_" + enc, t, nil
}

// parseToken splits a token string into its id and secret.
func parseToken(s string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && id != "" && secret != ""
}

func (a *Auth) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Auth) ttl() time.Duration {
	if a.TTL > 0 {
		return a.TTL
	}
	return DefaultTokenTTL
}

// Verify returns what the token string allows, or an error wrapping
// ErrUnauthenticated.
func (a *Auth) Verify(ctx context.Context, token string) (Grant, error) {
	if token == "" {
		return Grant{}, fmt.Errorf("%w: no token; send the header Authorization: Bearer TOKEN", ErrUnauthenticated)
	}
	if a.AdminSecret != "" {
		x, y := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(a.AdminSecret))
		if subtle.ConstantTimeCompare(x[:], y[:]) == 1 {
			return Grant{TokenID: "admin", Read: true, Write: true, Admin: true}, nil
		}
	}
	id, secret, ok := parseToken(token)
	if !ok {
		return Grant{}, fmt.Errorf("%w: not a Cambium token", ErrUnauthenticated)
	}
	tok, found, err := a.lookup(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	h := sha256.Sum256([]byte(secret))
	if !found || subtle.ConstantTimeCompare(h[:], tok.SecretHash) != 1 {
		return Grant{}, fmt.Errorf("%w: unknown or revoked token %s", ErrUnauthenticated, id)
	}
	if !tok.ExpiresAt.IsZero() && !a.now().Before(tok.ExpiresAt) {
		return Grant{}, fmt.Errorf("%w: token %s expired at %s", ErrUnauthenticated, id, tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return Grant{TokenID: tok.ID, Volume: tok.Volume, Read: tok.Read, Write: tok.Write, Admin: tok.Admin}, nil
}

// lookup reads token id through the cache; a token not found is cached
// too, so guessing ids costs the metastore one query per id per TTL.
func (a *Auth) lookup(ctx context.Context, id string) (pgschema.Token, bool, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[id]
	a.mu.Unlock()
	if ok && now.Sub(c.fetched) < a.ttl() {
		return c.tok, c.found, nil
	}
	tok, err := a.Meta.Token(ctx, id)
	found := err == nil
	if err != nil && !errors.Is(err, pgschema.ErrTokenNotFound) {
		return tok, false, fmt.Errorf("look up token %s: %w", id, err)
	}
	a.mu.Lock()
	if a.cache == nil || len(a.cache) >= maxCachedToks {
		a.cache = map[string]cachedToken{}
	}
	a.cache[id] = cachedToken{tok: tok, found: found, fetched: now}
	a.mu.Unlock()
	return tok, found, nil
}

// forget drops a token from the cache (it was deleted here).
func (a *Auth) forget(id string) {
	a.mu.Lock()
	delete(a.cache, id)
	a.mu.Unlock()
}

type grantKey struct{}

// grantOf returns the request's verified grant; ok is false when the server
// runs without authentication.
func grantOf(ctx context.Context) (Grant, bool) {
	g, ok := ctx.Value(grantKey{}).(Grant)
	return g, ok
}

// bearer returns the request's bearer token, "" if none.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// guard wraps a route with the access it needs. Routes with {name} are
// checked against that volume. A token scoped to one volume learns nothing
// about the others: a volume it may not see is forbidden whether it exists
// or not.
func (s *Server) guard(need Access, h http.HandlerFunc) http.HandlerFunc {
	if s.Auth == nil || need == AccessNone {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		g, err := s.Auth.Verify(r.Context(), bearer(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cambium"`)
			s.fail(w, r, err)
			return
		}
		volume := int64(0)
		if name := r.PathValue("name"); name != "" {
			v, err := s.pushVolume(r.Context(), name)
			switch {
			case errors.Is(err, pgschema.ErrVolumeNotFound) && g.Volume == 0:
				// Every volume's token: the handler says not found.
			case errors.Is(err, pgschema.ErrVolumeNotFound):
				s.forbid(w, r, g, need, name)
				return
			case err != nil:
				s.fail(w, r, err)
				return
			default:
				volume = v.ID
			}
		}
		if !g.allows(need, volume) {
			s.forbid(w, r, g, need, r.PathValue("name"))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), grantKey{}, g)))
	}
}

func (s *Server) forbid(w http.ResponseWriter, r *http.Request, g Grant, need Access, volume string) {
	what := need.String()
	if volume != "" && need != AccessServerAdmin {
		what += " on volume " + volume
	}
	s.logger().Info("request forbidden", zap.String("token", g.TokenID), zap.String("needs", what),
		zap.String("method", r.Method), zap.String("path", r.URL.Path))
	s.fail(w, r, fmt.Errorf("%w: token %s does not grant %s", ErrForbidden, g.TokenID, what))
}

// authError is an authentication error rebuilt from the wire: the
// server's message, matching its sentinel with errors.Is.
type authError struct {
	sentinel error
	msg      string
}

func (e *authError) Error() string { return "server: " + e.msg }
func (e *authError) Unwrap() error { return e.sentinel }

var (
	// ErrUnauthenticated means the request carried no valid token: none,
	// malformed, unknown, revoked or expired.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the token is valid but does not grant what the
	// request needs on that volume.
	ErrForbidden = errors.New("forbidden")
)

// Wire codes of the authentication errors.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeUnknownToken    = "unknown_token"
	CodeTokenExists     = "token_exists"
)
