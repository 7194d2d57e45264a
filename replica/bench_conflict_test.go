package replica_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replay"
)

// timedReplayer records how long each replay takes.
type timedReplayer struct {
	next commit.Replayer
	mu   sync.Mutex
	took []time.Duration
}

func (t *timedReplayer) Replay(ctx context.Context, in replay.Input) (*replay.Output, error) {
	start := time.Now()
	out, err := t.next.Replay(ctx, in)
	t.mu.Lock()
	t.took = append(t.took, time.Since(start))
	t.mu.Unlock()
	return out, err
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// BenchmarkHotCounter is issue #4's benchmark: 8 replicas increment one row
// concurrently on Postgres + MinIO, each pushing after every transaction
// until its commit is decided, under three strategies:
//
//   - hybrid: Cambium's default policy (fast-path, merged, replayed);
//   - strict: stale commits rejected, the client re-runs them on head and
//     pushes again (what Graft does);
//   - replay-all: every commit replayed from its record (SQLSync's way).
//
// It reports commits/s (committed increments per second), pushes per
// commit, and the server's replay latency p50/p99.
func BenchmarkHotCounter(b *testing.B) {
	const replicas = 8
	for _, strategy := range []string{"hybrid", "strict", "replay-all"} {
		b.Run(strategy, func(b *testing.B) {
			ctx := context.Background()
			cfg := backends["PostgresMinIO"](b)
			cfg.ReplayAll = strategy == "replay-all"
			srv, c := mustServer(b, cfg)
			timer := &timedReplayer{next: srv.Committer.Replayer}
			srv.Committer.Replayer = timer
			if _, err := c.CreateVolume(ctx, "hot", 0); err != nil {
				b.Fatal(err)
			}
			set := api.Settings{Policy: "replay"}
			switch strategy {
			case "strict":
				set.Policy = "strict"
			case "replay-all":
				set.AllowDDL = true // the seed's CREATE TABLE is replayed too
			}
			if _, err := c.Configure(ctx, "hot", set); err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			seed, seedDB := mustReplica(b, filepath.Join(dir, "seed.db"), "hot")
			mustExec(b, seedDB, "CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
			mustExec(b, seedDB, "INSERT INTO c VALUES (1, 0)")
			pushAll(b, seed, c)
			rs, dbs := mustClones(b, c, dir, "hot", replicas)
			per := max(1, b.N/replicas)
			var pushes sync.WaitGroup
			var mu sync.Mutex
			nPush := 0
			b.ResetTimer()
			start := time.Now()
			for i := range rs {
				pushes.Go(func() {
					for range per {
						if _, err := dbs[i].Exec("UPDATE c SET n = n + 1 WHERE id = 1"); err != nil {
							b.Error(err)
							return
						}
						for {
							st, err := rs[i].Status(ctx)
							if err != nil {
								b.Error(err)
								return
							}
							if st.Pending == 0 {
								break
							}
							if _, err := rs[i].Push(ctx, c); err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							nPush++
							mu.Unlock()
						}
					}
				})
			}
			pushes.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			total := per * replicas
			if _, err := rs[0].Pull(ctx, c); err != nil {
				b.Fatal(err)
			}
			if n := queryInt(b, dbs[0], "SELECT n FROM c WHERE id = 1"); n != int64(total) {
				b.Fatalf("n = %d, want %d", n, total)
			}
			b.ReportMetric(float64(total)/elapsed.Seconds(), "commits/s")
			b.ReportMetric(float64(nPush)/float64(total), "pushes/commit")
			b.ReportMetric(float64(quantile(timer.took, 0.5).Microseconds())/1000, "replay-p50-ms")
			b.ReportMetric(float64(quantile(timer.took, 0.99).Microseconds())/1000, "replay-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
