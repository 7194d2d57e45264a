package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/pages/segment"
)

// benchPool is a pool of page sets made before the timer starts, so the
// benchmarks measure pushing commits, not making their bytes.
type benchPool [][]commit.Page

func newBenchPool(seed uint64) benchPool {
	rng := rand.New(rand.NewPCG(seed, seed))
	p := make(benchPool, 64)
	for i := range p {
		p[i] = benchPages(rng)
	}
	return p
}

func (p benchPool) get(i int64) []commit.Page { return p[i%int64(len(p))] }

// benchPages are the pages of a one-row insert into an indexed table: page
// 1, a table leaf, an index leaf. Their bytes imitate b-tree pages (cells
// of text and integers, then free space), so they compress as real pages do.
func benchPages(rng *rand.Rand) []commit.Page {
	ps := make([]commit.Page, 3)
	for i, no := range []uint32{1, 7, 12} {
		data := make([]byte, pageSize)
		for off := 100; off < pageSize*2/3; off += 40 {
			copy(data[off:], fmt.Sprintf("row %08d name-%d %d", rng.IntN(1e8), rng.IntN(1e4), rng.Int64()))
		}
		ps[i] = commit.Page{No: no, Data: data}
	}
	return ps
}

// latencies collects per-request latencies and reports p50 and p99.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds())/1000, "p99-ms")
}

func benchServer(b *testing.B) *api.Client {
	c, _ := benchServerMetrics(b)
	return c
}

// benchServerMetrics is benchServer with the registry its metrics go to.
func benchServerMetrics(b *testing.B) (*api.Client, *prometheus.Registry) {
	cfg := backends["PostgresMinIO"](b)
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	_, c := MustServer(b, cfg)
	return c, reg
}

// reportGroups reports what group commit made of the run, from the
// server's metrics: commits per group, and segments uploaded per group (one
// when every commit's version was predicted; see commit.Committer).
func reportGroups(b *testing.B, reg prometheus.Gatherer) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var commits, groups, segments float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "cambium_commit_group_commits":
				commits, groups = m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
			case "cambium_commit_segments_total":
				segments += m.GetCounter().GetValue()
			}
		}
	}
	if groups > 0 {
		b.ReportMetric(commits/groups, "commits/group")
		b.ReportMetric(segments/groups, "PUTs/group")
	}
}

// BenchmarkPush measures commits/s through cambiumd's HTTP API on
// PostgreSQL + MinIO, with per-request latency percentiles.
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	b.Run("OneClientBatches", func(b *testing.B) {
		// One client pushes batches of 100 one-row commits, each made on
		// top of the one before (how a replica pushes its queue).
		const batch = 100
		c := benchServer(b)
		if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
			b.Fatal(err)
		}
		pool := newBenchPool(1)
		var lat latencies
		head, seq := int64(0), int64(0)
		start := time.Now()
		for b.Loop() {
			reqs := make([]commit.Request, batch)
			for i := range reqs {
				seq++
				reqs[i] = commit.Request{ClientID: "bench", Seq: seq, Base: head, PageSize: pageSize, PageCount: 12, Pages: pool.get(seq)}
				if i > 0 {
					reqs[i].Parent = seq - 1
				}
			}
			t0 := time.Now()
			res, err := c.Push(ctx, "v", reqs)
			lat.add(time.Since(t0))
			if err != nil || res[batch-1].Decision != commit.FastPath {
				b.Fatalf("push: %v %+v", err, res[batch-1])
			}
			head = res[batch-1].Version
		}
		b.ReportMetric(float64(head)/time.Since(start).Seconds(), "commits/s")
		lat.report(b)
	})
	// Eight clients on eight volumes, each pushing its commits in requests
	// of perRequest chained commits. With one commit per request only group
	// commit lets them share uploads and transactions.
	for _, perRequest := range []int{10, 1} {
		name := fmt.Sprintf("EightClientsBatchesOf%d", perRequest)
		if perRequest == 1 {
			name = "EightClientsOneCommitEach"
		}
		b.Run(name, func(b *testing.B) { benchEightClients(b, perRequest) })
	}
}

func benchEightClients(b *testing.B, perRequest int) {
	ctx := context.Background()
	const clients = 8
	c, reg := benchServerMetrics(b)
	for i := range clients {
		if _, err := c.CreateVolume(ctx, fmt.Sprintf("v%d", i), 0); err != nil {
			b.Fatal(err)
		}
	}
	var lat latencies
	var total int64
	var mu sync.Mutex
	start := time.Now()
	requests := max(1, b.N/clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			pool := newBenchPool(uint64(i) + 2)
			volume := fmt.Sprintf("v%d", i)
			head, seq := int64(0), int64(0)
			for range requests {
				reqs := make([]commit.Request, perRequest)
				for j := range reqs {
					seq++
					reqs[j] = commit.Request{ClientID: "bench", Seq: seq, Base: head, PageSize: pageSize, PageCount: 12, Pages: pool.get(seq)}
					if j > 0 {
						reqs[j].Parent = seq - 1
					}
				}
				t0 := time.Now()
				res, err := c.Push(ctx, volume, reqs)
				lat.add(time.Since(t0))
				if err != nil || res[perRequest-1].Decision != commit.FastPath {
					b.Errorf("push: %v %+v", err, res)
					return
				}
				head = res[perRequest-1].Version
			}
			mu.Lock()
			total += head
			mu.Unlock()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "commits/s")
	lat.report(b)
	reportGroups(b, reg)
}

// BenchmarkFloor measures, in the same run, what one commit costs at the
// least on these services: a bare PostgreSQL transaction of the commit's
// shape, and a bare MinIO PUT of its segment's size.
func BenchmarkFloor(b *testing.B) {
	ctx := context.Background()
	b.Run("PostgresCommitTx", func(b *testing.B) {
		conn, err := pgx.Connect(ctx, testutil.MustPostgresSchema(b))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, q := range []string{
			`CREATE TABLE h(id int PRIMARY KEY, head bigint)`,
			`CREATE TABLE c(v bigint PRIMARY KEY, client text, seq bigint, record bytea)`,
			`CREATE TABLE p(page int, v bigint, seg text, off bigint, len int, hash bigint, PRIMARY KEY (page, v))`,
			`INSERT INTO h VALUES (1, 0)`,
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		v := int64(0)
		for b.Loop() {
			v++
			batch := &pgx.Batch{}
			batch.Queue(`SELECT head FROM h WHERE id = 1 FOR UPDATE`)
			batch.Queue(`INSERT INTO c VALUES ($1, 'bench', $1, NULL)`, v)
			for _, no := range []int{1, 7, 12} {
				batch.Queue(`INSERT INTO p VALUES ($1, $2, 'segments/x', 0, 1000, 0)`, no, v)
			}
			batch.Queue(`UPDATE h SET head = $1 WHERE id = 1`, v)
			tx, err := conn.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := tx.SendBatch(ctx, batch).Close(); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("MinIOPutOfSegment", func(b *testing.B) {
		s3 := testutil.MustS3(b)
		store, err := s3store.Open(ctx, s3store.Config{Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey,
			Bucket: "cambium-bench-" + testutil.RandomName(6)})
		if err != nil {
			b.Fatal(err)
		}
		enc := segment.NewEncoder(pageSize)
		for _, p := range benchPages(rand.New(rand.NewPCG(3, 3))) {
			enc.Add(1, 1, p.No, p.Data)
		}
		data, _, err := enc.Finish()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(data)), "segment-bytes")
		i := 0
		for b.Loop() {
			i++
			if err := store.Put(ctx, fmt.Sprintf("segments/floor-%d", i), data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
