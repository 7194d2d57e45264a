package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/server"
)

// childConfig is what the suite sends a server child on its stdin, as one
// JSON line: credentials never appear in its arguments or environment.
type childConfig struct {
	DataDir     string    `json:"data_dir,omitempty"`
	PostgresURL string    `json:"postgres_url,omitempty"`
	S3          *s3Config `json:"s3,omitempty"`
	ReplayAll   bool      `json:"replay_all,omitempty"`
}

// s3Config is the part of s3store.Config that travels to the child.
type s3Config struct {
	Endpoint, Bucket, Prefix, Region string
	AccessKey, SecretKey             string
	Secure                           bool
}

func (c *s3Config) store() *s3store.Config {
	return &s3store.Config{Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, Secure: c.Secure}
}

// childReady is the child's answer, one JSON line on its stdout.
type childReady struct {
	URL      string `json:"url"`
	Backends string `json:"backends"`
}

// Serve is the server child (`cambium bench serve`): it reads a childConfig
// line from stdin, opens the server, listens on a free loopback port,
// writes a childReady line to stdout, and serves until stdin reaches EOF
// (the suite closed it, or died) or ctx is done.
func Serve(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read server config: %w", err)
	}
	var cc childConfig
	if err := json.Unmarshal(line, &cc); err != nil {
		return fmt.Errorf("decode server config: %w", err)
	}
	cfg := server.Config{DataDir: cc.DataDir, PostgresURL: cc.PostgresURL, ReplayAll: cc.ReplayAll}
	if cc.S3 != nil {
		cfg.S3 = cc.S3.store()
	}
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close(context.Background())
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		io.Copy(io.Discard, in) // returns at EOF: time to go
		stop()
	}()
	if err := json.NewEncoder(stdout).Encode(childReady{URL: "http://" + ln.Addr().String(), Backends: srv.Backends()}); err != nil {
		ln.Close()
		srv.Close(context.Background())
		return err
	}
	serveErr := srv.Serve(sctx, ln)
	return errors.Join(serveErr, srv.Close(context.Background()))
}

// serverProc is a server child seen from the suite.
type serverProc struct {
	URL      string
	Backends string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// startServer starts a server child and waits until it listens.
func startServer(ctx context.Context, cfg *Config, cc childConfig) (*serverProc, error) {
	cmd := exec.Command(cfg.ServerCommand[0], cfg.ServerCommand[1:]...)
	cmd.Env = append(os.Environ(), cfg.ServerEnv...)
	p := &serverProc{cmd: cmd, stderr: &tailBuffer{max: 8 << 10}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server child %s: %w", cfg.ServerCommand[0], err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	b, _ := json.Marshal(cc)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.kill()
		return nil, fmt.Errorf("server child: send config: %w", err)
	}
	type answer struct {
		r   childReady
		err error
	}
	ready := make(chan answer, 1)
	go func() {
		var a answer
		line, err := bufio.NewReader(out).ReadBytes('\n')
		if a.err = err; err == nil {
			a.err = json.Unmarshal(line, &a.r)
		}
		ready <- a
		io.Copy(io.Discard, out)
	}()
	select {
	case a := <-ready:
		if err = a.err; err == nil && a.r.URL == "" {
			err = errors.New("no URL in its answer")
		}
		p.URL, p.Backends = a.r.URL, a.r.Backends
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(2 * time.Minute):
		err = errors.New("not ready after 2 minutes")
	}
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("server child did not start: %v: %s", err, strings.TrimSpace(p.stderr.String()))
	}
	return p, nil
}

// CPU returns the child's CPU time so far, user and system, from
// /proc/<pid>/stat (Linux; an error elsewhere). Its resolution is a clock
// tick, 10 ms.
func (p *serverProc) CPU() (time.Duration, error) {
	return procCPU(p.cmd.Process.Pid)
}

// Stop closes the child's stdin, which makes it shut down gracefully, and
// waits for it; after 30 s it kills it.
func (p *serverProc) Stop() error {
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
		return errors.New("server child did not stop within 30 s; killed")
	}
	if p.err != nil {
		return fmt.Errorf("server child: %w: %s", p.err, strings.TrimSpace(p.stderr.String()))
	}
	return nil
}

func (p *serverProc) kill() {
	p.stdin.Close()
	p.cmd.Process.Kill()
	<-p.exited
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// architecture Go runs Linux on.
const clockTicks = 100

// procCPU reads utime + stime (fields 14 and 15) of /proc/<pid>/stat. They
// include every thread of the process, exited ones too.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] { // fields 14 and 15, counted from field 3
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
