package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pgschema"
)

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	Volume    string    `json:"volume,omitempty"` // "" for every volume
	Read      bool      `json:"read"`
	Write     bool      `json:"write"`
	Admin     bool      `json:"admin"`
	Note      string    `json:"note,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: never
}

// TokenInfo is a token as the API shows it: never its secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Volume    string    `json:"volume"` // "" for every volume
	Read      bool      `json:"read"`
	Write     bool      `json:"write"`
	Admin     bool      `json:"admin"`
	Note      string    `json:"note,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// NewTokenResponse is the answer to POST /v1/tokens: the token string,
// which the server does not keep and cannot show again.
type NewTokenResponse struct {
	TokenInfo
	Token string `json:"token"`
}

func (s *Server) tokenInfo(ctx context.Context, t pgschema.Token) (TokenInfo, error) {
	ti := TokenInfo{ID: t.ID, Read: t.Read, Write: t.Write, Admin: t.Admin, Note: t.Note, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
	if t.Volume != 0 {
		v, err := s.Meta.VolumeByID(ctx, t.Volume)
		if err != nil {
			return ti, err
		}
		ti.Volume = v.Name
	}
	return ti, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req CreateTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if !req.Read && !req.Write && !req.Admin {
		s.fail(w, r, &pgschema.InvalidError{Field: "token", Reason: "grants nothing: give it read, write or admin"})
		return
	}
	secret, t, err := NewToken()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Volume != "" {
		v, err := s.Meta.Volume(r.Context(), req.Volume)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		t.Volume = v.ID
	}
	t.Read, t.Write, t.Admin, t.Note, t.ExpiresAt = req.Read, req.Write, req.Admin, req.Note, req.ExpiresAt
	t, err = s.Meta.CreateToken(r.Context(), t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ti, err := s.tokenInfo(r.Context(), t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g, _ := grantOf(r.Context())
	s.logger().Info("token created", zap.String("token", t.ID), zap.String("volume", ti.Volume),
		zap.Bool("read", t.Read), zap.Bool("write", t.Write), zap.Bool("admin", t.Admin), zap.String("by", g.TokenID))
	writeJSON(w, http.StatusCreated, NewTokenResponse{TokenInfo: ti, Token: secret})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Meta.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]TokenInfo, 0, len(ts))
	for _, t := range ts {
		ti, err := s.tokenInfo(r.Context(), t)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, ti)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.Meta.DeleteToken(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.Auth != nil {
		s.Auth.forget(id)
	}
	g, _ := grantOf(r.Context())
	s.logger().Info("token deleted", zap.String("token", id), zap.String("by", g.TokenID))
	w.WriteHeader(http.StatusNoContent)
}

// CreateToken asks for a new token; the response holds the token string,
// which cannot be read again.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (NewTokenResponse, error) {
	var out NewTokenResponse
	err := c.doJSON(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// Tokens lists the tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out []TokenInfo
	err := c.doJSON(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out, err
}

// DeleteToken revokes a token by id.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
}
