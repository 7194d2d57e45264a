package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pgschema"
)

// Defaults for the Server's limits.
const (
	DefaultMaxPushBytes = 64 << 20 // one push request's body
	DefaultMaxReadPages = 4096     // pages in one page-read request
	maxJSONBytes        = 1 << 20
)

// PageSource reads verified page bytes from their locations, through a
// cache; package server implements it over pages.Reader.
type PageSource interface {
	ReadPages(ctx context.Context, pageSize int, keys []pages.PageKey, locs []pages.Location) ([][]byte, error)
}

// Server serves Cambium's HTTP API over a metastore, a committer and a page
// reader. It keeps no state another instance would need: any number of
// servers may share one metastore and page store.
type Server struct {
	Meta      pgschema.Metastore
	Committer *commit.Committer
	Pages     PageSource
	Logger    *zap.Logger
	Auth      *Auth // nil: no authentication, everyone may do everything

	MaxPushBytes int64 // request size limit for push; DefaultMaxPushBytes if 0
	MaxReadPages int   // pages per read request; DefaultMaxReadPages if 0

	volumes struct {
		sync.Mutex
		byName map[string]pgschema.Volume // id and page size only; see pushVolume
	}
}

// VolumeInfo is a volume as the API shows it.
type VolumeInfo struct {
	Name      string    `json:"name"`
	PageSize  int       `json:"page_size"`
	Head      int64     `json:"head"`
	PageCount uint32    `json:"page_count"`
	Policy    string    `json:"policy"`
	AllowDDL  bool      `json:"allow_ddl"`
	CreatedAt time.Time `json:"created_at"`
}

func volumeInfo(v pgschema.Volume) VolumeInfo {
	return VolumeInfo{Name: v.Name, PageSize: v.PageSize, Head: v.Head, PageCount: v.PageCount, Policy: v.Policy, AllowDDL: v.AllowDDL, CreatedAt: v.CreatedAt}
}

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	Name     string `json:"name"`
	PageSize int    `json:"page_size,omitempty"` // 4096 if 0
}

// PushResult is one commit's decision in a push response.
type PushResult struct {
	Seq       int64  `json:"seq"`
	Decision  string `json:"decision"`
	Version   int64  `json:"version,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     *Error `json:"error,omitempty"`
}

// PushResponse is the body of a successful push: one result per commit.
type PushResponse struct {
	Results []PushResult `json:"results"`
}

// ReadPagesRequest is the body of POST /v1/volumes/{name}/pages.
type ReadPagesRequest struct {
	Version int64    `json:"version"`
	Pages   []uint32 `json:"pages"`
}

// DefaultPageSize is a new volume's page size when none is given: SQLite's.
const DefaultPageSize = 4096

// Handler returns the API's routes:
//
//	GET  /healthz                       liveness: 200 "ok"
//	POST /v1/volumes                    create a volume (CreateVolumeRequest)
//	GET  /v1/volumes                    list volumes
//	GET  /v1/volumes/{name}             one volume, with its head
//	POST /v1/volumes/{name}/push        push commits (push body) → PushResponse
//	GET  /v1/volumes/{name}/pull?from=V pages changed in (V, head] (page stream)
//	GET  /v1/volumes/{name}/changes?from=V  numbers of the pages changed in (V, head] → Changes
//	POST /v1/volumes/{name}/pages       read pages at a version (page stream)
//	PUT  /v1/volumes/{name}/settings    conflict policy and DDL on replay (Settings) → VolumeInfo
//	GET  /v1/volumes/{name}/mutators    the volume's SQL mutators → []MutatorInfo
//	PUT  /v1/volumes/{name}/mutators/{mutator}    define or replace one (MutatorInfo, sql only)
//	DELETE /v1/volumes/{name}/mutators/{mutator}  remove one
//	GET  /v1/volumes/{name}/commits?client=ID&from_seq=A&to_seq=B  a client's stored decisions → []PushResult
//	POST /v1/tokens                     create a token (CreateTokenRequest) → NewTokenResponse
//	GET  /v1/tokens                     list tokens → []TokenInfo
//	DELETE /v1/tokens/{id}              revoke a token
//
// With Auth set, every route but /healthz needs a bearer token granting
// what the route needs (see Access): read, write or admin on the volume it
// names; creating volumes and managing tokens need an admin token for
// every volume. GET /v1/volumes lists only the volumes the token reads.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	for _, rt := range []struct {
		pattern string
		need    Access
		h       http.HandlerFunc
	}{
		{"POST /v1/volumes", AccessServerAdmin, s.createVolume},
		{"GET /v1/volumes", AccessRead, s.listVolumes}, // only the volumes the token reads
		{"GET /v1/volumes/{name}", AccessRead, s.getVolume},
		{"POST /v1/volumes/{name}/push", AccessWrite, s.push},
		{"GET /v1/volumes/{name}/pull", AccessRead, s.pull},
		{"GET /v1/volumes/{name}/changes", AccessRead, s.changes},
		{"POST /v1/volumes/{name}/pages", AccessRead, s.readPages},
		{"PUT /v1/volumes/{name}/settings", AccessAdmin, s.configure},
		{"GET /v1/volumes/{name}/mutators", AccessRead, s.listMutators},
		{"PUT /v1/volumes/{name}/mutators/{mutator}", AccessAdmin, s.setMutator},
		{"DELETE /v1/volumes/{name}/mutators/{mutator}", AccessAdmin, s.deleteMutator},
		{"GET /v1/volumes/{name}/commits", AccessRead, s.clientCommits},
		{"POST /v1/tokens", AccessServerAdmin, s.createToken},
		{"GET /v1/tokens", AccessServerAdmin, s.listTokens},
		{"DELETE /v1/tokens/{id}", AccessServerAdmin, s.deleteToken},
	} {
		mux.HandleFunc(rt.pattern, s.guard(rt.need, rt.h))
	}
	return mux
}

func (s *Server) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := errorBody(err)
	if status >= 500 {
		s.logger().Error("request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return &MalformedError{Reason: "json: " + err.Error()}
	}
	return nil
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	var req CreateVolumeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.PageSize == 0 {
		req.PageSize = DefaultPageSize
	}
	v, err := s.Meta.CreateVolume(r.Context(), req.Name, req.PageSize)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("volume created", zap.String("volume", v.Name), zap.Int("page_size", v.PageSize))
	writeJSON(w, http.StatusCreated, volumeInfo(v))
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	vs, err := s.Meta.Volumes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g, scoped := grantOf(r.Context())
	out := make([]VolumeInfo, 0, len(vs))
	for _, v := range vs {
		if !scoped || g.allows(AccessRead, v.ID) {
			out = append(out, volumeInfo(v))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.Meta.Volume(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, volumeInfo(v))
}

// pushVolume returns the volume a push names, with the only fields the
// committer reads before it locks the row: id and page size. Both are fixed
// for a volume's life and volumes are never renamed or deleted, so they are
// cached per name and a push costs no extra metadata query; the group
// commit reads the head under the row lock. Whoever adds volume deletion
// must evict from this cache.
func (s *Server) pushVolume(ctx context.Context, name string) (pgschema.Volume, error) {
	s.volumes.Lock()
	v, ok := s.volumes.byName[name]
	s.volumes.Unlock()
	if ok {
		return v, nil
	}
	v, err := s.Meta.Volume(ctx, name)
	if err != nil {
		return v, err
	}
	v = pgschema.Volume{ID: v.ID, Name: v.Name, PageSize: v.PageSize}
	s.volumes.Lock()
	if s.volumes.byName == nil {
		s.volumes.byName = map[string]pgschema.Volume{}
	}
	s.volumes.byName[name] = v
	s.volumes.Unlock()
	return v, nil
}

func (s *Server) push(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.pushVolume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := s.MaxPushBytes
	if limit == 0 {
		limit = DefaultMaxPushBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if !errors.As(err, &tooLarge) {
			err = &MalformedError{Reason: "read body: " + err.Error()}
		}
		s.fail(w, r, err)
		return
	}
	reqs, err := DecodePush(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	results, err := s.Committer.Submit(ctx, v, reqs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	resp := PushResponse{Results: make([]PushResult, len(results))}
	for i, res := range results {
		pr := PushResult{Seq: res.Seq, Decision: string(res.Decision), Version: res.Version, Reason: res.Reason, Duplicate: res.Duplicate}
		if res.Err != nil {
			_, e := errorBody(res.Err)
			pr.Error = &e
		}
		resp.Results[i] = pr
	}
	writeJSON(w, http.StatusOK, resp)
}

func parseVersion(q string, name string) (int64, error) {
	if q == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(q, 10, 64)
	if err != nil || v < 0 {
		return 0, &pgschema.InvalidError{Field: name, Reason: fmt.Sprintf("%q is not a version", q)}
	}
	return v, nil
}

// pull streams, for the pages changed in (from, head], each page's newest
// bytes once, so a replica at from reaches head.
func (s *Server) pull(w http.ResponseWriter, r *http.Request) {
	v, refs, ok := s.changedSince(w, r)
	if ok {
		s.streamPages(w, r, v, v.Head, v.PageCount, refs)
	}
}

// changedSince reads the volume a pull or changes request names and the
// newest location of each page changed in (from, head]; on failure it has
// answered the request.
func (s *Server) changedSince(w http.ResponseWriter, r *http.Request) (pgschema.Volume, []pgschema.PageRef, bool) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return v, nil, false
	}
	from, err := parseVersion(r.URL.Query().Get("from"), "from")
	if err != nil {
		s.fail(w, r, err)
		return v, nil, false
	}
	if from > v.Head {
		s.fail(w, r, &commit.BaseAheadError{Base: from, Head: v.Head})
		return v, nil, false
	}
	refs, err := s.Meta.ChangedPages(ctx, v.ID, from, v.Head)
	if err != nil {
		s.fail(w, r, err)
		return v, nil, false
	}
	return v, refs, true
}

// Changes is the answer to GET /v1/volumes/{name}/changes: what pull would
// send, without the bytes. A lazy replica fetches only the changed pages
// it holds and forgets the others.
type Changes struct {
	Head      int64       `json:"head"`
	PageCount uint32      `json:"page_count"` // at Head
	Pages     [][2]uint32 `json:"pages"`      // ascending runs [first, last] of changed page numbers
}

func (s *Server) changes(w http.ResponseWriter, r *http.Request) {
	v, refs, ok := s.changedSince(w, r)
	if !ok {
		return
	}
	out := Changes{Head: v.Head, PageCount: v.PageCount, Pages: [][2]uint32{}}
	for _, ref := range refs {
		if n := len(out.Pages); n > 0 && out.Pages[n-1][1]+1 == ref.PageNo {
			out.Pages[n-1][1] = ref.PageNo
		} else {
			out.Pages = append(out.Pages, [2]uint32{ref.PageNo, ref.PageNo})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// readPages streams the requested pages of snapshot (volume, version), for
// lazy replicas and for tools; pages the snapshot does not have are left out.
func (s *Server) readPages(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.Meta.Volume(ctx, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req ReadPagesRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	max := s.MaxReadPages
	if max == 0 {
		max = DefaultMaxReadPages
	}
	switch {
	case len(req.Pages) > max:
		s.fail(w, r, &pgschema.InvalidError{Field: "pages", Reason: fmt.Sprintf("%d pages requested, at most %d per request", len(req.Pages), max)})
		return
	case req.Version > v.Head || req.Version < 0:
		s.fail(w, r, &commit.BaseAheadError{Base: req.Version, Head: v.Head})
		return
	}
	pageCount := v.PageCount
	if req.Version < v.Head {
		if req.Version == 0 {
			pageCount = 0
		} else {
			c, err := s.Meta.Commit(ctx, v.ID, req.Version)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			pageCount = c.PageCount
		}
	}
	refs, err := s.Meta.PagesAt(ctx, v.ID, req.Version, req.Pages)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.streamPages(w, r, v, req.Version, pageCount, refs)
}

// streamPages reads refs in batches and writes them as a page stream. Once
// the first byte is sent an error can no longer change the status, so it
// cuts the stream short, which the client's reader detects by the missing
// end marker.
func (s *Server) streamPages(w http.ResponseWriter, r *http.Request, v pgschema.Volume, head int64, pageCount uint32, refs []pgschema.PageRef) {
	ctx := r.Context()
	const batch = 256
	w.Header().Set("Content-Type", "application/x-cambium-pages")
	var pw *PageWriter
	for i := 0; i < len(refs) || pw == nil; i += batch {
		chunk := refs[min(i, len(refs)):min(i+batch, len(refs))]
		keys := make([]pages.PageKey, len(chunk))
		locs := make([]pages.Location, len(chunk))
		for j, ref := range chunk {
			keys[j] = pages.PageKey{Volume: v.ID, PageNo: ref.PageNo, Version: ref.Version}
			locs[j] = ref.Location
		}
		var data [][]byte
		if len(chunk) > 0 {
			var err error
			if data, err = s.Pages.ReadPages(ctx, v.PageSize, keys, locs); err != nil {
				if pw == nil {
					s.fail(w, r, err)
				} else {
					s.logger().Error("page stream cut short", zap.String("volume", v.Name), zap.Error(err))
				}
				return
			}
		}
		if pw == nil {
			var err error
			if pw, err = NewPageWriter(w, PageStreamHeader{PageSize: v.PageSize, Head: head, PageCount: pageCount}); err != nil {
				return
			}
		}
		for j, ref := range chunk {
			if err := pw.Write(StreamedPage{No: ref.PageNo, Version: ref.Version, Data: data[j]}); err != nil {
				return
			}
		}
	}
	pw.Close()
}
