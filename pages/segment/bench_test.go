package segment_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/cambiumdb/cambium/pages/segment"
)

// cpuMeter reports throughput per second of process CPU time (user+system,
// GC included) as "cpuMB/s", beside the wall-clock MB/s. On a shared
// 2-core machine other processes steal the core the benchmark runs on, so
// wall-clock MB/s measures the neighbours as much as the code.
type cpuMeter struct{ start time.Duration }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{cpuTime()} }

func (m cpuMeter) report(b *testing.B, bytesPerOp int) {
	if d := cpuTime() - m.start; d > 0 {
		b.ReportMetric(float64(bytesPerOp)*float64(b.N)/d.Seconds()/1e6, "cpuMB/s")
	}
}

// benchCodecs are the codec settings the benchmarks compare; the first is
// the default (see segment.DefaultCodec for why).
var benchCodecs = []struct {
	name  string
	codec segment.Codec
	level zstd.EncoderLevel
}{
	{"s2", segment.CodecS2, segment.DefaultLevel},
	{"zstd-fastest", segment.CodecZstd, zstd.SpeedFastest},
	{"zstd-default", segment.CodecZstd, zstd.SpeedDefault},
}

// BenchmarkEncode encodes the pages of a real ~8 MiB SQLite database
// (realSQLitePages) into one segment; bytes are the uncompressed page bytes.
// It reports the compression ratio too.
func BenchmarkEncode(b *testing.B) {
	pages := realSQLitePages(b)
	for _, c := range benchCodecs {
		b.Run("codec="+c.name, func(b *testing.B) {
			enc := segment.NewEncoder(4096)
			enc.Codec, enc.Level = c.codec, c.level
			b.SetBytes(int64(len(pages) * 4096))
			b.ReportAllocs()
			var size int
			m := startCPU()
			for b.Loop() {
				enc.Grow(len(pages))
				for i, p := range pages {
					if err := enc.Add(1, 1, uint32(i+1), p); err != nil {
						b.Fatal(err)
					}
				}
				data, _, err := enc.Finish()
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
			}
			m.report(b, len(pages)*4096)
			b.ReportMetric(float64(len(pages)*4096)/float64(size), "ratio")
		})
	}
}

// BenchmarkDecode measures the two read paths on the same segment: Decode
// verifies the whole segment (every frame, every page hash); ReadPage reads
// every page one by one from its frame's bytes, as the page reader does on a
// cache miss, so it decompresses each frame once per page it holds. Bytes
// are the page bytes returned.
func BenchmarkDecode(b *testing.B) {
	pages := realSQLitePages(b)
	for _, c := range benchCodecs {
		enc := segment.NewEncoder(4096)
		enc.Codec, enc.Level = c.codec, c.level
		for i, p := range pages {
			if err := enc.Add(1, 1, uint32(i+1), p); err != nil {
				b.Fatal(err)
			}
		}
		data, entries, err := enc.Finish()
		if err != nil {
			b.Fatal(err)
		}
		b.Run("Segment/codec="+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(pages) * 4096))
			b.ReportAllocs()
			m := startCPU()
			for b.Loop() {
				if _, err := segment.Decode(data); err != nil {
					b.Fatal(err)
				}
			}
			m.report(b, len(pages)*4096)
		})
		b.Run("Frame/codec="+c.name, func(b *testing.B) {
			// One frame decode per frame, every page cut from it: the
			// cost of fetching N pages of one frame together.
			s, err := segment.Decode(data)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(pages) * 4096))
			b.ReportAllocs()
			m := startCPU()
			for b.Loop() {
				for _, f := range s.Frames {
					decoded, err := segment.DecodeFrame(data[f.Offset:f.Offset+f.Length], 4096)
					if err != nil {
						b.Fatal(err)
					}
					for _, e := range s.Entries[f.First : f.First+f.Count] {
						if _, err := segment.PageInFrame(decoded, e.PageOffset, 4096, e.Hash); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			m.report(b, len(pages)*4096)
		})
		b.Run("ReadPage/codec="+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(pages) * 4096))
			b.ReportAllocs()
			m := startCPU()
			for b.Loop() {
				for _, e := range entries {
					frame := data[e.FrameOffset : e.FrameOffset+e.FrameLength]
					if _, err := segment.ReadPage(frame, e.PageOffset, 4096, e.Hash); err != nil {
						b.Fatal(err)
					}
				}
			}
			m.report(b, len(pages)*4096)
		})
	}
}
