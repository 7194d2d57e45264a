package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cambiumdb/cambium/pages"
)

// fault is what faultProxy does with one request.
type fault int

const (
	pass      fault = iota // forward to MinIO
	busy                   // answer 503 SlowDown without forwarding
	throttle               // answer 429 SlowDown without forwarding
	drop                   // close the connection without answering
	truncate               // forward, then cut the response body in half
	stall                  // answer nothing until the client gives up
	forbidden              // answer 403 AccessDenied without forwarding
)

// faultProxy is a reverse proxy on 127.0.0.1 in front of the real MinIO that
// applies queued faults to the next requests, one fault per request, and
// records every request it sees.
type faultProxy struct {
	srv *httptest.Server
	mu  struct {
		sync.Mutex
		faults []fault
		seen   []string // "METHOD /path" of each request, in order
	}
	served  chan string   // gets the fault name of each faulted request, if anyone listens
	closing chan struct{} // closed when the test ends, to release stalled requests
}

func newFaultProxy(t *testing.T, endpoint string) *faultProxy {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: endpoint}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// Keep the Host header the client signed (AWS signature v4
			// covers it), so MinIO verifies the signature unchanged.
			r.Out.Host = r.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0), // the cut bodies are on purpose
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Header.Get("X-Test-Truncate") != "" && resp.ContentLength > 1 {
				resp.Body = &failingReader{r: resp.Body, n: resp.ContentLength / 2}
			}
			return nil
		},
	}
	p := &faultProxy{served: make(chan string, 100), closing: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := p.next(r)
		switch f {
		case busy:
			writeS3Error(w, http.StatusServiceUnavailable, "SlowDown")
		case throttle:
			writeS3Error(w, http.StatusTooManyRequests, "SlowDown")
		case forbidden:
			writeS3Error(w, http.StatusForbidden, "AccessDenied")
		case drop:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
		case stall:
			// Read the request, so the server notices when the client gives
			// up and closes the connection, then answer nothing.
			io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-p.closing:
			}
		case truncate:
			r.Header.Set("X-Test-Truncate", "1")
			rp.ServeHTTP(w, r)
		case pass:
			rp.ServeHTTP(w, r)
		}
		if f != pass {
			select {
			case p.served <- fmt.Sprint(f):
			default:
			}
		}
	}))
	t.Cleanup(func() {
		close(p.closing)
		p.srv.Close()
	})
	return p
}

// endpoint returns the proxy's host:port, for Config.Endpoint.
func (p *faultProxy) endpoint() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// inject queues faults for the next requests and forgets the requests seen.
func (p *faultProxy) inject(faults ...fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.faults = faults
	p.mu.seen = nil
}

func (p *faultProxy) next(r *http.Request) fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.seen = append(p.mu.seen, r.Method+" "+r.URL.Path)
	if len(p.mu.faults) == 0 {
		return pass
	}
	f := p.mu.faults[0]
	p.mu.faults = p.mu.faults[1:]
	return f
}

// seen returns the requests seen since the last inject.
func (p *faultProxy) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.mu.seen)
}

func writeS3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test proxy</Message></Error>`, code)
}

// failingReader returns n bytes of r, then an error.
type failingReader struct {
	r io.ReadCloser
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("injected: body cut short")
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

func (f *failingReader) Close() error { return f.r.Close() }

// proxied opens a Store on a fresh bucket through a new faultProxy.
func proxied(t *testing.T, mutate func(*Config)) (*Store, *faultProxy) {
	t.Helper()
	cfg := testConfig(t)
	p := newFaultProxy(t, cfg.Endpoint)
	cfg.Endpoint = p.endpoint()
	if mutate != nil {
		mutate(&cfg)
	}
	return mustOpen(t, cfg), p
}

func wantSeen(t *testing.T, p *faultProxy, want ...string) {
	t.Helper()
	if got := p.seen(); !slices.Equal(got, want) {
		t.Fatalf("proxy saw %q, want %q", got, want)
	}
}

func repeat(s string, n int) []string {
	r := make([]string, n)
	for i := range r {
		r[i] = s
	}
	return r
}

func TestStore_Retry(t *testing.T) {
	s, p := proxied(t, nil)
	ctx := t.Context()
	b := s.Bucket()
	obj := "/" + b + "/segments/x"
	data := bytes.Repeat([]byte("0123456789abcdef"), 512) // 8 KiB

	t.Run("Put", func(t *testing.T) {
		p.inject(busy, throttle, drop)
		if err := s.Put(ctx, "segments/x", data); err != nil {
			t.Fatalf("Put through 503, 429 and a dropped connection=%v, want nil", err)
		}
		wantSeen(t, p, repeat("PUT "+obj, 4)...)
	})
	t.Run("Read", func(t *testing.T) {
		p.inject(busy, truncate, busy)
		got, err := s.Read(ctx, "segments/x")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Read through 503, a cut body and 503=%d bytes, %v; want the %d bytes put", len(got), err, len(data))
		}
		wantSeen(t, p, repeat("GET "+obj, 4)...)
	})
	t.Run("ReadRange", func(t *testing.T) {
		p.inject(truncate, busy)
		got, err := s.ReadRange(ctx, "segments/x", 100, 5000)
		if err != nil || !bytes.Equal(got, data[100:5100]) {
			t.Fatalf("ReadRange through a cut body and 503=%d bytes, %v; want data[100:5100]", len(got), err)
		}
		wantSeen(t, p, repeat("GET "+obj, 3)...)
	})
	t.Run("ReadRangeDrop", func(t *testing.T) {
		p.inject(drop)
		got, err := s.ReadRange(ctx, "segments/x", 0, 10)
		if err != nil || !bytes.Equal(got, data[:10]) {
			t.Fatalf("ReadRange through a dropped connection=%q, %v; want data[:10]", got, err)
		}
		// net/http may itself resend a GET whose reused connection closed
		// before answering; either way the proxy saw the failed attempt.
		if got := p.seen(); len(got) != 2 {
			t.Fatalf("proxy saw %q, want 2 GETs", got)
		}
	})
	t.Run("List", func(t *testing.T) {
		p.inject(busy, throttle)
		var keys []string
		for o, err := range s.List(ctx, "segments/") {
			if err != nil {
				t.Fatalf("List through 503 and 429: %v", err)
			}
			keys = append(keys, o.Key)
		}
		if !slices.Equal(keys, []string{"segments/x"}) {
			t.Fatalf("List=%q, want [segments/x]", keys)
		}
		wantSeen(t, p, repeat("GET /"+b+"/", 3)...)
	})
	t.Run("Delete", func(t *testing.T) {
		p.inject(busy, drop)
		if err := s.Delete(ctx, "segments/x"); err != nil {
			t.Fatalf("Delete through 503 and a dropped connection=%v, want nil", err)
		}
		wantSeen(t, p, repeat("DELETE "+obj, 3)...)
		if _, err := s.Read(ctx, "segments/x"); !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("Read after Delete=%v, want ErrNotFound", err)
		}
	})
	t.Run("TransportTimeout", func(t *testing.T) {
		// A timeout of the transport, not of the caller's context, is
		// transient.
		tr, err := minio.DefaultTransport(false)
		if err != nil {
			t.Fatal(err)
		}
		tr.ResponseHeaderTimeout = 200 * time.Millisecond
		s, p := proxied(t, func(c *Config) { c.Transport = tr })
		p.inject(stall)
		if err := s.Put(ctx, "segments/t", data); err != nil {
			t.Fatalf("Put through a stalled request=%v, want nil", err)
		}
		if got := p.seen(); len(got) != 2 {
			t.Fatalf("proxy saw %q, want 2 PUTs", got)
		}
	})
	t.Run("Open", func(t *testing.T) {
		cfg := testConfig(t)
		p := newFaultProxy(t, cfg.Endpoint)
		cfg.Endpoint = p.endpoint()
		p.inject(busy, drop)
		mustOpen(t, cfg)
		if got := p.seen(); len(got) < 3 {
			t.Fatalf("proxy saw %q, want 2 failed requests and then the bucket check", got)
		}
	})
}

func TestStore_NoRetry(t *testing.T) {
	t.Run("WrongSecret", func(t *testing.T) {
		cfg := testConfig(t)
		p := newFaultProxy(t, cfg.Endpoint)
		cfg.Endpoint = p.endpoint()
		cfg.SecretKey = "not-the-secret"
		_, err := Open(t.Context(), cfg)
		resp, _ := asErrorResponse(err)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Open with a wrong secret=%v, want a 403", err)
		}
		if got := p.seen(); len(got) != 1 {
			t.Fatalf("proxy saw %q, want 1 request (a 403 is not retried)", got)
		}
	})
	s, p := proxied(t, nil)
	ctx := t.Context()
	obj := "/" + s.Bucket() + "/segments/x"
	t.Run("Forbidden", func(t *testing.T) {
		// Put retries AccessDenied a bounded number of times (see Put), then
		// gives up with the error.
		p.inject(forbidden, forbidden, forbidden)
		if err := s.Put(ctx, "segments/x", []byte("x")); err == nil {
			t.Fatal("Put answered 403=nil, want an error")
		}
		wantSeen(t, p, "PUT "+obj, "PUT "+obj, "PUT "+obj)
	})
	t.Run("ForbiddenOnceOnPut", func(t *testing.T) {
		p.inject(forbidden)
		if err := s.Put(ctx, "segments/once", []byte("x")); err != nil {
			t.Fatalf("Put after one AccessDenied=%v, want success on retry", err)
		}
		once := "/" + s.Bucket() + "/segments/once"
		wantSeen(t, p, "PUT "+once, "PUT "+once)
	})
	t.Run("NotFound", func(t *testing.T) {
		p.inject()
		if _, err := s.Read(ctx, "segments/x"); !errors.Is(err, pages.ErrNotFound) {
			t.Fatalf("Read=%v, want ErrNotFound", err)
		}
		wantSeen(t, p, "GET "+obj)
	})
	t.Run("RangeError", func(t *testing.T) {
		if err := s.Put(ctx, "segments/x", []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		p.inject()
		_, err := s.ReadRange(ctx, "segments/x", 10, 1)
		var re *pages.RangeError
		if !errors.As(err, &re) || re.Size != 10 {
			t.Fatalf("ReadRange past the end=%v, want a RangeError with Size 10", err)
		}
		// One GET answered 416, then one HEAD for the size.
		wantSeen(t, p, "GET "+obj, "HEAD "+obj)
		p.inject()
		_, err = s.ReadRange(ctx, "segments/x", 5, 10)
		if !errors.As(err, &re) || re.Size != 10 {
			t.Fatalf("ReadRange across the end=%v, want a RangeError with Size 10", err)
		}
		// The short 206 carries the size: one GET.
		wantSeen(t, p, "GET "+obj)
	})
	t.Run("GiveUp", func(t *testing.T) {
		s, p := proxied(t, func(c *Config) { c.MaxRetries = 2 })
		p.inject(busy, busy, busy, busy)
		err := s.Delete(ctx, "segments/x")
		if resp, _ := asErrorResponse(err); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Delete answered 503 four times=%v, want the 503", err)
		}
		wantSeen(t, p, repeat("DELETE /"+s.Bucket()+"/segments/x", 3)...)
	})
	t.Run("NoRetries", func(t *testing.T) {
		s, p := proxied(t, func(c *Config) { c.MaxRetries = -1 })
		p.inject(busy)
		if err := s.Put(ctx, "segments/y", []byte("y")); err == nil {
			t.Fatal("Put answered 503 with retries off=nil, want an error")
		}
		wantSeen(t, p, "PUT /"+s.Bucket()+"/segments/y")
	})
	t.Run("CanceledWhileWaiting", func(t *testing.T) {
		// A backoff of an hour: only the context can end the wait.
		s, p := proxied(t, func(c *Config) { c.RetryBase, c.RetryMax = time.Hour, time.Hour })
		p.inject(busy)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			select {
			case <-p.served:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := s.Put(ctx, "segments/z", []byte("z"))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put canceled during backoff=%v, want context.Canceled", err)
		}
		wantSeen(t, p, "PUT /"+s.Bucket()+"/segments/z")
	})
}

func TestTransient(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &url.Error{Op: "Put", URL: "http://x", Err: &net.OpError{Op: "dial", Net: "tcp",
			Err: os.NewSyscallError("connect", errno)}}
	}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"503", minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, true},
		{"500", minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, true},
		{"502", minio.ErrorResponse{StatusCode: 502}, true},
		{"504", minio.ErrorResponse{StatusCode: 504}, true},
		{"429", minio.ErrorResponse{StatusCode: 429}, true},
		{"SlowDownAs400", minio.ErrorResponse{StatusCode: 400, Code: "SlowDown"}, true},
		{"Wrapped503", fmt.Errorf("put k: %w", minio.ErrorResponse{StatusCode: 503}), true},
		{"404", minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey"}, false},
		{"403", minio.ErrorResponse{StatusCode: 403, Code: "SignatureDoesNotMatch"}, false},
		{"416", minio.ErrorResponse{StatusCode: 416, Code: "InvalidRange"}, false},
		{"400", minio.ErrorResponse{StatusCode: 400, Code: "InvalidArgument"}, false},
		{"ExpiredToken", minio.ErrorResponse{StatusCode: 400, Code: "ExpiredToken"}, false},
		{"Refused", opErr(syscall.ECONNREFUSED), true},
		{"Reset", opErr(syscall.ECONNRESET), true},
		{"ClosedUnderWrite", &url.Error{Op: "Put", URL: "http://x", Err: &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}}, true},
		{"NoSuchHost", &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}}}, false},
		{"EOF", &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, true},
		{"MinioEOF", &url.Error{Op: "Get", URL: "http://x", Err: errors.New("Connection closed by foreign host http://x. Retry again.")}, true},
		{"BodyCut", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), true},
		{"TransportTimeout", &url.Error{Op: "Get", URL: "http://x", Err: context.DeadlineExceeded}, true},
		{"RangeError", &pages.RangeError{}, false},
		{"Other", errors.New("bad Content-Range"), false},
		{"Canceled", context.Canceled, false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%s: %v)=%v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestRetryPolicy_Backoff(t *testing.T) {
	p := retryPolicy{maxRetries: 10, base: 10 * time.Millisecond, max: 100 * time.Millisecond}
	for attempt, ceil := range []time.Duration{10, 20, 40, 80, 100, 100, 100} {
		ceil *= time.Millisecond
		for range 100 {
			if d := p.backoff(attempt); d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d)=%v, want in [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
	if d := p.backoff(200); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("backoff(200)=%v, want capped at 100ms", d)
	}
	huge := retryPolicy{base: time.Hour, max: 2 * time.Hour}
	if d := huge.backoff(40); d < time.Hour || d > 2*time.Hour {
		t.Fatalf("backoff(40) with a base of 1h=%v, want in [1h, 2h] (no overflow)", d)
	}
}
