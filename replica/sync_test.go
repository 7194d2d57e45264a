package replica_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/internal/testutil"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/replica"
	"github.com/cambiumdb/cambium/server"
)

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

func mustServer(t testing.TB, cfg server.Config) (*server.Server, *api.Client) {
	t.Helper()
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		srv.Close(context.Background())
	})
	return srv, api.NewClient(ts.URL)
}

// mustReplica opens a replica of volume in dir and a *sql.DB on it.
func mustReplica(t testing.TB, path, volume string) (*replica.Replica, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	r, err := replica.Open(ctx, path, replica.Options{Volume: volume})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		r.Close(ctx)
	})
	return r, db
}

// envInt reads a test size from the environment, so soak runs can scale up.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// randomTx runs one random write transaction: inserts, updates, deletes,
// sometimes a schema change; tx number big is larger than SQLite's page cache.
func randomTx(t *testing.T, db *sql.DB, rng *rand.Rand, n int, big bool, tables *int) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("tx %d: %s: %v", n, q, err)
		}
	}
	table := fmt.Sprintf("t%d", rng.IntN(*tables))
	switch k := rng.IntN(100); {
	case big:
		// About 6 MB of rows: far beyond the 2 MB default page cache, so the
		// pager spills pages before COMMIT.
		for i := range 1500 {
			exec("INSERT INTO "+table+"(a, b, c) VALUES (?, ?, randomblob(4000))", i, "big")
		}
	case k < 5:
		exec(fmt.Sprintf("CREATE TABLE t%d(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)", *tables))
		*tables++
	case k < 8:
		exec(fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_a_%d ON %s(a)", table, rng.IntN(3), table))
	case k < 45:
		for range 1 + rng.IntN(8) {
			exec("INSERT INTO "+table+"(a, b, c) VALUES (?, ?, ?)", rng.IntN(1000),
				fmt.Sprintf("row %d of tx %d", rng.IntN(1e6), n), bytes.Repeat([]byte{byte(n)}, rng.IntN(3000)))
		}
	case k < 75:
		exec("UPDATE "+table+" SET a = a + 1, b = b || '.' WHERE id % 7 = ?", rng.IntN(7))
	case k < 95:
		exec("DELETE FROM "+table+" WHERE id IN (SELECT id FROM "+table+" ORDER BY random() LIMIT ?)", 1+rng.IntN(5))
	default:
		exec("UPDATE "+table+" SET c = zeroblob(?) WHERE id = (SELECT max(id) FROM "+table+")", rng.IntN(9000))
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("tx %d: commit: %v", n, err)
	}
}

func checkpointed(t *testing.T, r *replica.Replica) []byte {
	t.Helper()
	if err := r.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// versionImages yields, for each version 1..head of volume in turn, the
// database file at that version as read back from the server's page store:
// it starts from the empty file and applies, version by version, the pages
// each one wrote (found in the page index) read through the API at that
// version, truncated or extended to the version's page count.
func versionImages(t *testing.T, srv *server.Server, c *api.Client, volume string, fn func(version int64, file []byte)) {
	t.Helper()
	ctx := context.Background()
	v, err := srv.Meta.Volume(ctx, volume)
	if err != nil {
		t.Fatal(err)
	}
	var file []byte
	for version := int64(1); version <= v.Head; version++ {
		cm, err := srv.Meta.Commit(ctx, v.ID, version)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := srv.Meta.ChangedPages(ctx, v.ID, version-1, version)
		if err != nil {
			t.Fatal(err)
		}
		size := int(cm.PageCount) * v.PageSize
		if size <= len(file) {
			file = file[:size]
		} else {
			file = append(file, make([]byte, size-len(file))...)
		}
		nos := make([]uint32, len(refs))
		for i, ref := range refs {
			nos[i] = ref.PageNo
		}
		got := 0
		for len(nos) > 0 {
			chunk := nos[:min(len(nos), api.DefaultMaxReadPages)]
			nos = nos[len(chunk):]
			if _, err := c.ReadPages(ctx, volume, version, chunk, func(p api.StreamedPage) error {
				if p.Version != version {
					return fmt.Errorf("page %d at version %d comes from version %d", p.No, version, p.Version)
				}
				copy(file[int(p.No-1)*v.PageSize:], p.Data)
				got++
				return nil
			}); err != nil {
				t.Fatalf("read version %d: %v", version, err)
			}
		}
		if got != len(refs) {
			t.Fatalf("version %d: read %d of the %d pages it wrote", version, got, len(refs))
		}
		fn(version, file)
	}
}

func integrityCheck(t *testing.T, dir string, version int64, file []byte) {
	t.Helper()
	path := filepath.Join(dir, "snapshot.db")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check at version %d = %q, %v", version, res, err)
	}
}

// TestSync_Invariant2: random transactions on replica A, pushed in batches;
// replica B pulls after each batch and must be byte-identical to A; every
// version read back from the page store passes integrity_check.
// CAMBIUM_INV2_TXNS scales the run (default 1,000).
func TestSync_Invariant2(t *testing.T) {
	txns := envInt("CAMBIUM_INV2_TXNS", 1000)
	const batch = 40
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			srv, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "v")
			b, _ := mustReplica(t, filepath.Join(dir, "b.db"), "v")
			if _, err := dbA.Exec("CREATE TABLE t0(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)"); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(name))))
			tables := 1
			vacuumAt, bigAt := txns/2, txns/3
			seen := map[int64][]byte{} // replica b's file at the versions it pulled
			for n := 1; n <= txns; n++ {
				if n == vacuumAt {
					if _, err := dbA.Exec("VACUUM"); err != nil {
						t.Fatalf("VACUUM: %v", err)
					}
				} else {
					randomTx(t, dbA, rng, n, n == bigAt, &tables)
				}
				if n%batch != 0 && n != txns {
					continue
				}
				res, err := a.Push(ctx, c)
				if err != nil {
					t.Fatalf("push after tx %d: %v", n, err)
				}
				for _, r := range res {
					if r.Decision != commit.FastPath {
						t.Fatalf("push after tx %d: %+v, want fast-path (one writer)", n, r)
					}
				}
				st, err := b.Pull(ctx, c)
				if err != nil {
					t.Fatalf("pull after tx %d: %v", n, err)
				}
				fa, fb := checkpointed(t, a), checkpointed(t, b)
				if !bytes.Equal(fa, fb) {
					t.Fatalf("after tx %d (version %d): b (%d bytes) differs from a (%d bytes)", n, st.BaseVersion, len(fb), len(fa))
				}
				seen[int64(st.BaseVersion)] = fb
			}
			// Every version, not only those B saw, read back from the page
			// store and checked; where B saw it, also byte-identical to B.
			snapDir := t.TempDir()
			versionImages(t, srv, c, "v", func(version int64, file []byte) {
				integrityCheck(t, snapDir, version, file)
				if want, ok := seen[version]; ok && !bytes.Equal(file, want) {
					t.Fatalf("version %d read from the page store differs from replica b's file then", version)
				}
			})
		})
	}
}
