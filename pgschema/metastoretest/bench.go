package metastoretest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cambiumdb/cambium/pgschema"
)

// benchPageCount is the size, in pages, of the volumes the benchmarks write.
const benchPageCount = 2000

// benchRun tells apart the volumes of successive benchmark runs on one
// metastore (the testing package calls a benchmark function once per b.N).
var benchRun atomic.Int64

// benchCommit is the commit the benchmarks append: version of vol, writing
// page 1 and three other pages, each commit in its own segment.
func benchCommit(vol, version int64, rng *rand.Rand) pgschema.NewCommit {
	c := pgschema.NewCommit{
		Volume:     vol,
		Version:    version,
		Base:       version - 1,
		ClientID:   "bench",
		ClientSeq:  version,
		Decision:   pgschema.FastPath,
		PageCount:  benchPageCount,
		Record:     make([]byte, 200),
		Checksum:   make([]byte, 32),
		ReceivedAt: receivedAt,
	}
	seen := map[uint32]bool{1: true}
	pageNos := []uint32{1}
	for len(pageNos) < 4 {
		p := uint32(rng.IntN(benchPageCount-1)) + 2
		if !seen[p] {
			seen[p] = true
			pageNos = append(pageNos, p)
		}
	}
	seg := fmt.Sprintf("segments/bench-%d-%d", vol, version)
	for i, p := range pageNos {
		l := loc(vol, version, p)
		l.Segment = seg
		l.FrameOffset = int64(i) * 1500
		c.Pages = append(c.Pages, pgschema.PageWrite{PageNo: p, Location: l})
	}
	return c
}

// BenchCommit measures AppendCommit throughput: writers goroutines, each
// appending to its own volume, each commit writing 4 pages to a new segment.
// It reports commits/s.
func BenchCommit(b *testing.B, ms pgschema.Metastore, writers int) {
	ctx := context.Background()
	run := benchRun.Add(1)
	vols := make([]int64, writers)
	for i := range vols {
		v, err := ms.CreateVolume(ctx, fmt.Sprintf("bench-commit-%d-%d-%s", run, i, randSuffix()), 4096)
		if err != nil {
			b.Fatalf("CreateVolume: %v", err)
		}
		vols[i] = v.ID
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0))
			for version := int64(1); next.Add(1) <= int64(b.N); version++ {
				_, _, err := pgschema.AppendCommit(ctx, ms, benchCommit(vols[w], version, rng))
				if err != nil {
					b.Errorf("AppendCommit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// BenchAppendAll measures AppendAll throughput as group commit uses it:
// each operation is one Update that locks a volume and appends batch
// commits of 4 pages each, all in one segment, in one AppendAll. It reports
// commits/s.
func BenchAppendAll(b *testing.B, ms pgschema.Metastore, batch int) {
	ctx := context.Background()
	v, err := ms.CreateVolume(ctx, fmt.Sprintf("bench-append-all-%d-%s", benchRun.Add(1), randSuffix()), 4096)
	if err != nil {
		b.Fatalf("CreateVolume: %v", err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	head := int64(0)
	cs := make([]pgschema.NewCommit, batch)
	for b.Loop() {
		b.StopTimer()
		seg := fmt.Sprintf("segments/bench-group-%d-%d", v.ID, head)
		for i := range cs {
			cs[i] = benchCommit(v.ID, head+int64(i)+1, rng)
			for j := range cs[i].Pages {
				cs[i].Pages[j].Segment = seg
			}
		}
		b.StartTimer()
		err := ms.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolumes(ctx, []int64{v.ID}); err != nil {
				return err
			}
			return tx.AppendAll(ctx, cs)
		})
		if err != nil {
			b.Fatalf("AppendAll: %v", err)
		}
		head += int64(batch)
	}
	b.ReportMetric(float64(head)/b.Elapsed().Seconds(), "commits/s")
}

// BenchChangedPages measures ChangedPages over a volume of 10,000 versions of
// 4 pages each in 2,000 pages: the whole history, and a range of 100 versions
// in the middle. Setup is outside the timers.
func BenchChangedPages(b *testing.B, ms pgschema.Metastore) {
	ctx := context.Background()
	const versions, perTx = 10000, 500
	v, err := ms.CreateVolume(ctx, fmt.Sprintf("bench-changed-%d-%s", benchRun.Add(1), randSuffix()), 4096)
	if err != nil {
		b.Fatalf("CreateVolume: %v", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for start := int64(1); start <= versions; start += perTx {
		err := ms.Update(ctx, func(tx pgschema.Tx) error {
			if _, err := tx.LockVolume(ctx, v.ID); err != nil {
				return err
			}
			for ver := start; ver < start+perTx && ver <= versions; ver++ {
				if err := tx.Append(ctx, benchCommit(v.ID, ver, rng)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("setup: %v", err)
		}
	}
	for _, r := range []struct {
		name     string
		from, to int64
	}{
		{"Full", 0, versions},
		{"Mid100", versions/2 - 50, versions/2 + 50},
	} {
		b.Run(r.name, func(b *testing.B) {
			pagesOut := 0
			for b.Loop() {
				refs, err := ms.ChangedPages(ctx, v.ID, r.from, r.to)
				if err != nil {
					b.Fatalf("ChangedPages(%d, %d): %v", r.from, r.to, err)
				}
				pagesOut = len(refs)
			}
			b.ReportMetric(float64(pagesOut), "pages/op")
		})
	}
}

func randSuffix() string { return fmt.Sprintf("%08x", rand.Uint32()) }
