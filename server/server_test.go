package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/pgschema"
	"github.com/cambiumdb/cambium/server"
)

// backends are the configurations every API test runs against: the
// embedded default and the production pair on the real services.
var backends = map[string]func(t testing.TB) server.Config{
	"Embedded": func(t testing.TB) server.Config { return server.Config{DataDir: t.TempDir()} },
	"PostgresMinIO": func(t testing.TB) server.Config {
		s3 := testutil.MustS3(t)
		return server.Config{
			PostgresURL: testutil.MustPostgresSchema(t),
			S3: &s3store.Config{Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey,
				Bucket: "cambium-test-" + testutil.RandomName(6)},
		}
	},
}

// MustServer starts a server over cfg on a loopback listener and returns a
// client for it.
func MustServer(t testing.TB, cfg server.Config) (*server.Server, *api.Client) {
	t.Helper()
	ctx := context.Background()
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return srv, api.NewClient(ts.URL)
}

const pageSize = 4096

func page(seq int64, no uint32) []byte {
	return bytes.Repeat([]byte{byte(seq*31) ^ byte(no)}, pageSize)
}

func commitReq(client string, seq, parent, base int64, count uint32, nos ...uint32) commit.Request {
	r := commit.Request{ClientID: client, Seq: seq, Parent: parent, Base: base, PageSize: pageSize, PageCount: count}
	for _, no := range nos {
		r.Pages = append(r.Pages, commit.Page{No: no, Data: page(seq, no)})
	}
	return r
}

func pull(t *testing.T, c *api.Client, volume string, from int64) (api.PageStreamHeader, map[uint32]api.StreamedPage) {
	t.Helper()
	got := map[uint32]api.StreamedPage{}
	h, err := c.Pull(context.Background(), volume, from, func(p api.StreamedPage) error {
		if _, dup := got[p.No]; dup {
			return fmt.Errorf("page %d streamed twice", p.No)
		}
		got[p.No] = p
		return nil
	})
	if err != nil {
		t.Fatalf("Pull(from %d): %v", from, err)
	}
	return h, got
}

func TestAPI_PushPull(t *testing.T) {
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := MustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
				t.Fatal(err)
			}
			// Three chained commits: 1 writes pages 1-3, 2 writes 1 and 4, 3 shrinks to 3 pages.
			batch := []commit.Request{
				commitReq("a", 1, 0, 0, 3, 1, 2, 3),
				commitReq("a", 2, 1, 0, 4, 1, 4),
				commitReq("a", 3, 2, 0, 3, 1),
			}
			res, err := c.Push(ctx, "v", batch)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Decision != commit.FastPath || r.Version != int64(i+1) || r.Err != nil {
					t.Fatalf("result %d = %+v, want fast-path at version %d", i, r, i+1)
				}
			}
			t.Run("PullFromZero", func(t *testing.T) {
				h, got := pull(t, c, "v", 0)
				if h.Head != 3 || h.PageCount != 3 || len(got) != 3 {
					t.Fatalf("pull: head %d, %d pages of %d, want head 3 with pages 1-3", h.Head, len(got), h.PageCount)
				}
				want := map[uint32]int64{1: 3, 2: 1, 3: 1}
				for no, v := range want {
					if got[no].Version != v || !bytes.Equal(got[no].Data, page(v, no)) {
						t.Fatalf("page %d: version %d, want %d with its bytes", no, got[no].Version, v)
					}
				}
			})
			t.Run("PullFromOne", func(t *testing.T) {
				h, got := pull(t, c, "v", 1)
				// Page 4 was written in (1, 3] but lies beyond page count 3 at head.
				if h.Head != 3 || len(got) != 1 || got[1].Version != 3 {
					t.Fatalf("pull from 1: %d pages %v, want only page 1 at version 3", len(got), got)
				}
			})
			t.Run("Changes", func(t *testing.T) {
				// What pull sends, as runs of page numbers.
				for _, tc := range []struct {
					from int64
					want [][2]uint32
				}{{0, [][2]uint32{{1, 3}}}, {1, [][2]uint32{{1, 1}}}, {3, [][2]uint32{}}} {
					ch, err := c.Changes(ctx, "v", tc.from)
					if err != nil {
						t.Fatal(err)
					}
					if ch.Head != 3 || ch.PageCount != 3 || !slices.Equal(ch.Pages, tc.want) {
						t.Fatalf("changes from %d = %+v, want head 3, 3 pages, runs %v", tc.from, ch, tc.want)
					}
				}
				if _, err := c.Changes(ctx, "v", 4); !errors.As(err, new(*commit.BaseAheadError)) {
					t.Fatalf("changes from 4 > head: %v, want base ahead", err)
				}
			})
			t.Run("ReadPagesAtVersion", func(t *testing.T) {
				got := map[uint32][]byte{}
				h, err := c.ReadPages(ctx, "v", 2, []uint32{1, 2, 4, 9}, func(p api.StreamedPage) error {
					got[p.No] = p.Data
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if h.PageCount != 4 || len(got) != 3 || !bytes.Equal(got[1], page(2, 1)) || !bytes.Equal(got[4], page(2, 4)) || !bytes.Equal(got[2], page(1, 2)) {
					t.Fatalf("pages at version 2: count %d, pages %d", h.PageCount, len(got))
				}
			})
			t.Run("IdempotentRetry", func(t *testing.T) {
				res, err := c.Push(ctx, "v", batch)
				if err != nil {
					t.Fatal(err)
				}
				for i, r := range res {
					if !r.Duplicate || r.Version != int64(i+1) {
						t.Fatalf("retry result %d = %+v, want duplicate of version %d", i, r, i+1)
					}
				}
			})
			t.Run("StaleBase", func(t *testing.T) {
				// Strict: no merge or replay, the stale commit is refused.
				if _, err := c.Configure(ctx, "v", api.Settings{Policy: "strict"}); err != nil {
					t.Fatal(err)
				}
				res, err := c.Push(ctx, "v", []commit.Request{commitReq("b", 1, 0, 1, 1, 1)})
				if err != nil {
					t.Fatal(err)
				}
				var stale *commit.StaleBaseError
				if !errors.As(res[0].Err, &stale) || stale.Head != 3 || stale.Base != 1 {
					t.Fatalf("stale push: %+v, want StaleBaseError{Base 1, Head 3} across the wire", res[0])
				}
			})
			v, err := c.Volume(ctx, "v")
			if err != nil || v.Head != 3 {
				t.Fatalf("Volume = %+v, %v; want head 3", v, err)
			}
		})
	}
}

// TestAPI_BadInput sends each kind of bad push and checks it gets its typed
// error back and stores nothing.
func TestAPI_BadInput(t *testing.T) {
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const limit = 1 << 20
			conf := cfg(t)
			conf.MaxPushBytes = limit
			_, c := MustServer(t, conf)
			if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
				t.Fatal(err)
			}
			wrongSize := commitReq("a", 1, 0, 0, 1, 1)
			wrongSize.PageSize, wrongSize.Pages[0].Data = 1024, make([]byte, 1024)
			good := api.AppendPush(nil, []commit.Request{commitReq("a", 1, 0, 0, 1, 1)})
			badSum := bytes.Clone(good)
			badSum[len(badSum)-1] ^= 1
			cases := []struct {
				name   string
				volume string
				body   []byte
				check  func(error) bool
			}{
				{"WrongPageSize", "v", api.AppendPush(nil, []commit.Request{wrongSize}), isInvalid},
				{"PageZero", "v", api.AppendPush(nil, []commit.Request{commitReq("a", 1, 0, 0, 1, 0)}), isInvalid},
				{"PageCountBelowPage", "v", api.AppendPush(nil, []commit.Request{commitReq("a", 1, 0, 0, 2, 1, 2, 3)}), isMalformedOrInvalid},
				{"Truncated", "v", good[:len(good)-10], isMalformed},
				{"BadChecksum", "v", badSum, isChecksum},
				{"UnknownVolume", "nope", good, func(err error) bool { return errors.Is(err, pgschema.ErrVolumeNotFound) }},
				{"Oversized", "v", make([]byte, limit+1), isTooLarge},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					_, err := c.PushRaw(ctx, tc.volume, tc.body)
					if !tc.check(err) {
						t.Fatalf("push: err = %v (%T)", err, err)
					}
				})
			}
			t.Run("BaseAhead", func(t *testing.T) {
				res, err := c.Push(ctx, "v", []commit.Request{commitReq("a", 1, 0, 7, 1, 1)})
				var ahead *commit.BaseAheadError
				if err != nil || !errors.As(res[0].Err, &ahead) {
					t.Fatalf("push base 7 on head 0: %v %+v, want BaseAheadError", err, res)
				}
			})
			v, err := c.Volume(ctx, "v")
			if err != nil || v.Head != 0 {
				t.Fatalf("after bad input: %+v, %v; want head 0", v, err)
			}
		})
	}
}

func isInvalid(err error) bool {
	var e *commit.InvalidCommitError
	return errors.As(err, &e)
}

func isMalformed(err error) bool { return errors.Is(err, api.ErrMalformed) }

func isMalformedOrInvalid(err error) bool { return isMalformed(err) || isInvalid(err) }

func isChecksum(err error) bool {
	var e *commit.ChecksumError
	return errors.As(err, &e)
}

func isTooLarge(err error) bool {
	var e *api.RemoteError
	return errors.As(err, &e) && e.Code == commit.CodeTooLarge && e.Status == http.StatusRequestEntityTooLarge
}

// TestServer_HealthAndMetrics: /healthz answers, and /metrics reports the
// commit decisions and HTTP requests the server served.
func TestServer_HealthAndMetrics(t *testing.T) {
	ctx := context.Background()
	_, c := MustServer(t, server.Config{DataDir: t.TempDir()})
	get := func(path string) string {
		resp, err := http.Get(c.BaseURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if got := get("/healthz"); got != "ok\n" {
		t.Fatalf("/healthz = %q", got)
	}
	if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(ctx, "v", []commit.Request{commitReq("a", 1, 0, 0, 1, 1), commitReq("b", 1, 0, 0, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	m := get("/metrics")
	for _, want := range []string{
		`cambium_commit_decisions_total{decision="fast-path",duplicate="false"} 1`,
		`cambium_commit_decisions_total{decision="rejected",duplicate="false"} 1`,
		`cambium_http_requests_total{code="200",route="POST /v1/volumes/{name}/push"} 1`,
		`cambium_commit_group_commits_count`,
		`go_goroutines`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
