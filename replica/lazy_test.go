package replica_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/replica"
)

// mustLazy opens a lazy replica of volume at path, fetching through c, and
// brings it to head.
func mustLazy(t testing.TB, path, volume string, c *api.Client) (*replica.Replica, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	r, err := replica.Open(ctx, path, replica.Options{Volume: volume, Lazy: true, Fetcher: c})
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
	if _, err := r.Pull(ctx, c); err != nil {
		t.Fatal(err)
	}
	return r, db
}

// mustSameState reads every page of both replicas' latest states and
// fails on the first that differs (a lazy replica fetches what it lacks).
func mustSameState(t *testing.T, what string, want, got *replica.Replica) {
	t.Helper()
	ctx := context.Background()
	nw, err := want.PageCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ng, err := got.PageCount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nw != ng {
		t.Fatalf("%s: %d pages, want %d", what, ng, nw)
	}
	pw, pg := make([]byte, want.PageSize()), make([]byte, got.PageSize())
	for n := uint32(1); n <= nw; n++ {
		if err := want.ReadPage(ctx, n, pw); err != nil {
			t.Fatal(err)
		}
		if err := got.ReadPage(ctx, n, pg); err != nil {
			t.Fatalf("%s: page %d: %v", what, n, err)
		}
		if !bytes.Equal(pw, pg) {
			t.Fatalf("%s: page %d differs", what, n)
		}
	}
}

// TestLazy_ColdQuery: a lazy replica of a volume starts with no page; a
// point query fetches a handful of pages, not the volume; a scan then
// fetches the table, and the replica reads exactly what a full one does.
func TestLazy_ColdQuery(t *testing.T) {
	const rows = 3000
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "big", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "big")
			mustExec(t, dbA, "CREATE TABLE big(id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
			mustExec(t, dbA, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) INSERT INTO big SELECT i, randomblob(1000) FROM n", rows)
			pushAll(t, a, c)
			total, err := a.PageCount(ctx)
			if err != nil {
				t.Fatal(err)
			}

			b, dbB := mustLazy(t, filepath.Join(dir, "b.db"), "big", c)
			if st := b.Lazy(); !st.Lazy || st.Resident != 0 || st.Fetches != 0 {
				t.Fatalf("lazy clone: %+v, want lazy with no page held", st)
			}
			q := "SELECT hex(body) FROM big WHERE id = 2345"
			var want, got string
			if err := dbA.QueryRow(q).Scan(&want); err != nil {
				t.Fatal(err)
			}
			if err := dbB.QueryRow(q).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatal("the lazy replica's row differs")
			}
			st := b.Lazy()
			t.Logf("point query on %d pages: %d fetches, %d pages held", total, st.Fetches, st.Resident)
			if st.Fetches == 0 || st.Fetches > 8 || st.Resident > int(total)/10 {
				t.Fatalf("point query on %d pages: %+v, want a few fetches and under a tenth of the pages", total, st)
			}
			if n := queryInt(t, dbB, "SELECT count(*) FROM big WHERE length(body) = 1000"); n != rows {
				t.Fatalf("scan: %d rows, want %d", n, rows)
			}
			mustIntegrity(t, dbB)
			mustSameState(t, "lazy replica after the scan", a, b)
		})
	}
}

// TestLazy_Sync: a lazy replica follows a writer through random
// transactions (schema changes and a VACUUM among them), pulling only the
// changed pages it holds, and writes too: its commits are fast-path or
// replayed and it rebases, lazily. After each round both replicas read the
// same database, page for page.
func TestLazy_Sync(t *testing.T) {
	rounds := envInt("CAMBIUM_LAZY_ROUNDS", 12)
	const perRound = 15
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "v")
			mustExec(t, dbA, "CREATE TABLE t0(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)")
			mustExec(t, dbA, "CREATE TABLE notes(id INTEGER PRIMARY KEY, by TEXT)")
			pushAll(t, a, c)
			b, dbB := mustLazy(t, filepath.Join(dir, "b.db"), "v", c)
			rng := rand.New(rand.NewPCG(11, uint64(len(name))))
			tables := 1
			for round := range rounds {
				for i := range perRound {
					n := round*perRound + i + 1
					if round == rounds/2 && i == 0 {
						mustExec(t, dbA, "VACUUM")
						continue
					}
					randomTx(t, dbA, rng, n, false, &tables)
				}
				pushAll(t, a, c)
				// b reads a little, writes, pushes (stale: replayed, then
				// it rebases), and a catches up.
				queryInt(t, dbB, "SELECT count(*) FROM notes")
				mustExec(t, dbB, "INSERT INTO notes(by) VALUES (?)", fmt.Sprintf("b, round %d", round))
				for _, res := range pushAll(t, b, c) {
					if res.Err != nil {
						t.Fatalf("round %d: b's commit: %v", round, res.Err)
					}
				}
				if _, err := a.Pull(ctx, c); err != nil {
					t.Fatal(err)
				}
				if round%3 == 2 || round == rounds-1 {
					mustSameState(t, fmt.Sprintf("round %d", round), a, b)
				} else if x, y := queryInt(t, dbA, "SELECT count(*) FROM notes"), queryInt(t, dbB, "SELECT count(*) FROM notes"); x != y || x != int64(round+1) {
					t.Fatalf("round %d: a has %d notes, b %d, want %d", round, x, y, round+1)
				}
			}
			mustIntegrity(t, dbB)
			st := b.Lazy()
			t.Logf("lazy replica: %+v", st)
		})
	}
}

// TestLazy_Reopen: pages a lazy replica fetched survive Close; reopened
// without a fetcher it still reads them, and a page it never fetched is a
// typed error, not a wrong page.
func TestLazy_Reopen(t *testing.T) {
	ctx := context.Background()
	_, c := mustServer(t, backends["Embedded"](t))
	if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "v")
	mustExec(t, dbA, "CREATE TABLE big(id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
	mustExec(t, dbA, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO big SELECT i, randomblob(1000) FROM n")
	pushAll(t, a, c)

	path := filepath.Join(dir, "b.db")
	b, err := replica.Open(ctx, path, replica.Options{Volume: "v", Lazy: true, Fetcher: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pull(ctx, c); err != nil {
		t.Fatal(err)
	}
	dbB, err := sql.Open("cambium", b.Path())
	if err != nil {
		t.Fatal(err)
	}
	want := queryInt(t, dbB, "SELECT length(body) FROM big WHERE id = 17")
	held := b.Lazy().Resident
	dbB.Close()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}

	b, err = replica.Open(ctx, path, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if st := b.Lazy(); !st.Lazy || st.Resident != held {
		t.Fatalf("reopened: %+v, want lazy holding the %d pages fetched before", st, held)
	}
	dbB, err = sql.Open("cambium", b.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()
	if got := queryInt(t, dbB, "SELECT length(body) FROM big WHERE id = 17"); got != want {
		t.Fatalf("row 17 after reopening: %d, want %d", got, want)
	}
	var n int64
	if err := dbB.QueryRow("SELECT count(*) FROM big").Scan(&n); err == nil {
		t.Fatal("a scan over pages never fetched worked without a fetcher")
	}
}
