package bench

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cambiumdb/cambium/pages/s3store"
)

// Workloads, in the order the report shows them.
const (
	Single   = "single"    // one writer, small transactions, a push after each
	Disjoint = "disjoint"  // Sizes.Writers writers, each on a table of its own
	HotRow   = "hot-row"   // Sizes.Writers writers incrementing one row
	Offline  = "offline"   // a replica makes Sizes.Offline commits offline, then pushes
	CatchUp  = "catch-up"  // a replica pulls Sizes.Versions versions at once
	ColdLazy = "cold-lazy" // a new lazy replica's first query on a volume of Sizes.LazyBytes
)

// Strategies, in the order the report shows them.
const (
	Hybrid      = "hybrid"
	StrictPages = "strict-pages"
	ReplayAll   = "replay-all"
	FullFile    = "full-file"
)

var (
	// AllWorkloads are the workloads that run by default.
	AllWorkloads = []string{Single, Disjoint, HotRow, Offline, CatchUp, ColdLazy}
	// AllStrategies are the strategies that run by default.
	AllStrategies = []string{Hybrid, StrictPages, ReplayAll, FullFile}
)

// Sizes are the workloads' sizes.
type Sizes struct {
	Commits   int   `json:"commits"`    // single: the writer's transactions
	Writers   int   `json:"writers"`    // disjoint, hot-row: concurrent writers
	PerWriter int   `json:"per_writer"` // disjoint, hot-row: transactions per writer
	Offline   int   `json:"offline"`    // offline: commits made offline, then pushed
	Online    int   `json:"online"`     // offline: commits another writer pushes meanwhile
	Versions  int   `json:"versions"`   // catch-up: versions a reader is behind
	Readers   int   `json:"readers"`    // catch-up, cold-lazy: readers timed per strategy
	DBBytes   int64 `json:"db_bytes"`   // every workload but cold-lazy: rows preloaded before it starts, in bytes of row data
	LazyBytes int64 `json:"lazy_bytes"` // cold-lazy: the volume's size in bytes (about: it holds whole rows)
}

// DefaultSizes finish in under 5 minutes on a 2-core machine with
// PostgreSQL + MinIO (cells that reach Config.CellTime stop early).
var DefaultSizes = Sizes{Commits: 150, Writers: 8, PerWriter: 30, Offline: 1000, Online: 100, Versions: 10000, Readers: 3, DBBytes: 1 << 20, LazyBytes: 1 << 30}

// QuickSizes finish in under a minute on the embedded default.
var QuickSizes = Sizes{Commits: 50, Writers: 8, PerWriter: 10, Offline: 100, Online: 10, Versions: 1000, Readers: 2, DBBytes: 256 << 10, LazyBytes: 16 << 20}

// Defaults for Config.
const (
	DefaultCellTime        = 6 * time.Second
	QuickCellTime          = 4 * time.Second
	DefaultFloorIterations = 200
	QuickFloorIterations   = 50
	DefaultRounds          = 3
	QuickRounds            = 1
)

// Config is one run of the suite.
type Config struct {
	Out             string        // output directory for report.md, results.csv and the charts; created if missing
	Workloads       []string      // AllWorkloads if empty
	Strategies      []string      // AllStrategies if empty
	Sizes           Sizes         // DefaultSizes if zero
	CellTime        time.Duration // soft limit on one cell's measured phase: no new transaction starts after it; DefaultCellTime if 0
	FloorIterations int           // samples of each floor measurement; DefaultFloorIterations if 0
	Rounds          int           // times each cell runs, in rotating order, reporting the median (offline and catch-up run once); DefaultRounds if 0

	// Backends. With neither PostgresURL nor S3, the server runs on the
	// embedded default under WorkDir.
	PostgresURL string          // PostgreSQL metastore: the run gets a schema of its own, dropped at the end
	S3          *s3store.Config // S3/MinIO page store: the run's objects go under a prefix of their own, deleted at the end
	WorkDir     string          // scratch space for replicas and the embedded server; a temporary directory if empty
	Keep        bool            // keep WorkDir, the schema and the objects

	// ServerCommand is the command line that runs Serve in a child process
	// (`cambium bench serve`); the server's flags are appended. Required.
	ServerCommand []string
	// ServerEnv is added to the child's environment.
	ServerEnv []string

	Progress io.Writer // a line per step on stderr; io.Discard if nil
	Command  string    // the command line, for the report header
	Quick    bool      // recorded in the report header
}

func (c *Config) setDefaults() error {
	if len(c.Workloads) == 0 {
		c.Workloads = AllWorkloads
	}
	if len(c.Strategies) == 0 {
		c.Strategies = AllStrategies
	}
	if c.Sizes == (Sizes{}) {
		c.Sizes = DefaultSizes
	}
	if c.CellTime == 0 {
		c.CellTime = DefaultCellTime
	}
	if c.FloorIterations == 0 {
		c.FloorIterations = DefaultFloorIterations
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
	if c.Rounds < 0 || c.CellTime < 0 || c.FloorIterations < 0 {
		return fmt.Errorf("rounds %d, cell time %s, floor iterations %d: none may be negative", c.Rounds, c.CellTime, c.FloorIterations)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Out == "" {
		return errors.New("no output directory")
	}
	if len(c.ServerCommand) == 0 {
		return errors.New("no server command")
	}
	for _, w := range c.Workloads {
		if !slices.Contains(AllWorkloads, w) {
			return fmt.Errorf("unknown workload %q: want some of %s", w, strings.Join(AllWorkloads, ","))
		}
	}
	for _, s := range c.Strategies {
		if !slices.Contains(AllStrategies, s) {
			return fmt.Errorf("unknown strategy %q: want some of %s", s, strings.Join(AllStrategies, ","))
		}
	}
	s := c.Sizes
	for _, f := range []struct {
		name string
		v    int
	}{{"commits", s.Commits}, {"writers", s.Writers}, {"per-writer", s.PerWriter}, {"offline", s.Offline}, {"online", s.Online}, {"versions", s.Versions}, {"readers", s.Readers}} {
		if f.v < 1 {
			return fmt.Errorf("size %s = %d: want at least 1", f.name, f.v)
		}
	}
	if s.Writers > maxWriters {
		return fmt.Errorf("size writers = %d: at most %d (replicas open in one process)", s.Writers, maxWriters)
	}
	if s.DBBytes < 0 {
		return fmt.Errorf("size db-bytes = %d: want 0 or more", s.DBBytes)
	}
	if slices.Contains(c.Workloads, ColdLazy) && (s.LazyBytes < minLazyBytes || s.LazyBytes > maxLazyBytes) {
		return fmt.Errorf("size lazy-bytes = %d: want %d to %d", s.LazyBytes, minLazyBytes, int64(maxLazyBytes))
	}
	return nil
}

// Bounds on Sizes.LazyBytes: enough rows for an index of more than one
// level, and far fewer pages than a volume may hold (2^32).
const (
	minLazyBytes = 256 << 10
	maxLazyBytes = 1 << 40
)

// maxWriters keeps a cell's replicas within replica.MaxReplicas.
const maxWriters = 24

// ordered returns the members of want in the order of all.
func ordered(all, want []string) []string {
	var out []string
	for _, a := range all {
		if slices.Contains(want, a) {
			out = append(out, a)
		}
	}
	return out
}
