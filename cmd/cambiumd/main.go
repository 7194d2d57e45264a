// Command cambiumd is the Cambium server: it accepts hybrid commits from
// SQLite replicas, decides them, and serves pulls and page reads over HTTP.
// See `cambiumd --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/server"
)

const usage = `cambiumd: the Cambium replication server for SQLite.

Usage:
  cambiumd [flags]

With neither --pg nor --s3 it runs on the embedded default: an SQLite
metastore and a page directory under --data, no other service needed.

Flags (each falls back to the environment variable shown):
  --listen ADDR       address to serve HTTP on (CAMBIUM_LISTEN, default 127.0.0.1:7070)
  --data DIR          embedded metastore and pages (CAMBIUM_DATA, default ./cambium-data)
  --pg URL            PostgreSQL metastore, e.g. postgres://user@host/db (CAMBIUM_PG_URL)
  --s3 HOST:PORT      S3 or MinIO page store endpoint (CAMBIUM_S3_ENDPOINT)
  --s3-bucket NAME    bucket, created if missing (CAMBIUM_S3_BUCKET, default cambium)
  --s3-region NAME    bucket region (CAMBIUM_S3_REGION)
  --s3-tls            use HTTPS to the S3 endpoint (CAMBIUM_S3_TLS=true)
                      credentials: CAMBIUM_S3_ACCESS_KEY and CAMBIUM_S3_SECRET_KEY
  --cache SIZE        page cache size (CAMBIUM_CACHE, default 256MiB)
  --workers N         group-commit loops (CAMBIUM_WORKERS, default 2)
  --log-level LEVEL   debug, info, warn or error (CAMBIUM_LOG_LEVEL, default info)
  --log-format FMT    json or console (CAMBIUM_LOG_FORMAT, default json)

Authentication (tokens scope who reads and writes which volume):
  --auth              require a bearer token on every API request (CAMBIUM_AUTH=true);
                      on whenever an admin token is given
  --admin-token-file FILE
                      a bootstrap token, admin on every volume, read from FILE
                      (CAMBIUM_ADMIN_TOKEN_FILE), or from CAMBIUM_ADMIN_TOKEN;
                      at least 16 characters; never stored. Create the clients'
                      tokens with it: cambium token create --help
  --no-auth           serve without authentication on an address other than
                      loopback (refused otherwise: anyone who reaches it could
                      read and write every volume)

Endpoints: /v1/... (the API), /healthz, /metrics (Prometheus).

Example:
  cambiumd --data ./cambium-data
  CAMBIUM_ADMIN_TOKEN=$(openssl rand -hex 24) cambiumd --listen 0.0.0.0:7070
  CAMBIUM_S3_ACCESS_KEY=k CAMBIUM_S3_SECRET_KEY=s cambiumd --pg postgres://localhost/cambium --s3 127.0.0.1:9000
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "cambiumd:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cambiumd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	listen := fs.String("listen", env("CAMBIUM_LISTEN", "127.0.0.1:7070"), "")
	data := fs.String("data", env("CAMBIUM_DATA", "./cambium-data"), "")
	pg := fs.String("pg", env("CAMBIUM_PG_URL", ""), "")
	s3 := fs.String("s3", env("CAMBIUM_S3_ENDPOINT", ""), "")
	bucket := fs.String("s3-bucket", env("CAMBIUM_S3_BUCKET", "cambium"), "")
	region := fs.String("s3-region", env("CAMBIUM_S3_REGION", ""), "")
	tlsDefault, _ := strconv.ParseBool(env("CAMBIUM_S3_TLS", "false"))
	tls := fs.Bool("s3-tls", tlsDefault, "")
	cache := fs.String("cache", env("CAMBIUM_CACHE", "256MiB"), "")
	workers := fs.Int("workers", 0, "")
	logLevel := fs.String("log-level", env("CAMBIUM_LOG_LEVEL", "info"), "")
	logFormat := fs.String("log-format", env("CAMBIUM_LOG_FORMAT", "json"), "")
	authOn := fs.Bool("auth", env("CAMBIUM_AUTH", "") == "true", "")
	adminFile := fs.String("admin-token-file", env("CAMBIUM_ADMIN_TOKEN_FILE", ""), "")
	noAuth := fs.Bool("no-auth", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	adminToken := os.Getenv("CAMBIUM_ADMIN_TOKEN")
	if *adminFile != "" {
		b, err := os.ReadFile(*adminFile)
		if err != nil {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		adminToken = strings.TrimSpace(string(b))
	}
	auth := *authOn || adminToken != ""
	if auth && *noAuth {
		return errors.New("--no-auth given with --auth or an admin token: choose one")
	}
	if !auth && !*noAuth && !loopback(*listen) {
		return fmt.Errorf("refusing to serve %s without authentication: anyone who reaches it could read and write every volume; set CAMBIUM_ADMIN_TOKEN (see --help), or pass --no-auth", *listen)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if *workers == 0 {
		if w, err := strconv.Atoi(env("CAMBIUM_WORKERS", "0")); err == nil {
			*workers = w
		}
	}
	log, err := newLogger(*logLevel, *logFormat)
	if err != nil {
		return err
	}
	defer log.Sync()
	cacheBytes, err := humanize.ParseBytes(*cache)
	if err != nil {
		return fmt.Errorf("--cache %q: %w", *cache, err)
	}
	cfg := server.Config{DataDir: *data, PostgresURL: *pg, CacheBytes: int64(cacheBytes), Workers: *workers, Logger: log,
		Auth: auth, AdminToken: adminToken}
	if cfg.Hooks, err = faultHooks(os.Getenv("CAMBIUM_FAULT"), log); err != nil {
		return err
	}
	if *s3 != "" {
		cfg.S3 = &s3store.Config{
			Endpoint: *s3, Bucket: *bucket, Region: *region, Secure: *tls,
			AccessKey: os.Getenv("CAMBIUM_S3_ACCESS_KEY"), SecretKey: os.Getenv("CAMBIUM_S3_SECRET_KEY"),
		}
	}
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close(context.Background())
		return err
	}
	if !auth {
		log.Warn("authentication is off: every client may read and write every volume (see --help, Authentication)")
	}
	log.Info("cambiumd listening", zap.String("addr", "http://"+ln.Addr().String()), zap.String("backends", srv.Backends()), zap.Bool("auth", auth))
	serveErr := srv.Serve(ctx, ln)
	log.Info("cambiumd stopping")
	closeErr := srv.Close(context.Background())
	return errors.Join(serveErr, closeErr)
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// faultHooks makes the process kill itself with SIGKILL at a named step of
// the first group commit that stores something, for the crash tests
// (CAMBIUM_FAULT=crash-after-upload or crash-after-commit). Never set it in
// production.
func faultHooks(fault string, log *zap.Logger) (commit.Hooks, error) {
	die := func(step string) func(string) {
		return func(segment string) {
			log.Warn("CAMBIUM_FAULT: killing the process", zap.String("step", step), zap.String("segment", segment))
			log.Sync()
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not delivered synchronously; never go on
		}
	}
	switch fault {
	case "":
		return commit.Hooks{}, nil
	case "crash-after-upload":
		return commit.Hooks{AfterUpload: die(fault)}, nil
	case "crash-after-commit":
		return commit.Hooks{AfterMeta: die(fault)}, nil
	}
	return commit.Hooks{}, fmt.Errorf("CAMBIUM_FAULT=%q: want crash-after-upload or crash-after-commit", fault)
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}
