package bench_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/bench"
	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages/s3store"
)

// childEnv makes this test binary the suite's server child (bench.Serve)
// instead of running tests: the suite re-executes it with it set.
const childEnv = "CAMBIUM_BENCH_TEST_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := bench.Serve(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tiny are sizes that exercise every code path in seconds.
var tiny = bench.Sizes{Commits: 5, Writers: 3, PerWriter: 3, Offline: 20, Online: 3, Versions: 60, Readers: 2, DBBytes: 32 << 10, LazyBytes: 4 << 20}

func tinyConfig(t *testing.T) bench.Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return bench.Config{
		Out: t.TempDir(), WorkDir: t.TempDir(), Sizes: tiny, CellTime: time.Minute, FloorIterations: 5, Rounds: 1,
		ServerCommand: []string{exe},
		// Under -race, a process sleeps 1 s at exit for late reports: a
		// second per cell for the children.
		ServerEnv: []string{childEnv + "=1", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")},
		Progress:  testWriter{t, time.Now()},
	}
}

// testWriter logs progress lines with the time since the test started.
type testWriter struct {
	t     *testing.T
	start time.Time
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%5.1fs %s", time.Since(w.start).Seconds(), strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestRun_Embedded runs every workload under every strategy on the
// embedded default and checks that every cell is filled and plausible,
// and that the report, the CSV and the charts are written and parse.
func TestRun_Embedded(t *testing.T) {
	cfg := tinyConfig(t)
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, cfg.Out, bench.AllWorkloads)
}

// TestRun_PostgresMinIO is the same on PostgreSQL + MinIO, where the floor
// is a PostgreSQL transaction and a MinIO PUT.
func TestRun_PostgresMinIO(t *testing.T) {
	pg := testutil.MustPostgresURL(t)
	s3 := testutil.MustS3(t)
	cfg := tinyConfig(t)
	cfg.PostgresURL = pg
	cfg.S3 = &s3store.Config{Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, Bucket: "cambium-bench-" + testutil.RandomName(6)}
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, cfg.Out, bench.AllWorkloads)
	if rep.Floor.Meta != "PostgreSQL transaction" || rep.Floor.Store != "S3 PUT" {
		t.Fatalf("floor on %q and %q, want PostgreSQL and S3", rep.Floor.Meta, rep.Floor.Store)
	}
}

func checkReport(t *testing.T, rep *bench.Report, out string, workloads []string) {
	t.Helper()
	for _, w := range workloads {
		for _, s := range bench.AllStrategies {
			r := rep.Result(w, s)
			if r == nil {
				t.Errorf("%s × %s: no result", w, s)
				continue
			}
			if err := plausible(r, rep); err != nil {
				t.Errorf("%s × %s: %v\n%+v", w, s, err, *r)
			}
		}
	}
	f := rep.Floor
	if f.Pages < 1 || f.SegmentBytes < 1 || f.MetaP50 <= 0 || f.StoreP50 <= 0 || f.MetaP50 > f.MetaP99 || f.StoreP50 > f.StoreP99 {
		t.Errorf("floor %+v: want pages, bytes and ordered latencies", f)
	}
	if rep.DBPages < 2 {
		t.Errorf("database of %d pages: the preload did not happen", rep.DBPages)
	}
	if lazy := int64(rep.LazyPages) * 4096; lazy < tiny.LazyBytes*3/4 || lazy > tiny.LazyBytes*5/4 {
		t.Errorf("cold-lazy volume of %d pages, %d bytes: want about %d", rep.LazyPages, lazy, tiny.LazyBytes)
	}

	md := mustRead(t, filepath.Join(out, bench.ReportFile))
	for _, want := range append(workloads, "## Headline", "## Floor", "**cold-lazy** on a", "first query alone", bench.ThroughputFile, bench.LatencyFile, "load average") {
		if !strings.Contains(md, want) {
			t.Errorf("%s lacks %q", bench.ReportFile, want)
		}
	}
	rows, err := csv.NewReader(strings.NewReader(mustRead(t, filepath.Join(out, bench.CSVFile)))).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", bench.CSVFile, err)
	}
	if want := 1 + len(workloads)*len(bench.AllStrategies); len(rows) != want {
		t.Errorf("%s has %d rows, want %d (header, cells)", bench.CSVFile, len(rows), want)
	}
	// The throughput chart leaves catch-up and cold-lazy out.
	checkSVG(t, bench.ThroughputFile, mustRead(t, filepath.Join(out, bench.ThroughputFile)), len(workloads)-2)
	checkSVG(t, bench.LatencyFile, mustRead(t, filepath.Join(out, bench.LatencyFile)), len(workloads))
}

// plausible checks one cell's figures against each other and against what
// its strategy must produce.
func plausible(r *bench.Result, rep *bench.Report) error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if r.Commits <= 0 || r.Seconds <= 0 || r.PerSecond <= 0 {
		fail("commits %d in %.3f s (%.1f/s): want some", r.Commits, r.Seconds, r.PerSecond)
	}
	if r.P50 <= 0 || r.P50 > r.P99 {
		fail("p50 %s, p99 %s: want 0 < p50 <= p99", r.P50, r.P99)
	}
	if r.BytesUp <= 0 || r.BytesDown <= 0 || r.UpPerCommit <= 0 || r.DownPerCommit <= 0 {
		fail("bytes up %d, down %d: want both > 0", r.BytesUp, r.BytesDown)
	}
	if runtime.GOOS == "linux" && (r.ServerCPU < 0 || r.CPUPerThousand < 0) {
		fail("server CPU %.3f s: unknown on Linux", r.ServerCPU)
	}
	if r.Limited {
		fail("stopped at the time limit")
	}
	if r.Workload == bench.CatchUp {
		if r.Commits != int64(tiny.Versions*tiny.Readers) {
			fail("caught up on %d versions, want %d", r.Commits, tiny.Versions*tiny.Readers)
		}
		if r.Strategy == bench.FullFile && r.DownPerCommit*float64(tiny.Versions) < float64(rep.DBPages)*4096 {
			fail("full-file caught up with %.0f bytes per reader, less than the %d-page file", r.DownPerCommit*float64(tiny.Versions), rep.DBPages)
		}
		return errors.Join(errs...)
	}
	if r.Workload == bench.ColdLazy {
		lazyPages, lazyBytes := int64(rep.LazyPages), float64(rep.LazyPages)*4096
		if r.Commits != int64(tiny.Readers) || r.Attempted != int64(tiny.Readers) {
			fail("%d first queries of %d readers, want %d", r.Commits, r.Attempted, tiny.Readers)
		}
		if r.QueryP50 <= 0 || r.QueryP50 > r.QueryP99 || r.QueryP99 > r.P99 {
			fail("query alone p50 %s, p99 %s, with the clone p99 %s: want 0 < p50 <= p99 <= the clone's", r.QueryP50, r.QueryP99, r.P99)
		}
		if r.Decisions() != 0 || r.FloorRatio != 0 {
			fail("%d decisions, floor ratio %.2f: a reader commits nothing", r.Decisions(), r.FloorRatio)
		}
		if r.Strategy == bench.FullFile {
			if r.DownPerCommit < lazyBytes || r.PagesFetched != lazyPages*r.Commits {
				fail("full-file reader brought down %.0f bytes, %d pages in all: want the whole %d-page file each", r.DownPerCommit, r.PagesFetched, lazyPages)
			}
		} else if r.PagesFetched <= 0 || r.PagesFetched/r.Commits > lazyPages/8 || r.DownPerCommit > lazyBytes/8 {
			fail("lazy reader fetched %d pages, %.0f bytes: want some, far fewer than the %d-page volume", r.PagesFetched/max(r.Commits, 1), r.DownPerCommit, lazyPages)
		}
		return errors.Join(errs...)
	}
	sum := r.Share(r.FastPath) + r.Share(r.Merged) + r.Share(r.Replayed) + r.Share(r.Rejected)
	if math.Abs(sum-1) > 1e-9 {
		fail("decision shares sum to %f, want 1", sum)
	}
	if stored := r.FastPath + r.Merged + r.Replayed; stored != r.Commits {
		fail("%d commits but %d stored decisions", r.Commits, stored)
	}
	if r.Retries > r.Rejected {
		fail("%d retries of %d rejections", r.Retries, r.Rejected)
	}
	if r.FloorRatio <= 0 {
		fail("no ratio to the floor")
	}
	want := map[string]int64{bench.Single: int64(tiny.Commits), bench.Disjoint: int64(tiny.Writers * tiny.PerWriter), bench.HotRow: int64(tiny.Writers * tiny.PerWriter), bench.Offline: int64(tiny.Offline)}
	if r.Commits != want[r.Workload] {
		fail("%d commits, want %d", r.Commits, want[r.Workload])
	}
	switch r.Strategy {
	case bench.Hybrid:
		if r.Rejected != 0 {
			fail("%d rejected under hybrid", r.Rejected)
		}
		if r.Workload == bench.Single && r.FastPath != r.Commits {
			fail("a lone writer's commits were not all fast-path")
		}
	case bench.ReplayAll:
		if r.Replayed != r.Commits {
			fail("%d of %d commits replayed under replay-all", r.Replayed, r.Commits)
		}
	case bench.StrictPages, bench.FullFile:
		if r.Merged != 0 || r.Replayed != 0 || r.Rejected != r.Retries {
			fail("merged %d, replayed %d, rejected %d with %d retries: want only fast-path and stale rejections", r.Merged, r.Replayed, r.Rejected, r.Retries)
		}
	}
	if r.Strategy == bench.FullFile && r.UpPerCommit < float64(rep.DBPages)*4096 {
		fail("full-file sent %.0f bytes per commit, less than the %d-page file", r.UpPerCommit, rep.DBPages)
	}
	return errors.Join(errs...)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSVG parses an SVG file as XML and checks it draws a bar for each
// strategy in each of groups workloads.
func checkSVG(t *testing.T, name, s string, groups int) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	var root string
	rects := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s does not parse as XML: %v", name, err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "rect" {
				rects++
			}
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", name, root)
	}
	// A background, a legend swatch per strategy and a bar per cell.
	if want := 1 + len(bench.AllStrategies) + groups*len(bench.AllStrategies); rects < want {
		t.Fatalf("%s has %d rects, want at least %d", name, rects, want)
	}
}

// TestRun_Rounds: with several rounds a cell reports its median round and
// the range of commits/s over them.
func TestRun_Rounds(t *testing.T) {
	cfg := tinyConfig(t)
	cfg.Workloads, cfg.Strategies, cfg.Rounds = []string{bench.Single}, []string{bench.Hybrid, bench.StrictPages}, 3
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Strategies {
		r := rep.Result(bench.Single, s)
		if r == nil || r.Rounds != 3 || r.PerSecondMin > r.PerSecond || r.PerSecond > r.PerSecondMax || r.Commits != int64(tiny.Commits) {
			t.Fatalf("%s: %+v: want 3 rounds around the median", s, r)
		}
	}
	if md := mustRead(t, filepath.Join(cfg.Out, bench.ReportFile)); !strings.Contains(md, "| rounds | 3") {
		t.Fatalf("%s does not say how many rounds ran", bench.ReportFile)
	}
}

func TestRun_BadConfig(t *testing.T) {
	for name, mod := range map[string]func(*bench.Config){
		"UnknownWorkload": func(c *bench.Config) { c.Workloads = []string{"nope"} },
		"UnknownStrategy": func(c *bench.Config) { c.Strategies = []string{"nope"} },
		"LazyTooSmall":    func(c *bench.Config) { c.Workloads, c.Sizes.LazyBytes = []string{bench.ColdLazy}, 4096 },
		"NoWriters":       func(c *bench.Config) { c.Sizes.Writers = 0 },
		"NegativeRounds":  func(c *bench.Config) { c.Rounds = -1 },
		"NoServer":        func(c *bench.Config) { c.ServerCommand = nil },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig(t)
			mod(&cfg)
			if _, err := bench.Run(context.Background(), cfg); err == nil {
				t.Fatal("Run succeeded")
			}
		})
	}
}

// TestServe_Child checks the child's protocol on its own: a config line in,
// a ready line with the URL out, and a clean exit at stdin's EOF.
func TestServe_Child(t *testing.T) {
	in, w := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- bench.Serve(context.Background(), in, &syncWriter{b: &out}) }()
	fmt.Fprintf(w, `{"data_dir":%q}`+"\n", t.TempDir())
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(readSync(&out), "\n") {
		if time.Now().After(deadline) {
			t.Fatal("no ready line after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := readSync(&out); !strings.Contains(s, `"url":"http://127.0.0.1:`) {
		t.Fatalf("ready line %q lacks the URL", s)
	}
	w.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after stdin closed")
	}
}

var outMu sync.Mutex

type syncWriter struct{ b *bytes.Buffer }

func (w *syncWriter) Write(p []byte) (int, error) {
	outMu.Lock()
	defer outMu.Unlock()
	return w.b.Write(p)
}

func readSync(b *bytes.Buffer) string {
	outMu.Lock()
	defer outMu.Unlock()
	return b.String()
}
