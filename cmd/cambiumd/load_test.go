package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pgschema/pgstore"
	"github.com/cambiumdb/cambium/replica"
)

// dropResponse is a transport whose requests reach the server and are
// processed, but whose responses the client never sees: a client-side
// timeout after the server acted.
type dropResponse struct{}

var errForcedTimeout = errors.New("forced client-side timeout")

func (dropResponse) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, errForcedTimeout
}

func loadSize(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestLoad_Invariant1: three cambiumd processes over one PostgreSQL and one
// MinIO. Eight replicas on eight volumes push through random servers, each
// push first lost to a forced client-side timeout and then retried; two
// replicas race on one shared volume, the loser resetting and redoing its
// write. Versions stay contiguous, each commit is stored exactly once,
// nothing is stored for a rejected push, and every replica ends equal to
// its volume's head. CAMBIUM_LOAD_COMMITS scales it (default 50).
func TestLoad_Invariant1(t *testing.T) {
	ctx := context.Background()
	commits := loadSize("CAMBIUM_LOAD_COMMITS", 50)
	races := commits / 2
	pgURL := testutil.MustPostgresSchema(t)
	s3 := testutil.MustS3(t)
	bucket := "cambium-test-" + testutil.RandomName(6)
	env := []string{"CAMBIUM_S3_ACCESS_KEY=" + s3.AccessKey, "CAMBIUM_S3_SECRET_KEY=" + s3.SecretKey}
	var servers []string
	for range 3 {
		p := startCambiumd(t, env, "--pg", pgURL, "--s3", s3.Endpoint, "--s3-bucket", bucket)
		servers = append(servers, p.url)
	}
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		mu.Lock()
		defer mu.Unlock()
		return servers[rng.IntN(len(servers))]
	}
	lossy := func() *api.Client {
		c := api.NewClient(pick())
		c.HTTP = &http.Client{Transport: dropResponse{}}
		return c
	}
	dir := t.TempDir()
	replicas := map[string]*replica.Replica{}
	open := func(name, volume string) (*replica.Replica, *sql.DB) {
		r, err := replica.Open(ctx, filepath.Join(dir, name+".db"), replica.Options{Volume: volume})
		if err != nil {
			t.Fatal(err)
		}
		replicas[name] = r
		db, err := sql.Open("cambium", r.Path())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close(); r.Close(ctx) })
		return r, db
	}

	const volumes = 8
	setup := api.NewClient(servers[0])
	for i := range volumes {
		if _, err := setup.CreateVolume(ctx, fmt.Sprintf("v%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := setup.CreateVolume(ctx, "shared", 0); err != nil {
		t.Fatal(err)
	}
	// The racing pair checks the strict path: the loser is rejected, resets
	// and redoes (conflict resolution has its own tests).
	if _, err := setup.Configure(ctx, "shared", api.Settings{Policy: "strict"}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for i := range volumes {
		volume := fmt.Sprintf("v%d", i)
		r, db := open(volume, volume)
		wg.Go(func() {
			if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER UNIQUE)"); err != nil {
				t.Error(err)
				return
			}
			for k := 1; k < commits; k++ {
				if _, err := db.Exec("INSERT INTO t(k) VALUES (?)", k); err != nil {
					t.Error(err)
					return
				}
				if k == 1 {
					// The CREATE TABLE and the first insert travel together.
					if _, err := r.Push(ctx, api.NewClient(pick())); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if _, err := r.Push(ctx, lossy()); !errors.Is(err, errForcedTimeout) {
					t.Errorf("%s: lossy push: %v, want the forced timeout", volume, err)
					return
				}
				res, err := r.Push(ctx, api.NewClient(pick()))
				if err != nil || len(res) != 1 || !res[0].Duplicate || res[0].Decision != commit.FastPath || res[0].Version != uint64(k+1) {
					t.Errorf("%s: retry of commit %d: %+v %v, want a duplicate fast-path at version %d", volume, k+1, res, err, k+1)
					return
				}
			}
		})
	}

	// The racing pair on one volume.
	accepted := make([]int, 2)
	rejected := make([]int, 2)
	for w := range 2 {
		r, db := open(fmt.Sprintf("shared%d", w), "shared")
		wg.Go(func() {
			if w == 0 {
				if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, who INTEGER, k INTEGER, UNIQUE(who, k))"); err != nil {
					t.Error(err)
					return
				}
				if _, err := r.Push(ctx, api.NewClient(pick())); err != nil {
					t.Error(err)
					return
				}
			}
			for accepted[w] < races {
				if _, err := r.Pull(ctx, api.NewClient(pick())); err != nil {
					t.Error(err)
					return
				}
				if _, err := db.Exec("INSERT INTO t(who, k) VALUES (?, ?)", w, accepted[w]); err != nil {
					// The other writer has not created the table yet.
					if _, err := r.PullReset(ctx, api.NewClient(pick())); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				res, err := r.Push(ctx, api.NewClient(pick()))
				if err != nil {
					t.Error(err)
					return
				}
				var stale *commit.StaleBaseError
				switch {
				case len(res) == 1 && res[0].Decision == commit.FastPath:
					accepted[w]++
				case len(res) == 1 && errors.As(res[0].Err, &stale):
					rejected[w]++
					if _, err := r.PullReset(ctx, api.NewClient(pick())); err != nil {
						t.Error(err)
						return
					}
				default:
					t.Errorf("shared: push %+v", res)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("racing pair: accepted %v, rejected %v", accepted, rejected)

	meta, err := pgstore.Open(ctx, pgURL, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	check := func(name string, wantHead int64) {
		v, err := meta.Volume(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if v.Head != wantHead {
			t.Errorf("%s: head %d, want %d", name, v.Head, wantHead)
		}
		cs, err := meta.Commits(ctx, v.ID, 0, v.Head)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for i, c := range cs {
			if c.Version != int64(i+1) {
				t.Fatalf("%s: commit %d has version %d: not contiguous", name, i, c.Version)
			}
			key := c.ClientID + "/" + strconv.FormatInt(c.ClientSeq, 10)
			if seen[key] {
				t.Fatalf("%s: commit %s stored twice", name, key)
			}
			seen[key] = true
		}
	}
	for i := range volumes {
		check(fmt.Sprintf("v%d", i), int64(commits))
	}
	// One version for the CREATE TABLE, one per accepted write: rejected
	// pushes stored nothing.
	check("shared", int64(1+2*races))

	// Every replica ends equal to its volume's head, read back from the store.
	final := api.NewClient(servers[0])
	for name, r := range replicas {
		st, err := r.Pull(ctx, final)
		if err != nil || st.Pending != 0 {
			t.Fatalf("%s: final pull: %+v %v", name, st, err)
		}
		if err := r.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(r.Path())
		if err != nil {
			t.Fatal(err)
		}
		if want := headFile(t, final, st.Volume, int64(st.BaseVersion), st.PageCount); !bytes.Equal(got, want) {
			t.Errorf("%s: replica file differs from the head of %s read from the page store", name, st.Volume)
		}
	}
}

// headFile assembles snapshot (volume, version) from the server's pages.
func headFile(t *testing.T, c *api.Client, volume string, version int64, pageCount uint32) []byte {
	t.Helper()
	nos := make([]uint32, pageCount)
	for i := range nos {
		nos[i] = uint32(i + 1)
	}
	file := make([]byte, int(pageCount)*4096)
	for len(nos) > 0 {
		chunk := nos[:min(len(nos), api.DefaultMaxReadPages)]
		nos = nos[len(chunk):]
		if _, err := c.ReadPages(context.Background(), volume, version, chunk, func(p api.StreamedPage) error {
			copy(file[int(p.No-1)*4096:], p.Data)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return file
}
