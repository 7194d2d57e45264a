package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cambiumdb/cambium/api"
)

// Report is what a run measured, and on what.
type Report struct {
	Config   Config    `json:"-"`
	Machine  Machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Backends string    `json:"backends"`

	Workloads  []string `json:"workloads"`
	Strategies []string `json:"strategies"`
	Sizes      Sizes    `json:"sizes"`
	CellTime   string   `json:"cell_time"`

	DBPages uint32   `json:"db_pages"` // the database's size when the workloads start
	Floor   Floor    `json:"floor"`
	Results []Result `json:"results"`

	// The cold-lazy workload's volume: its pages and its table's rows.
	LazyPages uint32 `json:"lazy_pages,omitempty"`
	LazyRows  int64  `json:"lazy_rows,omitempty"`
}

// Result returns the cell of workload and strategy, or nil.
func (r *Report) Result(workload, strategy string) *Result {
	for i := range r.Results {
		if r.Results[i].Workload == workload && r.Results[i].Strategy == strategy {
			return &r.Results[i]
		}
	}
	return nil
}

// Run runs the suite and writes report.md, results.csv, throughput.svg
// and latency.svg into cfg.Out.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	cfg.Workloads = ordered(AllWorkloads, cfg.Workloads)
	cfg.Strategies = ordered(AllStrategies, cfg.Strategies)
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	rn := &runner{cfg: &cfg, id: runID()}
	if cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "cambium-bench-")
		if err != nil {
			return nil, err
		}
		cfg.WorkDir = d
		if !cfg.Keep {
			defer os.RemoveAll(d)
		}
	}
	rep := &Report{Config: cfg, Machine: readMachine(), Started: time.Now(),
		Workloads: cfg.Workloads, Strategies: cfg.Strategies, Sizes: cfg.Sizes, CellTime: cfg.CellTime.String()}
	rn.machine = &rep.Machine
	cleanup, err := rn.openBackends(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := cleanup(); err != nil {
			rn.logf("cleanup: %v", err)
		}
	}()
	rn.logf("run %s: %s × %s; work directory %s", rn.id, cfg.Workloads, cfg.Strategies, cfg.WorkDir)

	for _, w := range cfg.Workloads {
		var rs []Result
		var err error
		switch w {
		case CatchUp:
			rs, err = rn.catchUp(ctx)
		case ColdLazy:
			rs, err = rn.coldLazy(ctx)
		default:
			rs, err = rn.rounds(ctx, w)
		}
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, rs...)
	}
	rep.Backends, rep.DBPages = rep.backendsAbout(), rn.dbPages
	rep.LazyPages, rep.LazyRows = rn.lazyPages, rn.lazyRows

	rn.logf("floor: %d samples of a bare commit of the single writer's shape", cfg.FloorIterations)
	if rep.Floor, err = rn.floor(ctx); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if f := rep.Floor.PerCommit(); f > 0 {
		for i := range rep.Results {
			r := &rep.Results[i]
			if r.Workload != CatchUp && r.Workload != ColdLazy && r.Commits > 0 {
				r.FloorRatio = r.Seconds / float64(r.Commits) / f.Seconds()
			}
		}
	}
	rep.Machine.LoadEnd = readLoad()
	rep.Machine.sampleLoad()
	rep.Finished = time.Now()
	if err := rep.Write(cfg.Out); err != nil {
		return nil, err
	}
	rn.logf("wrote %s", filepath.Join(cfg.Out, "report.md"))
	return rep, nil
}

// runner holds what the cells of one run share.
type runner struct {
	cfg     *Config
	id      string
	pgURL   string    // the run's schema
	s3      *s3Config // the run's prefix
	dbPages uint32
	cells   int
	machine *Machine // its load is sampled at each cell

	// The cold-lazy volume, once seeded.
	lazyPages uint32
	lazyRows  int64
}

func (rn *runner) logf(format string, a ...any) {
	fmt.Fprintf(rn.cfg.Progress, "bench: "+format+"\n", a...)
}

func runID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return time.Now().UTC().Format("20060102t150405") + hex.EncodeToString(b)
}

// serverConfig is the child's configuration for a strategy; dir holds the
// embedded default's files.
func (rn *runner) serverConfig(strategy, dir string) childConfig {
	cc := childConfig{PostgresURL: rn.pgURL, S3: rn.s3, ReplayAll: strategy == ReplayAll}
	if rn.pgURL == "" || rn.s3 == nil {
		cc.DataDir = filepath.Join(dir, "server")
	}
	return cc
}

// settings is the volume's configuration under a strategy.
func settings(strategy string) api.Settings {
	switch strategy {
	case StrictPages, FullFile:
		return api.Settings{Policy: "strict"}
	case ReplayAll:
		return api.Settings{Policy: "replay", AllowDDL: true} // the seed's CREATE TABLEs are replayed too
	}
	return api.Settings{Policy: "replay"}
}

// cell is one workload under one strategy on a server of its own.
// restartCold restarts the cell's server, a new process with its page
// cache empty, so that strategy st's readers (catch-up, cold-lazy) start
// cold; it returns the cell that measures them and their metered client.
func (c *cell) restartCold(ctx context.Context, st string) (*cell, *api.Client, error) {
	if err := c.srv.Stop(); err != nil {
		return nil, nil, err
	}
	srv, err := startServer(ctx, c.rn.cfg, c.rn.serverConfig(Hybrid, c.dir))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: restart the server: %w", c.workload, err)
	}
	c.srv, c.admin = srv, api.NewClient(srv.URL)
	sub := &cell{rn: c.rn, workload: c.workload, strategy: st, dir: c.dir, volume: c.volume, srv: c.srv, meter: c.meter, tally: &tally{}, admin: c.admin}
	return sub, c.meter.client(c.srv.URL), nil
}

type cell struct {
	rn                 *runner
	workload, strategy string
	dir                string
	volume             string
	srv                *serverProc
	meter              *meter
	tally              *tally
	admin              *api.Client // setup traffic, not counted

	// The measured phase, which may come in several parts (catch-up).
	mu struct {
		sync.Mutex
		lat     []time.Duration
		elapsed time.Duration
		cpu     time.Duration
		cpuErr  error
		client  time.Duration
		up      int64
		down    int64
	}
	attempted atomic.Int64
	planned   int64 // transactions the workload meant to settle
	limited   atomic.Bool
	stop      time.Time // no new transaction after it
	t0        time.Time
	cpu0      time.Duration
	client0   time.Duration
	up0       int64
	down0     int64
}

// newCell starts a server child for the cell and creates its volume.
func (rn *runner) newCell(ctx context.Context, workload, strategy string) (*cell, error) {
	rn.cells++
	rn.machine.sampleLoad()
	// Volumes of every cell share the run's schema on PostgreSQL.
	c := &cell{rn: rn, workload: workload, strategy: strategy, volume: fmt.Sprintf("%s.%s.%d", workload, strategy, rn.cells), meter: newMeter(), tally: &tally{}}
	c.dir = filepath.Join(rn.cfg.WorkDir, c.volume)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	srvStrategy := strategy
	if workload == CatchUp {
		srvStrategy = Hybrid // one history, written once, read by every strategy
	}
	var err error
	if c.srv, err = startServer(ctx, rn.cfg, rn.serverConfig(srvStrategy, c.dir)); err != nil {
		return nil, err
	}
	c.admin = api.NewClient(c.srv.URL)
	if _, err := c.admin.CreateVolume(ctx, c.volume, 0); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.admin.Configure(ctx, c.volume, settings(srvStrategy)); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *cell) close() error {
	c.meter.close()
	if c.srv == nil {
		return nil
	}
	return c.srv.Stop()
}

// open opens client name of the cell's strategy, a clone of the volume's
// head, counted by the cell's meter and tally.
func (c *cell) open(ctx context.Context, name string) (writer, error) {
	cl := c.meter.client(c.srv.URL)
	path := filepath.Join(c.dir, name+".db")
	if c.strategy == FullFile {
		return openFileClient(ctx, path, c.volume, "bench-"+name, api.DefaultPageSize, cl, c.tally)
	}
	w, err := openReplicaWriter(ctx, path, c.volume, cl, c.tally)
	if err != nil {
		return nil, err
	}
	if err := w.CatchUp(ctx); err != nil {
		w.Close(ctx)
		return nil, err
	}
	return w, nil
}

// begin starts (a part of) the measured phase.
func (c *cell) begin() {
	c.t0 = time.Now()
	c.stop = c.t0.Add(c.rn.cfg.CellTime)
	c.up0, c.down0 = c.meter.up.Load(), c.meter.down.Load()
	var err error
	if c.cpu0, err = c.srv.CPU(); err != nil {
		c.mu.Lock()
		c.mu.cpuErr = err
		c.mu.Unlock()
	}
	c.client0, _ = procCPU(os.Getpid())
	c.tally.active.Store(true)
}

// end ends the part of the measured phase that begin started.
func (c *cell) end() {
	c.tally.active.Store(false)
	elapsed := time.Since(c.t0)
	cpu, err := c.srv.CPU()
	client, _ := procCPU(os.Getpid())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.elapsed += elapsed
	if err != nil {
		c.mu.cpuErr = err
	}
	c.mu.cpu += cpu - c.cpu0
	c.mu.client += client - c.client0
	c.mu.up += c.meter.up.Load() - c.up0
	c.mu.down += c.meter.down.Load() - c.down0
}

func (c *cell) latency(d time.Duration) {
	c.mu.Lock()
	c.mu.lat = append(c.mu.lat, d)
	c.mu.Unlock()
}

// result sums up the measured phase; commits is what it stored (catch-up:
// versions read).
func (c *cell) result(commits int64) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tally
	r := Result{
		Workload: c.workload, Strategy: c.strategy,
		Commits: commits, Attempted: c.attempted.Load(), Seconds: c.mu.elapsed.Seconds(),
		P50: quantile(c.mu.lat, 0.5), P99: quantile(c.mu.lat, 0.99),
		BytesUp: c.mu.up, BytesDown: c.mu.down,
		FastPath: t.fastPath.Load(), Merged: t.merged.Load(), Replayed: t.replayed.Load(), Rejected: t.rejected.Load(),
		Retries: t.retries.Load(), ServerCPU: c.mu.cpu.Seconds(), CPUPerThousand: -1, Limited: c.limited.Load(),
	}
	if c.mu.cpuErr != nil {
		r.ServerCPU = -1
	}
	if r.Limited {
		r.Note = fmt.Sprintf("stopped at the %s time limit: %d of %d transactions stored", c.rn.cfg.CellTime, commits, c.planned)
	}
	if commits > 0 {
		r.PerSecond = float64(commits) / math.Max(r.Seconds, 1e-9)
		r.UpPerCommit = float64(r.BytesUp) / float64(commits)
		r.DownPerCommit = float64(r.BytesDown) / float64(commits)
		if r.ServerCPU >= 0 {
			r.CPUPerThousand = r.ServerCPU / float64(commits) * 1000
			r.ClientCPUPerThousand = c.mu.client.Seconds() / float64(commits) * 1000
		}
	}
	return r
}

// rounds runs a workload under every strategy Config.Rounds times (offline
// once: one client pushing, and the longest cells). Each round takes the
// strategies in another order, so that a change in the machine's load (it
// is shared) does not always fall on the same one; a cell reports its
// median round by commits/s.
func (rn *runner) rounds(ctx context.Context, workload string) ([]Result, error) {
	n, strategies := rn.cfg.Rounds, rn.cfg.Strategies
	if workload == Offline {
		n = 1
	}
	all := make(map[string][]Result)
	for round := range n {
		for k := range strategies {
			s := strategies[(k+round)%len(strategies)]
			name := fmt.Sprintf("%s × %s", workload, s)
			if n > 1 {
				name += fmt.Sprintf(" (round %d of %d)", round+1, n)
			}
			rn.logf("%s: starting", name)
			r, err := rn.cell(ctx, workload, s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			rn.logf("%s: %s", name, summary(&r))
			all[s] = append(all[s], r)
		}
	}
	out := make([]Result, len(strategies))
	for i, s := range strategies {
		out[i] = median(all[s])
	}
	return out, nil
}

// median returns the round with the median commits/s (the lower of the
// two middle ones for an even count), with the range over every round.
func median(rs []Result) Result {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Result) int { return cmp.Compare(a.PerSecond, b.PerSecond) })
	m := rs[(len(rs)-1)/2]
	m.Rounds, m.PerSecondMin, m.PerSecondMax = len(rs), rs[0].PerSecond, rs[len(rs)-1].PerSecond
	for _, r := range rs {
		if r.Limited && !m.Limited {
			m.Limited, m.Note = true, "stopped at the time limit in another round"
		}
	}
	return m
}

// cell runs one workload under one strategy on a server of its own.
func (rn *runner) cell(ctx context.Context, workload, strategy string) (Result, error) {
	c, err := rn.newCell(ctx, workload, strategy)
	if err != nil {
		return Result{}, err
	}
	r, err := c.run(ctx)
	if cerr := c.close(); err == nil && cerr != nil {
		err = cerr
	}
	return r, err
}

func summary(r *Result) string {
	s := fmt.Sprintf("%d commits in %.1f s, %.0f/s, p50 %s p99 %s, %.0f B up %.0f B down per commit",
		r.Commits, r.Seconds, r.PerSecond, ms(r.P50), ms(r.P99), r.UpPerCommit, r.DownPerCommit)
	if r.Decisions() > 0 {
		s += fmt.Sprintf(", decisions %d/%d/%d/%d (fast/merged/replayed/rejected), %d retries", r.FastPath, r.Merged, r.Replayed, r.Rejected, r.Retries)
	}
	if r.Limited {
		s += " [stopped at the time limit]"
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// errCheck marks a workload's end state that does not add up.
var errCheck = errors.New("state check failed")
