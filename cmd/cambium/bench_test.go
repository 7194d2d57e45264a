package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/bench"
)

// TestBench_Config: the command line becomes the suite's configuration;
// the suite itself is tested in package bench.
func TestBench_Config(t *testing.T) {
	env := &cliEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	for _, name := range []string{"CAMBIUM_PG_URL", "CAMBIUM_S3_ENDPOINT", "CAMBIUM_S3_BUCKET", "CAMBIUM_S3_REGION", "CAMBIUM_S3_TLS"} {
		t.Setenv(name, "")
	}
	t.Run("Defaults", func(t *testing.T) {
		cfg, asJSON, err := benchConfig(env, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Sizes != bench.DefaultSizes || cfg.CellTime != bench.DefaultCellTime || cfg.Out != "bench-results" || asJSON {
			t.Fatalf("config %+v, json %v: want the defaults", cfg, asJSON)
		}
		if cfg.PostgresURL != "" || cfg.S3 != nil {
			t.Fatalf("backends %q %+v: want the embedded default", cfg.PostgresURL, cfg.S3)
		}
	})
	t.Run("Quick", func(t *testing.T) {
		cfg, _, err := benchConfig(env, []string{"--quick", "--commits", "7", "--db-size", "64KiB", "--lazy-size", "1GiB", "--workloads", "single,hot-row", "--json"})
		if err != nil {
			t.Fatal(err)
		}
		want := bench.QuickSizes
		want.Commits, want.DBBytes, want.LazyBytes = 7, 64<<10, 1<<30
		if cfg.Sizes != want {
			t.Fatalf("sizes %+v, want %+v (quick, with an explicit size winning)", cfg.Sizes, want)
		}
		if cfg.CellTime != bench.QuickCellTime || cfg.FloorIterations != bench.QuickFloorIterations || !cfg.Quick {
			t.Fatalf("cell time %s, floor samples %d: want quick's", cfg.CellTime, cfg.FloorIterations)
		}
		if !slices.Equal(cfg.Workloads, []string{"single", "hot-row"}) {
			t.Fatalf("workloads %q", cfg.Workloads)
		}
	})
	t.Run("Backends", func(t *testing.T) {
		t.Setenv("CAMBIUM_PG_URL", "postgres://u:secret@db/cambium")
		t.Setenv("CAMBIUM_S3_ACCESS_KEY", "ak")
		t.Setenv("CAMBIUM_S3_SECRET_KEY", "sk")
		cfg, _, err := benchConfig(env, []string{"--s3", "127.0.0.1:9000", "--s3-bucket", "b"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.PostgresURL != "postgres://u:secret@db/cambium" {
			t.Fatalf("pg %q: want CAMBIUM_PG_URL", cfg.PostgresURL)
		}
		if s := cfg.S3; s == nil || s.Endpoint != "127.0.0.1:9000" || s.Bucket != "b" || s.AccessKey != "ak" || s.SecretKey != "sk" {
			t.Fatalf("s3 %+v", cfg.S3)
		}
	})
	t.Run("Bad", func(t *testing.T) {
		for _, args := range [][]string{{"--cell-time", "0s"}, {"--db-size", "lots"}, {"--lazy-size", "big"}, {"extra"}, {"--commits", "x"}} {
			if _, _, err := benchConfig(env, args); err == nil {
				t.Errorf("bench %s: no error", strings.Join(args, " "))
			}
		}
	})
}

func TestBench_RedactArgs(t *testing.T) {
	got := strings.Join(redactArgs([]string{"--pg", "postgres://u:pw@h/db", "--pg=postgres://v:pw2@h/db", "--quick"}), " ")
	if strings.Contains(got, "pw") || !strings.Contains(got, "postgres://u:xxxxx@h/db") || !strings.Contains(got, "--pg=postgres://v:xxxxx@h/db") {
		t.Fatalf("redactArgs = %q", got)
	}
}
