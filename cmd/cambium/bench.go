package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/cambiumdb/cambium/bench"
	"github.com/cambiumdb/cambium/pages/s3store"
)

var benchUsage = fmt.Sprintf(`Usage:
  cambium bench [--quick] [--out DIR] [--pg URL --s3 HOST:PORT] [flags]

Runs Cambium's benchmark suite: workloads × strategies through one server,
on the embedded default (no service needed) or on PostgreSQL + MinIO, and
writes report.md, results.csv, throughput.svg and latency.svg into --out.
Progress goes to stderr. The server runs as a child process (cambium bench
serve) so that its CPU time is measured apart from the clients'.

Strategies: hybrid (Cambium), strict-pages (stale commits rejected, the
client re-runs and retries, as Graft), replay-all (every commit replayed, as
SQLSync), full-file (every commit uploads the whole database file).
Workloads: single, disjoint, hot-row, offline, catch-up, cold-lazy (a new
lazy replica's first point query on a large volume, against the full-file
client's download of the whole file).

Flags (each backend flag falls back to the environment variable shown):
  --out DIR            output directory (default bench-results)
  --quick              small sizes: under a minute on the embedded default
  --json               print the results as JSON on stdout
  --workloads LIST     comma-separated (default: all)
  --strategies LIST    comma-separated (default: all)
  --pg URL             PostgreSQL metastore (CAMBIUM_PG_URL); the run uses a schema of its own and drops it
  --s3 HOST:PORT       S3/MinIO page store (CAMBIUM_S3_ENDPOINT); credentials from
                       CAMBIUM_S3_ACCESS_KEY and CAMBIUM_S3_SECRET_KEY; the run's objects
                       go under a prefix of their own and are deleted at the end
  --s3-bucket NAME     bucket, created if missing (CAMBIUM_S3_BUCKET, default cambium-bench)
  --s3-region NAME     (CAMBIUM_S3_REGION)
  --s3-tls             HTTPS to the S3 endpoint (CAMBIUM_S3_TLS=true)
  --work-dir DIR       scratch space for replicas and the embedded server (default: a temporary directory)
  --keep               keep the work directory, the schema and the objects

Sizes (defaults finish in under 5 minutes on 2 cores; --quick's in brackets):
  --commits N          single: the writer's transactions (%d [%d])
  --writers N          disjoint, hot-row: concurrent writers (%d [%d])
  --per-writer N       disjoint, hot-row: transactions per writer (%d [%d])
  --offline N          offline: commits made offline, then pushed (%d [%d])
  --online N           offline: commits another replica pushes meanwhile (%d [%d])
  --versions N         catch-up: versions a reader is behind (%d [%d])
  --readers N          catch-up, cold-lazy: readers timed per strategy (%d [%d])
  --db-size SIZE       rows preloaded before each workload but cold-lazy (%s [%s])
  --lazy-size SIZE     cold-lazy: the volume a new lazy replica queries (%s [%s])
  --cell-time DUR      no new transaction starts after this in a cell (%s [%s])
  --rounds N           runs of each single, disjoint and hot-row cell, in a rotated
                       order, reporting the median (%d [%d])
  --floor-samples N    samples of each floor measurement (%d [%d])

Example:
  cambium bench --quick --out /tmp/bench
  CAMBIUM_S3_ACCESS_KEY=k CAMBIUM_S3_SECRET_KEY=s \
    cambium bench --pg postgres://localhost/cambium --s3 127.0.0.1:9000 --out bench-results
`, bench.DefaultSizes.Commits, bench.QuickSizes.Commits, bench.DefaultSizes.Writers, bench.QuickSizes.Writers,
	bench.DefaultSizes.PerWriter, bench.QuickSizes.PerWriter, bench.DefaultSizes.Offline, bench.QuickSizes.Offline,
	bench.DefaultSizes.Online, bench.QuickSizes.Online, bench.DefaultSizes.Versions, bench.QuickSizes.Versions,
	bench.DefaultSizes.Readers, bench.QuickSizes.Readers,
	humanize.IBytes(uint64(bench.DefaultSizes.DBBytes)), humanize.IBytes(uint64(bench.QuickSizes.DBBytes)),
	humanize.IBytes(uint64(bench.DefaultSizes.LazyBytes)), humanize.IBytes(uint64(bench.QuickSizes.LazyBytes)),
	bench.DefaultCellTime, bench.QuickCellTime, bench.DefaultRounds, bench.QuickRounds, bench.DefaultFloorIterations, bench.QuickFloorIterations)

func benchCommand() command { return command{name: "bench", run: runBench} }

func runBench(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 && args[0] == "serve" {
		// The suite's server child: its configuration comes on stdin.
		return bench.Serve(ctx, os.Stdin, env.stdout)
	}
	cfg, asJSON, err := benchConfig(env, args)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.ServerCommand = []string{exe, "bench", "serve"}
	cfg.Progress = env.stderr
	cfg.Command = "cambium bench " + strings.Join(redactArgs(args), " ")
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(env.stdout, rep)
	}
	return nil
}

// benchConfig turns the command line into the suite's configuration.
func benchConfig(env *cliEnv, args []string) (bench.Config, bool, error) {
	fs := newFlags(env, "bench", benchUsage)
	out := fs.String("out", "bench-results", "")
	quick := fs.Bool("quick", false, "")
	asJSON := fs.Bool("json", false, "")
	workloads := fs.String("workloads", "", "")
	strategies := fs.String("strategies", "", "")
	pg := fs.String("pg", os.Getenv("CAMBIUM_PG_URL"), "")
	s3 := fs.String("s3", os.Getenv("CAMBIUM_S3_ENDPOINT"), "")
	bucket := fs.String("s3-bucket", envOr("CAMBIUM_S3_BUCKET", "cambium-bench"), "")
	region := fs.String("s3-region", os.Getenv("CAMBIUM_S3_REGION"), "")
	tlsDefault, _ := strconv.ParseBool(os.Getenv("CAMBIUM_S3_TLS"))
	tls := fs.Bool("s3-tls", tlsDefault, "")
	workDir := fs.String("work-dir", "", "")
	keep := fs.Bool("keep", false, "")
	d := bench.DefaultSizes
	commits := fs.Int("commits", d.Commits, "")
	writers := fs.Int("writers", d.Writers, "")
	perWriter := fs.Int("per-writer", d.PerWriter, "")
	offline := fs.Int("offline", d.Offline, "")
	online := fs.Int("online", d.Online, "")
	versions := fs.Int("versions", d.Versions, "")
	readers := fs.Int("readers", d.Readers, "")
	dbSize := fs.String("db-size", humanize.IBytes(uint64(d.DBBytes)), "")
	lazySize := fs.String("lazy-size", humanize.IBytes(uint64(d.LazyBytes)), "")
	cellTime := fs.Duration("cell-time", bench.DefaultCellTime, "")
	floorSamples := fs.Int("floor-samples", bench.DefaultFloorIterations, "")
	rounds := fs.Int("rounds", bench.DefaultRounds, "")
	rest, err := parse(fs, args)
	if err != nil {
		return bench.Config{}, false, err
	}
	if len(rest) > 0 {
		return bench.Config{}, false, fmt.Errorf("unexpected argument %q (see cambium bench --help)", rest[0])
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := bench.Config{Out: *out, WorkDir: *workDir, Keep: *keep, PostgresURL: *pg, Quick: *quick,
		Sizes: d, CellTime: *cellTime, FloorIterations: *floorSamples, Rounds: *rounds}
	if *quick {
		cfg.Sizes = bench.QuickSizes
		if !set["cell-time"] {
			cfg.CellTime = bench.QuickCellTime
		}
		if !set["floor-samples"] {
			cfg.FloorIterations = bench.QuickFloorIterations
		}
		if !set["rounds"] {
			cfg.Rounds = bench.QuickRounds
		}
	}
	for _, f := range []struct {
		name     string
		src, dst *int
	}{
		{"commits", commits, &cfg.Sizes.Commits}, {"writers", writers, &cfg.Sizes.Writers}, {"per-writer", perWriter, &cfg.Sizes.PerWriter},
		{"offline", offline, &cfg.Sizes.Offline}, {"online", online, &cfg.Sizes.Online}, {"versions", versions, &cfg.Sizes.Versions},
		{"readers", readers, &cfg.Sizes.Readers},
	} {
		if set[f.name] { // an explicit size wins over --quick's
			*f.dst = *f.src
		}
	}
	for _, f := range []struct {
		name string
		src  *string
		dst  *int64
	}{{"db-size", dbSize, &cfg.Sizes.DBBytes}, {"lazy-size", lazySize, &cfg.Sizes.LazyBytes}} {
		if set[f.name] {
			n, err := humanize.ParseBytes(*f.src)
			if err != nil {
				return bench.Config{}, false, fmt.Errorf("--%s %q: %w", f.name, *f.src, err)
			}
			*f.dst = int64(n)
		}
	}
	if *workloads != "" {
		cfg.Workloads = strings.Split(*workloads, ",")
	}
	if *strategies != "" {
		cfg.Strategies = strings.Split(*strategies, ",")
	}
	if *s3 != "" {
		cfg.S3 = &s3store.Config{Endpoint: *s3, Bucket: *bucket, Region: *region, Secure: *tls,
			AccessKey: os.Getenv("CAMBIUM_S3_ACCESS_KEY"), SecretKey: os.Getenv("CAMBIUM_S3_SECRET_KEY")}
	}
	if cfg.Rounds < 1 {
		return bench.Config{}, false, fmt.Errorf("--rounds %d: want at least 1", cfg.Rounds)
	}
	if cfg.CellTime <= 0 {
		return bench.Config{}, false, fmt.Errorf("--cell-time %s: want a positive duration", cfg.CellTime)
	}
	return cfg, *asJSON, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// redactArgs hides a password in a --pg URL, for the report header.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if v, ok := strings.CutPrefix(a, "--pg="); ok {
			out[i] = "--pg=" + redactPassword(v)
		} else if i > 0 && (args[i-1] == "--pg" || args[i-1] == "-pg") {
			out[i] = redactPassword(a)
		}
	}
	return out
}

func redactPassword(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return u
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return scheme + "://" + user + ":xxxxx@" + host
	}
	return u
}
