package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pgschema"
)

// Settings is the body of PUT /v1/volumes/{name}/settings.
type Settings struct {
	Policy   string `json:"policy"`    // replay, strict or no-merge
	AllowDDL bool   `json:"allow_ddl"` // replayed records may change the schema
}

// MutatorInfo is a SQL-defined mutator as the API shows it.
type MutatorInfo struct {
	Name      string    `json:"name,omitempty"`
	SQL       string    `json:"sql"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

func (s *Server) configure(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req Settings
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	v, err = s.Meta.Configure(ctx, v.ID, pgschema.Settings{Policy: req.Policy, AllowDDL: req.AllowDDL})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("volume configured", zap.String("volume", v.Name), zap.String("policy", v.Policy), zap.Bool("allow_ddl", v.AllowDDL))
	writeJSON(w, http.StatusOK, volumeInfo(v))
}

func (s *Server) listMutators(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ms, err := s.Meta.Mutators(ctx, v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]MutatorInfo, len(ms))
	for i, m := range ms {
		out[i] = MutatorInfo{Name: m.Name, SQL: m.SQL, UpdatedAt: m.UpdatedAt}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setMutator(w http.ResponseWriter, r *http.Request) {
	var req MutatorInfo
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.SQL == "" {
		s.fail(w, r, &pgschema.InvalidError{Field: "mutator sql", Reason: "empty (DELETE removes a mutator)"})
		return
	}
	s.putMutator(w, r, req.SQL)
}

func (s *Server) deleteMutator(w http.ResponseWriter, r *http.Request) { s.putMutator(w, r, "") }

func (s *Server) putMutator(w http.ResponseWriter, r *http.Request, sql string) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("mutator")
	if err := s.Meta.SetMutator(ctx, v.ID, name, sql); err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("mutator set", zap.String("volume", v.Name), zap.String("mutator", name), zap.Bool("deleted", sql == ""))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) clientCommits(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	client := q.Get("client")
	from, err1 := parseVersion(q.Get("from_seq"), "from_seq")
	to, err2 := parseVersion(q.Get("to_seq"), "to_seq")
	switch {
	case client == "":
		err = &pgschema.InvalidError{Field: "client", Reason: "missing"}
	case err1 != nil:
		err = err1
	case err2 != nil:
		err = err2
	case to < from || to-from > maxClientCommits:
		err = &pgschema.InvalidError{Field: "to_seq", Reason: fmt.Sprintf("want from_seq <= to_seq < from_seq + %d", maxClientCommits)}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cs, err := s.Meta.ClientCommits(ctx, v.ID, client, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]PushResult, len(cs))
	for i, c := range cs {
		out[i] = PushResult{Seq: c.ClientSeq, Decision: string(c.Decision), Version: c.Version, Reason: c.Reason, Duplicate: true}
	}
	writeJSON(w, http.StatusOK, out)
}

// maxClientCommits bounds one ClientCommits request's sequence range.
const maxClientCommits = 100_000

// Configure changes a volume's conflict settings.
func (c *Client) Configure(ctx context.Context, volume string, s Settings) (VolumeInfo, error) {
	var v VolumeInfo
	err := c.doJSON(ctx, http.MethodPut, volumePath(volume, "/settings"), s, &v)
	return v, err
}

// Mutators lists a volume's SQL mutators by name.
func (c *Client) Mutators(ctx context.Context, volume string) ([]MutatorInfo, error) {
	var ms []MutatorInfo
	err := c.doJSON(ctx, http.MethodGet, volumePath(volume, "/mutators"), nil, &ms)
	return ms, err
}

// SetMutator defines or replaces a volume's SQL mutator; empty sql deletes it.
func (c *Client) SetMutator(ctx context.Context, volume, name, sql string) error {
	path := volumePath(volume, "/mutators/"+url.PathEscape(name))
	if sql == "" {
		return c.doJSON(ctx, http.MethodDelete, path, nil, nil)
	}
	return c.doJSON(ctx, http.MethodPut, path, MutatorInfo{SQL: sql}, nil)
}

// ClientCommits returns what became of a client's commits with sequence
// numbers in [fromSeq, toSeq] that the server stored (rejected ones are not
// stored, so not listed).
func (c *Client) ClientCommits(ctx context.Context, volume, clientID string, fromSeq, toSeq int64) ([]PushResult, error) {
	q := url.Values{"client": {clientID}, "from_seq": {strconv.FormatInt(fromSeq, 10)}, "to_seq": {strconv.FormatInt(toSeq, 10)}}
	var out []PushResult
	err := c.doJSON(ctx, http.MethodGet, volumePath(volume, "/commits?"+q.Encode()), nil, &out)
	return out, err
}
