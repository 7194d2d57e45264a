package bench

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/replica"
)

// Files a run writes into Config.Out.
const (
	ReportFile     = "report.md"
	CSVFile        = "results.csv"
	ThroughputFile = "throughput.svg"
	LatencyFile    = "latency.svg"
)

var workloadAbout = map[string]string{
	Single:   "one replica, one small transaction at a time (an INSERT of a ~100-byte row and an UPDATE of a counter), pushed until decided before the next",
	Disjoint: "%d replicas at once, each updating the rows of a table of its own, each pushing after every transaction until it is decided",
	HotRow:   "%d replicas at once, each incrementing the same row, each pushing after every transaction until it is decided",
	Offline:  "a replica makes %s commits (inserts into a table of its own) while offline, as another pushes %s updates to another table; then it pushes them all. Measured: that push; a commit's latency runs from its start",
	CatchUp:  "a reader left at the seeded version pulls the %s versions one replica wrote meanwhile (its inserts, pushed in batches). A hybrid server wrote the history once; each strategy's %d readers catch up on it in turn: replicas (hybrid, strict-pages, replay-all: the same pull protocol, so their rows differ by noise only) fetch each changed page once, the full-file client downloads every page at head. The server restarts before each strategy's readers: the first finds its page cache cold (p99), the others warm (p50). Commits are versions caught up; latency is one reader's whole catch-up",
	ColdLazy: "a new reader clones a volume of %s (%s rows: an integer primary key, a key in no order related to it and about 300 bytes of text, with an index on the key) and runs one point query by key, on a random key: it reads the index and then the table, a handful of pages. " +
		"The volume was built once with plain SQLite and pushed to a hybrid server as a few large commits (setup, not measured). " +
		"Each strategy's %d readers then read it in turn. hybrid is a lazy replica: its clone learns the head and its page count and fetches no page, and the query fetches each page it reads that the replica lacks, with the next %d it lacks (read-ahead). " +
		"strict-pages and replay-all run the same lazy replica against the same server: their settings decide commits, and a reader makes none, so their rows differ from hybrid's by noise only. " +
		"full-file downloads the whole file, then queries it. " +
		"The server restarts before each strategy's readers: the first finds its page cache cold (p99), the others warm (p50). Latency is one reader's clone and first query; the query alone is shown apart",
}

func (r *Report) about(w string) string {
	s := r.Config.Sizes
	switch w {
	case Disjoint, HotRow:
		return fmt.Sprintf(workloadAbout[w], s.Writers)
	case Offline:
		return fmt.Sprintf(workloadAbout[w], commas(int64(s.Offline)), commas(int64(s.Online)))
	case CatchUp:
		return fmt.Sprintf(workloadAbout[w], commas(int64(s.Versions)), s.Readers)
	case ColdLazy:
		return fmt.Sprintf(workloadAbout[w], bytesStr(float64(r.lazyBytes())), commas(r.LazyRows), s.Readers, replica.DefaultReadAhead)
	}
	return workloadAbout[w]
}

// Write writes report.md, results.csv and the charts into dir.
func (r *Report) Write(dir string) error {
	files := map[string][]byte{
		ReportFile:     r.Markdown(),
		CSVFile:        r.CSV(),
		ThroughputFile: r.throughputChart().SVG(),
		LatencyFile:    r.latencyChart().SVG(),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (r *Report) workloads() []string {
	var out []string
	for _, res := range r.Results {
		if len(out) == 0 || out[len(out)-1] != res.Workload {
			out = append(out, res.Workload)
		}
	}
	return out
}

func (r *Report) strategies() []string { return r.Config.Strategies }

// lazyBytes is the cold-lazy volume's size: as seeded, or as asked.
func (r *Report) lazyBytes() int64 {
	if r.LazyPages > 0 {
		return int64(r.LazyPages) * api.DefaultPageSize
	}
	return r.Config.Sizes.LazyBytes
}

// throughputChart leaves catch-up and cold-lazy out: versions pulled or
// readers served per second are not commits per second, and would squash
// the other bars.
func (r *Report) throughputChart() *barChart {
	var groups []string
	for _, w := range r.workloads() {
		if w != CatchUp && w != ColdLazy {
			groups = append(groups, w)
		}
	}
	c := &barChart{Title: "Throughput: commits stored per second", YLabel: "commits/s (log scale)",
		Groups: groups, Series: r.strategies(), Format: num}
	for _, w := range c.Groups {
		row := make([]float64, len(c.Series))
		for i, s := range c.Series {
			if res := r.Result(w, s); res != nil {
				row[i] = res.PerSecond
			}
		}
		c.Values = append(c.Values, row)
	}
	return c
}

func (r *Report) latencyChart() *barChart {
	c := &barChart{Title: "Latency p50 and p99: commit to decision (catch-up: one pull; cold-lazy: clone + query)", YLabel: "milliseconds (log scale)",
		Groups: r.workloads(), Series: r.strategies(), Format: num}
	for _, w := range c.Groups {
		p50, p99 := make([]float64, len(c.Series)), make([]float64, len(c.Series))
		for i, s := range c.Series {
			if res := r.Result(w, s); res != nil {
				p50[i], p99[i] = msf(res.P50), msf(res.P99)
			}
		}
		c.Values, c.Upper = append(c.Values, p50), append(c.Upper, p99)
	}
	return c
}

func msf(d time.Duration) float64 { return float64(d) / 1e6 }

// num formats a positive number with about three significant digits.
func num(v float64) string {
	switch {
	case v >= 1000:
		return commas(int64(v + 0.5))
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v > 0:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
	return "0"
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func bytesStr(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.2f MiB", v/(1<<20))
	case v >= 10<<10:
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	case v > 0 && v < 10:
		return fmt.Sprintf("%.1f B", v)
	}
	return fmt.Sprintf("%.0f B", v)
}

// ratio formats how many times one throughput is another's.
func ratio(x float64) string {
	if x >= 10 {
		return fmt.Sprintf("%.0f×", x)
	}
	if x >= 1 {
		return fmt.Sprintf("%.1f×", x)
	}
	return fmt.Sprintf("%.2f×", x)
}

func cpuStr(s float64) string {
	if s < 0.1 {
		return fmt.Sprintf("%.3f", s)
	}
	return fmt.Sprintf("%.2f", s)
}

func pct(share float64) string { return fmt.Sprintf("%.0f%%", 100*share) }

func latencyStr(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return num(msf(d)) + " ms"
}

// Markdown renders the report.
func (r *Report) Markdown() []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cfg, s, m := r.Config, r.Config.Sizes, r.Machine
	p("# Cambium benchmarks\n\n")
	p("Measured by `cambium bench` on %s; the run took %s.\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	p("| | |\n|---|---|\n")
	p("| machine | %s, %d logical CPUs, %d GiB, %s %s |\n", m.CPU, m.Cores, m.MemoryGiB, m.OS, m.Kernel)
	p("| Go | %s |\n", m.Go)
	p("| load average (1, 5, 15 min) | at start %s; at end %s; highest 1-minute average at a cell's start %.2f (on %d logical CPUs: the machine is shared) |\n", m.LoadStart, m.LoadEnd, m.LoadPeak, m.Cores)
	p("| backends | %s |\n", r.Backends)
	if r.Floor.MetaAbout != "" {
		p("| metastore | %s |\n", r.Floor.MetaAbout)
	}
	if r.DBPages > 0 {
		p("| database | %s pages (%s) when each workload starts: a preloaded table, then the workloads' tables |\n", commas(int64(r.DBPages)), bytesStr(float64(r.DBPages)*4096))
	}
	if r.LazyPages > 0 {
		p("| cold-lazy volume | %s pages (%s): %s rows and an index, built with plain SQLite and pushed in commits of up to %s pages |\n",
			commas(int64(r.LazyPages)), bytesStr(float64(r.lazyBytes())), commas(r.LazyRows), commas(seedPushPages))
	}
	p("| sizes | single %s commits; disjoint and hot-row %d writers × %s; offline %s commits (%s pushed by another meanwhile); catch-up %s versions × %d readers; cold-lazy a %s volume × %d readers |\n",
		commas(int64(s.Commits)), s.Writers, commas(int64(s.PerWriter)), commas(int64(s.Offline)), commas(int64(s.Online)), commas(int64(s.Versions)), s.Readers, bytesStr(float64(s.LazyBytes)), s.Readers)
	p("| cell time limit | %s (no new transaction starts after it; a cell it stopped is marked) |\n", cfg.CellTime)
	p("| rounds | %d: single, disjoint and hot-row run their strategies %d times, in a rotated order each round; a cell shows its median round by commits/s, and the range over the rounds in brackets |\n", cfg.Rounds, cfg.Rounds)
	if cfg.Command != "" {
		p("| command | `%s` |\n", cfg.Command)
	}
	p("\n")

	p("## Headline\n\n")
	for _, line := range r.headline() {
		p("- %s\n", line)
	}
	p("\n")

	f := r.Floor
	p("## Floor\n\n")
	p("The least one commit can cost here, measured in the same run with none of Cambium's code: ")
	p("a bare metadata transaction of a commit's shape (lock the head, insert the commit row with its %d-byte record and %d page-index rows, advance the head) ", f.RecordBytes, f.Pages)
	p("and a bare write of the commit's %d pages as one compressed segment (%s), %d samples each.\n\n", f.Pages, bytesStr(float64(f.SegmentBytes)), f.Samples)
	p("| step | p50 | p99 |\n|---|---|---|\n")
	p("| %s (%s) | %s | %s |\n", f.Meta, f.MetaAbout, latencyStr(f.MetaP50), latencyStr(f.MetaP99))
	p("| %s of %s | %s | %s |\n", f.Store, bytesStr(float64(f.SegmentBytes)), latencyStr(f.StoreP50), latencyStr(f.StoreP99))
	p("| **floor per commit** (the two p50s in turn) | **%s** | |\n\n", latencyStr(f.PerCommit()))

	p("## Results\n\n")
	p("![Throughput per strategy and workload](%s)\n\n![Latency p50 and p99 per strategy and workload](%s)\n\n", ThroughputFile, LatencyFile)
	for _, w := range r.workloads() {
		p("### %s\n\n%s.\n\n", w, upperFirst(r.about(w)))
		if w == ColdLazy {
			r.coldLazyTable(&b)
			continue
		}
		p("| strategy | commits | commits/s | p50 | p99 | up/commit | down/commit | fast-path | merged | replayed | rejected | retries | CPU s/1k: server, clients | time/commit ÷ floor |\n")
		p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, st := range r.strategies() {
			res := r.Result(w, st)
			if res == nil {
				continue
			}
			name := st
			if res.Limited {
				name += " ⏱"
			}
			shares := []string{"—", "—", "—", "—"}
			if res.Decisions() > 0 {
				shares = []string{pct(res.Share(res.FastPath)), pct(res.Share(res.Merged)), pct(res.Share(res.Replayed)), pct(res.Share(res.Rejected))}
			}
			cpu := "n/a"
			if res.CPUPerThousand >= 0 {
				cpu = cpuStr(res.CPUPerThousand) + ", " + cpuStr(res.ClientCPUPerThousand)
			}
			ratio := "—"
			if res.FloorRatio > 0 {
				ratio = fmt.Sprintf("%.2f×", res.FloorRatio)
			}
			perSecond := num(res.PerSecond)
			if res.Rounds > 1 {
				perSecond += fmt.Sprintf(" (%s–%s)", num(res.PerSecondMin), num(res.PerSecondMax))
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n",
				name, commas(res.Commits), perSecond, latencyStr(res.P50), latencyStr(res.P99),
				bytesStr(res.UpPerCommit), bytesStr(res.DownPerCommit), shares[0], shares[1], shares[2], shares[3], res.Retries, cpu, ratio)
		}
		p("\n")
		if r.anyLimited(w) {
			p("⏱ the cell reached the %s time limit: it stopped starting transactions and reports what it finished.\n\n", cfg.CellTime)
		}
	}

	p("## How to read this\n\n")
	for _, line := range []string{
		"**Strategies** all go through the same server binary and the same stores; only the strategy differs. " +
			"`hybrid` is Cambium as designed (volume policy `replay`: fast-path, merged, replayed). " +
			"`strict-pages` sends the same pages but the volume's policy is `strict`: a stale commit is rejected and the replica re-runs it on head and pushes again (Graft's way). " +
			"`replay-all` runs the server with `ReplayAll`: every commit is replayed from its logical record, even at head (SQLSync's and server-reconciliation systems' way). " +
			"`full-file` is naive sync: a plain SQLite file whose every commit uploads every page of the file; a stale one (policy `strict`) downloads the whole file at head, re-runs the transaction and uploads again.",
		"**Commits** are commits the server stored in the measured phase; **commits/s** divides them by its wall time. **Latency** runs from the start of a local transaction to the decision that settled it, retries included.",
		"**Bytes** are counted on the clients' TCP connections, both ways, HTTP headers included, and divided by the commits stored.",
		"**Decisions** are shares of every decision the clients received, retries included: a commit rejected as stale and sent again counts once as rejected and once more when it is decided. **Retries** count those commits rejected as stale.",
		"**CPU** is user + system time per 1,000 commits, read from `/proc/<pid>/stat` at a 10 ms resolution: the server's process (a child process of the suite, `cambium bench serve`), then the suite's own process, which runs every client of the cell. PostgreSQL's and MinIO's CPU is in neither; all of them share the machine's cores.",
		"**Time/commit ÷ floor** is the measured phase's wall time per commit stored over the floor per commit: below 1 when group commit and concurrency amortize the floor, above it by what Cambium adds on top.",
		"**Cold-lazy** has a table of its own, as its readers commit nothing: latency from the start of the clone to the first query's row (and from the start of the query alone), pages down per reader (a lazy replica's fetched pages, read-ahead included; the full-file client's whole file), bytes down per reader on its TCP connections (the clone's pull included), and the server's CPU per reader.",
	} {
		p("- %s\n", line)
	}
	return b.Bytes()
}

// coldLazyTable is cold-lazy's table: a reader's latency, what it brought
// down and what it cost the server; it commits nothing.
func (r *Report) coldLazyTable(b *bytes.Buffer) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("| strategy | readers | clone + first query: p50 | p99 | first query alone: p50 | p99 | pages down per reader | bytes down per reader | share of the volume | server CPU per reader |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, st := range r.strategies() {
		res := r.Result(ColdLazy, st)
		if res == nil || res.Commits == 0 {
			continue
		}
		cpu := "n/a"
		if res.ServerCPU >= 0 {
			cpu = latencyStr(time.Duration(res.ServerCPU / float64(res.Commits) * float64(time.Second)))
		}
		share := "—"
		if v := r.lazyBytes(); v > 0 {
			share = fmt.Sprintf("%.3g%%", 100*res.DownPerCommit/float64(v))
		}
		p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", st, res.Commits, latencyStr(res.P50), latencyStr(res.P99),
			latencyStr(res.QueryP50), latencyStr(res.QueryP99), commas(res.PagesFetched/res.Commits), bytesStr(res.DownPerCommit), share, cpu)
	}
	p("\n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func (r *Report) anyLimited(workload string) bool {
	for _, res := range r.Results {
		if res.Workload == workload && res.Limited {
			return true
		}
	}
	return false
}

func (r *Report) backendsAbout() string {
	cfg := r.Config
	var meta, store string
	if cfg.PostgresURL != "" {
		meta = "PostgreSQL metastore (" + redactURL(cfg.PostgresURL) + ", a schema of the run's own)"
	} else {
		meta = "embedded SQLite metastore"
	}
	if cfg.S3 != nil {
		store = fmt.Sprintf("S3/MinIO page store (%s, bucket %s)", cfg.S3.Endpoint, cfg.S3.Bucket)
	} else {
		store = "local page directory"
	}
	return meta + " + " + store + "; server, clients and services on this one machine"
}

// headline states the ratios the README quotes.
func (r *Report) headline() []string {
	var out []string
	vs := func(w string) {
		h := r.Result(w, Hybrid)
		if h == nil || h.PerSecond == 0 {
			return
		}
		var parts []string
		for _, st := range []string{StrictPages, ReplayAll, FullFile} {
			if o := r.Result(w, st); o != nil && o.PerSecond > 0 {
				parts = append(parts, fmt.Sprintf("%s %s (%s/s, p99 %s)", ratio(h.PerSecond/o.PerSecond), st, num(o.PerSecond), latencyStr(o.P99)))
			}
		}
		if len(parts) == 0 {
			return
		}
		list := strings.Join(parts[:len(parts)-1], ", ")
		if list != "" {
			list += " and "
		}
		list += parts[len(parts)-1]
		out = append(out, fmt.Sprintf("**%s**: hybrid stores %s commits/s (p50 %s, p99 %s; %s of decisions merged, %s replayed), %s.",
			w, num(h.PerSecond), latencyStr(h.P50), latencyStr(h.P99), pct(h.Share(h.Merged)), pct(h.Share(h.Replayed)), list))
	}
	vs(HotRow)
	vs(Disjoint)
	vs(Offline)
	if h := r.Result(Single, Hybrid); h != nil && r.Floor.PerCommit() > 0 {
		f := r.Floor
		out = append(out, fmt.Sprintf("**commit cost vs the floor**: one unbatched commit of the single writer (hybrid) takes p50 %s from local commit to decision, %.1f× the floor of %s (%s %s + %s %s, measured in the same run); its wall time per commit at %s commits/s is %.1f× the floor.",
			latencyStr(h.P50), msf(h.P50)/msf(f.PerCommit()), latencyStr(f.PerCommit()), f.Meta, latencyStr(f.MetaP50), f.Store, latencyStr(f.StoreP50), num(h.PerSecond), h.FloorRatio))
	}
	if h, o := r.Result(CatchUp, Hybrid), r.Result(CatchUp, FullFile); h != nil && o != nil && h.P50 > 0 && o.P50 > 0 {
		v := float64(r.Config.Sizes.Versions)
		out = append(out, fmt.Sprintf("**catch-up** on %s versions: a replica pulls in %s warm, %s cold (%s down); the full-file client downloads the whole file in %s warm, %s cold (%s down).",
			commas(int64(v)), latencyStr(h.P50), latencyStr(h.P99), bytesStr(h.DownPerCommit*v), latencyStr(o.P50), latencyStr(o.P99), bytesStr(o.DownPerCommit*v)))
	}
	if h := r.Result(ColdLazy, Hybrid); h != nil && h.Commits > 0 {
		line := fmt.Sprintf("**cold-lazy** on a %s volume (%s pages): a lazy replica clones and answers its first point query in %s cold, %s warm (the query alone %s cold, %s warm), having fetched %s (%s pages) of it",
			bytesStr(float64(r.lazyBytes())), commas(int64(r.LazyPages)), latencyStr(h.P99), latencyStr(h.P50), latencyStr(h.QueryP99), latencyStr(h.QueryP50),
			bytesStr(h.DownPerCommit), commas(h.PagesFetched/h.Commits))
		if o := r.Result(ColdLazy, FullFile); o != nil && o.Commits > 0 {
			line += fmt.Sprintf("; the full-file client downloads the whole file (%s) and answers in %s cold, %s warm", bytesStr(o.DownPerCommit), latencyStr(o.P99), latencyStr(o.P50))
		}
		out = append(out, line+".")
	}
	return out
}

// CSV renders one row per cell.
func (r *Report) CSV() []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"workload", "strategy", "commits", "attempted", "seconds", "commits_per_s", "p50_ms", "p99_ms",
		"rounds", "commits_per_s_min", "commits_per_s_max", "bytes_up_per_commit", "bytes_down_per_commit", "fast_path", "merged", "replayed", "rejected",
		"share_fast_path", "share_merged", "share_replayed", "share_rejected", "retries",
		"server_cpu_s", "server_cpu_s_per_1k", "client_cpu_s_per_1k", "time_per_commit_over_floor", "limited", "note",
		"query_p50_ms", "query_p99_ms", "pages_fetched"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, res := range r.Results {
		w.Write([]string{res.Workload, res.Strategy, i(res.Commits), i(res.Attempted), f(res.Seconds), f(res.PerSecond),
			f(msf(res.P50)), f(msf(res.P99)), i(int64(res.Rounds)), f(res.PerSecondMin), f(res.PerSecondMax), f(res.UpPerCommit), f(res.DownPerCommit),
			i(res.FastPath), i(res.Merged), i(res.Replayed), i(res.Rejected),
			f(res.Share(res.FastPath)), f(res.Share(res.Merged)), f(res.Share(res.Replayed)), f(res.Share(res.Rejected)), i(res.Retries),
			f(res.ServerCPU), f(res.CPUPerThousand), f(res.ClientCPUPerThousand), f(res.FloorRatio), strconv.FormatBool(res.Limited), res.Note,
			f(msf(res.QueryP50)), f(msf(res.QueryP99)), i(res.PagesFetched)})
	}
	w.Flush()
	return b.Bytes()
}
