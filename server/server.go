// Package server assembles a Cambium server from its configuration: the
// metastore and page store (PostgreSQL and S3/MinIO, or the embedded default
// of a SQLite metastore and a local page directory), the committer, the page
// cache, and the HTTP API with health and Prometheus endpoints. cambiumd runs
// it; `cambium demo`, tests and app backends embed it as a library.
//
// It owns wiring and lifecycle only: decisions live in package commit, the
// protocol in package api, storage in pages and pgschema.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pages"
	"github.com/cambiumdb/cambium/pages/dirstore"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/pgschema/pgstore"
	"github.com/cambiumdb/cambium/pgschema/sqlitestore"
	"github.com/cambiumdb/cambium/replay"
)

// Defaults for Config.
const (
	DefaultCacheBytes      = 256 << 20
	DefaultShutdownTimeout = 10 * time.Second
)

// Config says which backends to use. With neither PostgresURL nor S3 set,
// the server runs on the embedded default under DataDir.
type Config struct {
	DataDir      string                // embedded metastore (DataDir/meta.db) and page directory (DataDir/pages)
	PostgresURL  string                // PostgreSQL metastore when set
	S3           *s3store.Config       // S3/MinIO page store when set
	CacheBytes   int64                 // page cache size; DefaultCacheBytes if 0
	Workers      int                   // group-commit loops; commit.DefaultWorkers if 0
	MaxPushBytes int64                 // size limit of one push request; api.DefaultMaxPushBytes if 0
	Hooks        commit.Hooks          // fault seams for crash tests; zero in production
	Logger       *zap.Logger           // no-op if nil
	Registry     prometheus.Registerer // where metrics go; a fresh registry (served at /metrics) if nil

	// Conflict resolution, for applications that embed the server.
	Mutators *replay.Registry // Go handlers of named mutations, resolved before the volumes' SQL mutators
	Resolver commit.Resolver  // may override decisions on stale commits
	Replay   *replay.Engine   // the replay engine and its sandbox limits; replay.NewEngine() if nil

	ReplayAll bool // replay every commit, as server-reconciliation systems do: for benchmarks only

	// Authentication (DESIGN.md, invariant 7). With Auth or AdminToken set,
	// every API request needs a bearer token (api.Auth); AdminToken is a
	// bootstrap token, never stored, accepted as admin on every volume.
	Auth       bool
	AdminToken string
	TokenTTL   time.Duration // how long a verified token is trusted; api.DefaultTokenTTL if 0
}

// MinAdminTokenLen is the shortest AdminToken accepted.
const MinAdminTokenLen = 16

// Server is an assembled Cambium server.
type Server struct {
	Meta      pgschema.Metastore
	Store     pages.Store
	Committer *commit.Committer
	API       *api.Server

	log      *zap.Logger
	handler  http.Handler
	cache    *pages.Cache
	backends string
}

// Open opens the backends and assembles the server; Close releases them.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = DefaultCacheBytes
	}
	if cfg.AdminToken != "" && len(cfg.AdminToken) < MinAdminTokenLen {
		return nil, fmt.Errorf("the admin token has %d characters: at least %d, random, please", len(cfg.AdminToken), MinAdminTokenLen)
	}
	var gatherer prometheus.Gatherer
	if cfg.Registry == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Registry, gatherer = reg, reg
	} else if g, ok := cfg.Registry.(prometheus.Gatherer); ok {
		gatherer = g
	}
	s := &Server{log: log}
	var metaName, storeName string
	var err error
	if cfg.PostgresURL != "" {
		s.Meta, err = pgstore.Open(ctx, cfg.PostgresURL, pgstore.Options{Logger: log})
		metaName = "postgres"
	} else {
		if cfg.DataDir == "" {
			return nil, errors.New("open server: no data directory for the embedded metastore")
		}
		if err = os.MkdirAll(cfg.DataDir, 0o755); err == nil {
			s.Meta, err = sqlitestore.Open(ctx, filepath.Join(cfg.DataDir, "meta.db"))
		}
		metaName = "sqlite:" + filepath.Join(cfg.DataDir, "meta.db")
	}
	if err != nil {
		return nil, fmt.Errorf("open metastore: %w", err)
	}
	if cfg.S3 != nil {
		s.Store, err = s3store.Open(ctx, *cfg.S3)
		storeName = "s3:" + cfg.S3.Endpoint + "/" + cfg.S3.Bucket
	} else {
		if cfg.DataDir == "" {
			err = errors.New("no data directory for the embedded page store")
		} else {
			s.Store, err = dirstore.Open(filepath.Join(cfg.DataDir, "pages"))
		}
		storeName = "dir:" + filepath.Join(cfg.DataDir, "pages")
	}
	if err != nil {
		s.Meta.Close()
		return nil, fmt.Errorf("open page store: %w", err)
	}
	s.backends = metaName + " + " + storeName

	s.cache = pages.NewCache(cfg.CacheBytes)
	pageReaders := &readers{store: s.Store, cache: s.cache}
	if cfg.Replay == nil {
		cfg.Replay = replay.NewEngine()
	}
	cfg.Replay.Logger = log.Named("replay")
	s.Committer = commit.New(s.Meta, s.Store)
	s.Committer.Pages = pageReaders
	s.Committer.Cache = s.cache
	s.Committer.Replayer = cfg.Replay
	s.Committer.Mutators = cfg.Mutators
	s.Committer.Resolver = cfg.Resolver
	s.Committer.ReplayAll = cfg.ReplayAll
	s.Committer.Logger = log
	s.Committer.Metrics = commit.NewMetrics(cfg.Registry)
	s.Committer.Hooks = cfg.Hooks
	if cfg.Workers > 0 {
		s.Committer.Workers = cfg.Workers
	}
	s.Committer.Open()
	s.API = &api.Server{Meta: s.Meta, Committer: s.Committer, Pages: pageReaders, Logger: log, MaxPushBytes: cfg.MaxPushBytes}
	if cfg.Auth || cfg.AdminToken != "" {
		s.API.Auth = &api.Auth{Meta: s.Meta, AdminSecret: cfg.AdminToken, TTL: cfg.TokenTTL}
	}

	mux := http.NewServeMux()
	mux.Handle("/", s.API.Handler())
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	s.handler = instrument(mux, cfg.Registry, log)
	return s, nil
}

// Backends describes the backends in use, for logs and the demo.
func (s *Server) Backends() string { return s.backends }

// Handler returns the server's HTTP handler: the API, /healthz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTP on ln until ctx is done, then shuts down gracefully:
// it stops accepting, lets requests in flight finish (bounded by
// DefaultShutdownTimeout), and returns. It does not Close the server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http: %w", err)
	}
	<-errc
	return nil
}

// Close lets queued commits finish and releases the backends.
func (s *Server) Close(ctx context.Context) error {
	err := s.Committer.Close(ctx)
	return errors.Join(err, s.Meta.Close())
}

// readers serves api.PageSource with one pages.Reader per page size over a
// shared cache (cache keys include the volume, so sharing is safe).
type readers struct {
	store pages.Store
	cache *pages.Cache
	mu    struct {
		sync.Mutex
		bySize map[int]*pages.Reader
	}
}

func (r *readers) reader(pageSize int) *pages.Reader {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.bySize == nil {
		r.mu.bySize = map[int]*pages.Reader{}
	}
	rd := r.mu.bySize[pageSize]
	if rd == nil {
		rd = pages.NewReader(r.store, r.cache, pageSize)
		r.mu.bySize[pageSize] = rd
	}
	return rd
}

// ReadPages implements api.PageSource.
func (r *readers) ReadPages(ctx context.Context, pageSize int, keys []pages.PageKey, locs []pages.Location) ([][]byte, error) {
	return r.reader(pageSize).ReadPages(ctx, keys, locs)
}

// instrument counts requests and their latency by route and status, and logs
// each at debug level.
func instrument(next http.Handler, reg prometheus.Registerer, log *zap.Logger) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cambium_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cambium_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"route"})
	reg.MustRegister(requests, latency)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		d := time.Since(start)
		requests.WithLabelValues(route, fmt.Sprint(sw.status)).Inc()
		latency.WithLabelValues(route).Observe(d.Seconds())
		log.Debug("request", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", sw.status), zap.Duration("duration", d))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
