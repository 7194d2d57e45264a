package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/internal/testutil"
)

// cambiumdBin is the cambiumd binary built once for the process tests.
var cambiumdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cambiumd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cambiumdBin = filepath.Join(dir, "cambiumd")
	if out, err := exec.Command("go", "build", "-o", cambiumdBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cambiumd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is one cambiumd run.
type process struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	done chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCambiumd starts cambiumd with the given environment and waits until
// /healthz answers.
func startCambiumd(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	addr := freeAddr(t)
	p := &process{url: "http://" + addr, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(cambiumdBin, append([]string{"--listen", addr, "--log-level", "warn"}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cambiumd did not become healthy: %v\n%s", err, p.logs)
		}
		select {
		case err := <-p.done:
			t.Fatalf("cambiumd exited at start: %v\n%s", err, p.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitKilled waits for the process to die by SIGKILL, as the fault makes it.
func (p *process) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("cambiumd ended with %v, want killed by SIGKILL\n%s", err, p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("cambiumd was not killed by the fault\n%s", p.logs)
	}
}

// crashBackends give each crash test its backends as cambiumd flags.
var crashBackends = map[string]func(t *testing.T) []string{
	"Embedded": func(t *testing.T) []string { return []string{"--data", t.TempDir()} },
	"PostgresMinIO": func(t *testing.T) []string {
		s3 := testutil.MustS3(t)
		return []string{"--pg", testutil.MustPostgresSchema(t), "--s3", s3.Endpoint,
			"--s3-bucket", "cambium-test-" + testutil.RandomName(6)}
	},
}

// TestCrash kills cambiumd between the segment upload and the metadata
// commit, and between the metadata commit and the response. In both cases
// the client's retry must yield exactly one version, and every page the
// metadata points at must be readable (invariants 1, 3 and 4).
func TestCrash(t *testing.T) {
	for name, backend := range crashBackends {
		for _, fault := range []string{"crash-after-upload", "crash-after-commit"} {
			t.Run(name+"/"+fault, func(t *testing.T) {
				ctx := context.Background()
				args := backend(t)
				creds := []string{}
				if s3 := os.Getenv(testutil.EnvS3AccessKey); s3 != "" {
					creds = []string{"CAMBIUM_S3_ACCESS_KEY=" + s3, "CAMBIUM_S3_SECRET_KEY=" + os.Getenv(testutil.EnvS3SecretKey)}
				}
				p := startCambiumd(t, append(creds, "CAMBIUM_FAULT="+fault), args...)
				c := api.NewClient(p.url)
				if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
					t.Fatal(err)
				}
				batch := []commit.Request{
					{ClientID: "a", Seq: 1, Base: 0, PageSize: 4096, PageCount: 2,
						Pages: []commit.Page{{No: 1, Data: bytes.Repeat([]byte{1}, 4096)}, {No: 2, Data: bytes.Repeat([]byte{2}, 4096)}}},
					{ClientID: "a", Seq: 2, Parent: 1, Base: 0, PageSize: 4096, PageCount: 2,
						Pages: []commit.Page{{No: 2, Data: bytes.Repeat([]byte{3}, 4096)}}},
				}
				if res, err := c.Push(ctx, "v", batch); err == nil {
					t.Fatalf("push through a crashing server succeeded: %+v", res)
				}
				p.waitKilled(t)

				p = startCambiumd(t, creds, args...)
				c = api.NewClient(p.url)
				res, err := c.Push(ctx, "v", batch)
				if err != nil {
					t.Fatalf("retry after restart: %v", err)
				}
				wantDup := fault == "crash-after-commit"
				for i, r := range res {
					if r.Decision != commit.FastPath || r.Version != int64(i+1) || r.Duplicate != wantDup {
						t.Fatalf("retry result %d = %+v, want fast-path version %d, duplicate %v", i, r, i+1, wantDup)
					}
				}
				v, err := c.Volume(ctx, "v")
				if err != nil || v.Head != 2 {
					t.Fatalf("volume after retry: %+v %v, want head 2", v, err)
				}
				// Every page the metadata points at, at every version, reads back.
				want := map[int64]map[uint32]byte{1: {1: 1, 2: 2}, 2: {1: 1, 2: 3}}
				for version, pagesWant := range want {
					n := 0
					_, err := c.ReadPages(ctx, "v", version, []uint32{1, 2}, func(sp api.StreamedPage) error {
						n++
						if !bytes.Equal(sp.Data, bytes.Repeat([]byte{pagesWant[sp.No]}, 4096)) {
							return fmt.Errorf("page %d at version %d has the wrong bytes", sp.No, version)
						}
						return nil
					})
					if err != nil || n != 2 {
						t.Fatalf("read version %d: %d pages, %v", version, n, err)
					}
				}
			})
		}
	}
}
