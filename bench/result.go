package bench

import (
	"math"
	"slices"
	"time"
)

// Result is one cell of the suite: a workload under a strategy.
type Result struct {
	Workload string `json:"workload"`
	Strategy string `json:"strategy"`

	// Commits counts the commits the server stored during the measured
	// phase (catch-up: versions caught up, summed over readers; cold-lazy:
	// first queries answered); Attempted the transactions the workload ran
	// (catch-up, cold-lazy: readers).
	Commits   int64   `json:"commits"`
	Attempted int64   `json:"attempted"`
	Seconds   float64 `json:"seconds"` // the measured phase's wall time
	PerSecond float64 `json:"commits_per_s"`

	// Latency of one commit, from the start of its local transaction to the
	// decision that settled it, retries included (offline: from the start
	// of the push; catch-up: one reader's whole pull; cold-lazy: one
	// reader's clone and first query).
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// Cold-lazy only: the first query alone, without the clone before it,
	// and the pages the readers brought down (a lazy replica's fetches, the
	// full-file client's whole file), summed over them.
	QueryP50     time.Duration `json:"query_p50_ns,omitempty"`
	QueryP99     time.Duration `json:"query_p99_ns,omitempty"`
	PagesFetched int64         `json:"pages_fetched,omitempty"`

	BytesUp        int64   `json:"bytes_up"` // on the clients' TCP connections, HTTP included
	BytesDown      int64   `json:"bytes_down"`
	UpPerCommit    float64 `json:"bytes_up_per_commit"`
	DownPerCommit  float64 `json:"bytes_down_per_commit"`
	FastPath       int64   `json:"fast_path"` // decisions received, retries included
	Merged         int64   `json:"merged"`
	Replayed       int64   `json:"replayed"`
	Rejected       int64   `json:"rejected"`
	Retries        int64   `json:"retries"`             // commits rejected as stale and sent again
	ServerCPU      float64 `json:"server_cpu_s"`        // the server process's CPU seconds in the measured phase; -1 if unknown
	CPUPerThousand float64 `json:"server_cpu_s_per_1k"` // ServerCPU per 1,000 commits; -1 if unknown
	// ClientCPUPerThousand is the suite's own process (every client of the
	// cell) per 1,000 commits: they share the machine's cores with the server.
	ClientCPUPerThousand float64 `json:"client_cpu_s_per_1k"`
	FloorRatio           float64 `json:"cost_floor_ratio,omitempty"` // wall time per commit over the floor's; 0 when it does not apply
	Limited              bool    `json:"limited,omitempty"`          // stopped at Config.CellTime (in any round)
	// Rounds is how many times the cell ran; the figures are those of the
	// round with the median commits/s, whose range over the rounds is
	// PerSecondMin to PerSecondMax.
	Rounds       int     `json:"rounds"`
	PerSecondMin float64 `json:"commits_per_s_min"`
	PerSecondMax float64 `json:"commits_per_s_max"`
	Note         string  `json:"note,omitempty"`
}

// Decisions is how many decisions the cell received.
func (r *Result) Decisions() int64 { return r.FastPath + r.Merged + r.Replayed + r.Rejected }

// Share returns n as a share of the decisions, or 0 without any.
func (r *Result) Share(n int64) float64 {
	if d := r.Decisions(); d > 0 {
		return float64(n) / float64(d)
	}
	return 0
}

// quantile returns the q-quantile of ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s))-1e-9)) - 1
	return s[max(0, min(len(s)-1, i))]
}
