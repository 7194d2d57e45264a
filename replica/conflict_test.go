package replica_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/replica"
)

// pushAll pushes until nothing is pending, returning every decision.
func pushAll(t testing.TB, r *replica.Replica, c *api.Client) []replica.PushResult {
	t.Helper()
	ctx := context.Background()
	var out []replica.PushResult
	for i := 0; ; i++ {
		st, err := r.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			return out
		}
		if i > 1000 {
			t.Fatalf("still %d pending after %d pushes", st.Pending, i)
		}
		res, err := r.Push(ctx, c)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		out = append(out, res...)
	}
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func queryInt(t testing.TB, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func mustIntegrity(t testing.TB, db *sql.DB) {
	t.Helper()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check = %q, %v", res, err)
	}
}

// TestConflict_HotCounter: 8 replicas each push 100 increments of one row
// concurrently, each pushing right after its transaction. Every stale
// commit is replayed on head (they all read and write the same page, so
// none may merge) and the replica rebases: the final count is exact.
// CAMBIUM_HOT_INCREMENTS scales the run.
func TestConflict_HotCounter(t *testing.T) {
	const replicas = 8
	increments := envInt("CAMBIUM_HOT_INCREMENTS", 100)
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "hot", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			seed, seedDB := mustReplica(t, filepath.Join(dir, "seed.db"), "hot")
			mustExec(t, seedDB, "CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
			mustExec(t, seedDB, "INSERT INTO c VALUES (1, 0)")
			pushAll(t, seed, c)

			var (
				mu     sync.Mutex
				counts = map[commit.Decision]int{}
				wg     sync.WaitGroup
			)
			rs, dbs := mustClones(t, c, dir, "hot", replicas)
			errs := make(chan error, replicas)
			for i := range rs {
				wg.Go(func() {
					for range increments {
						if _, err := dbs[i].Exec("UPDATE c SET n = n + 1 WHERE id = 1"); err != nil {
							errs <- err
							return
						}
						for _, res := range pushAll(t, rs[i], c) {
							mu.Lock()
							counts[res.Decision]++
							mu.Unlock()
							if res.Decision == commit.Rejected || res.Decision == commit.Merged {
								errs <- fmt.Errorf("replica %d commit %d: %s (%s)", i, res.Seq, res.Decision, res.Reason)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i := range rs {
				if _, err := rs[i].Pull(ctx, c); err != nil {
					t.Fatal(err)
				}
				if n := queryInt(t, dbs[i], "SELECT n FROM c WHERE id = 1"); n != int64(replicas*increments) {
					t.Fatalf("replica %d: n = %d, want %d (decisions %v)", i, n, replicas*increments, counts)
				}
				mustIntegrity(t, dbs[i])
			}
			if got := counts[commit.FastPath] + counts[commit.Replayed]; got != replicas*increments {
				t.Fatalf("decisions %v: %d fast-path or replayed, want %d", counts, got, replicas*increments)
			}
			if counts[commit.Replayed] == 0 {
				t.Fatalf("decisions %v: no commit was replayed; the test did not race", counts)
			}
			t.Logf("decisions: %v", counts)
			// The server counts and times its replays.
			resp, err := http.Get(c.BaseURL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf(`cambium_replay_seconds_count{outcome="replayed"} %d`, counts[commit.Replayed])
			if !strings.Contains(string(body), want) {
				t.Fatalf("/metrics lacks %s", want)
			}
		})
	}
}

// TestConflict_ReplayConstraint: a stale transfer that would overdraw on
// head is rejected with the CHECK constraint named, nothing is stored, and
// the replica drops it and keeps the reason.
func TestConflict_ReplayConstraint(t *testing.T) {
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "bank", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "bank")
			mustExec(t, dbA, "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
			mustExec(t, dbA, "INSERT INTO acct VALUES (1, 100), (2, 0)")
			pushAll(t, a, c)
			b, dbB := mustReplica(t, filepath.Join(dir, "b.db"), "bank")
			if _, err := b.Pull(ctx, c); err != nil {
				t.Fatal(err)
			}
			transfer := func(db *sql.DB, amount int) {
				tx, err := db.Begin()
				if err != nil {
					t.Fatal(err)
				}
				for _, q := range []string{"UPDATE acct SET balance = balance - ? WHERE id = 1", "UPDATE acct SET balance = balance + ? WHERE id = 2"} {
					if _, err := tx.Exec(q, amount); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			transfer(dbA, 80)
			pushAll(t, a, c)
			head, err := c.Volume(ctx, "bank")
			if err != nil {
				t.Fatal(err)
			}
			transfer(dbB, 50) // fine on B's base, overdraws on head
			res, err := b.Push(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			var rep *commit.ReplayError
			if len(res) != 1 || res[0].Decision != commit.Rejected || !errors.As(res[0].Err, &rep) ||
				rep.Kind != "constraint" || !strings.Contains(rep.Reason, "CHECK constraint failed") {
				t.Fatalf("push = %+v, want a replay rejection naming the CHECK constraint", res)
			}
			if v, _ := c.Volume(ctx, "bank"); v.Head != head.Head {
				t.Fatalf("head %d after a rejected commit, want %d: something was stored", v.Head, head.Head)
			}
			st, err := b.Status(ctx)
			if err != nil || st.Pending != 0 || st.BaseVersion != uint64(head.Head) {
				t.Fatalf("B after the rejection: %+v, %v; want nothing pending, at head %d", st, err, head.Head)
			}
			if got := queryInt(t, dbB, "SELECT balance FROM acct WHERE id = 1"); got != 20 {
				t.Fatalf("B's balance 1 = %d, want head's 20", got)
			}
			rej, err := b.Rejected(ctx)
			if err != nil || len(rej) != 1 || rej[0].Kind != "constraint" || !strings.Contains(rej[0].Reason, "balance") {
				t.Fatalf("Rejected() = %+v, %v; want the transfer with its reason", rej, err)
			}
		})
	}
}

// TestConflict_DisjointWriters: 4 replicas update rows of 4 different
// tables concurrently, each pushing after each transaction. Their stale
// commits touch pages no one else wrote, so at least 90% of them must be
// merged (stored as they are), not replayed; the final state is exact.
func TestConflict_DisjointWriters(t *testing.T) {
	const writers = 4
	updates := envInt("CAMBIUM_DISJOINT_UPDATES", 50)
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "disjoint", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			seed, seedDB := mustReplica(t, filepath.Join(dir, "seed.db"), "disjoint")
			for w := range writers {
				mustExec(t, seedDB, fmt.Sprintf("CREATE TABLE t%d(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)", w))
				for id := 1; id <= 10; id++ {
					mustExec(t, seedDB, fmt.Sprintf("INSERT INTO t%d VALUES (?, 0)", w), id)
				}
			}
			pushAll(t, seed, c)

			var (
				mu     sync.Mutex
				counts = map[commit.Decision]int{}
				wg     sync.WaitGroup
			)
			rs, dbs := mustClones(t, c, dir, "disjoint", writers)
			errs := make(chan error, writers)
			for w := range rs {
				wg.Go(func() {
					for i := range updates {
						if _, err := dbs[w].Exec(fmt.Sprintf("UPDATE t%d SET v = v + 1 WHERE id = ?", w), i%10+1); err != nil {
							errs <- err
							return
						}
						for _, res := range pushAll(t, rs[w], c) {
							mu.Lock()
							counts[res.Decision]++
							mu.Unlock()
							if res.Decision == commit.Rejected {
								errs <- fmt.Errorf("writer %d: rejected: %s", w, res.Reason)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			stale := counts[commit.Merged] + counts[commit.Replayed]
			t.Logf("decisions: %v", counts)
			if stale == 0 {
				t.Fatalf("decisions %v: no stale commit; the test did not race", counts)
			}
			if share := float64(counts[commit.Merged]) / float64(stale); share < 0.9 {
				t.Fatalf("decisions %v: %.0f%% of stale commits merged, want >= 90%%", counts, 100*share)
			}
			for w := range rs {
				if _, err := rs[w].Pull(ctx, c); err != nil {
					t.Fatal(err)
				}
				for t2 := range writers {
					if got := queryInt(t, dbs[w], fmt.Sprintf("SELECT sum(v) FROM t%d", t2)); got != int64(updates) {
						t.Fatalf("replica %d: sum(t%d.v) = %d, want %d", w, t2, got, updates)
					}
				}
				mustIntegrity(t, dbs[w])
			}
		})
	}
}

// TestConflict_HostileRecords: stale commits whose records try to escape
// the replay sandbox are each rejected with the reason, nothing is stored,
// and the server goes on deciding commits.
func TestConflict_HostileRecords(t *testing.T) {
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "h", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "h")
			mustExec(t, dbA, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			mustExec(t, dbA, "INSERT INTO t VALUES (1, 'x')")
			pushAll(t, a, c)
			b, dbB := mustReplica(t, filepath.Join(dir, "b.db"), "h")
			if _, err := b.Pull(ctx, c); err != nil {
				t.Fatal(err)
			}
			mustExec(t, dbA, "UPDATE t SET v = 'y' WHERE id = 1")
			pushAll(t, a, c)
			// B's stale commit supplies valid pages and read set; its record is
			// swapped for each hostile one.
			mustExec(t, dbB, "UPDATE t SET v = 'z' WHERE id = 1")
			pend, err := b.Pending(ctx)
			if err != nil || len(pend) != 1 {
				t.Fatalf("pending = %d, %v", len(pend), err)
			}
			head, _ := c.Volume(ctx, "h")
			p := pend[0]
			for i, tc := range []struct {
				name, sql, kind string
			}{
				{"Attach", "ATTACH DATABASE '/tmp/x.db' AS x", "sandbox"},
				{"LoadExtension", "SELECT load_extension('/tmp/evil')", "sandbox"},
				{"WritableSchema", "PRAGMA writable_schema=1", "sandbox"},
				{"EndlessCTE", "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) SELECT count(*) FROM r", "timeout"},
				{"HugeBlob", "UPDATE t SET v = zeroblob(1000000000) WHERE id = 1", "too_big"},
				{"DoesNotParse", "UPDATE t SET WHERE", "sql"},
				{"DDL", "CREATE TABLE evil(x)", "sandbox"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					rec := &replica.Record{Context: p.Record.Context, Statements: []replica.Statement{{SQL: tc.sql}}}
					req := commit.Request{ClientID: "hostile", Seq: int64(i + 1), Base: int64(p.BaseVersion),
						PageSize: 4096, PageCount: p.PageCount, ReadSet: commit.RangesOf(p.ReadSet), Record: rec.Encode()}
					for _, no := range sortedNos(p.Pages) {
						req.Pages = append(req.Pages, commit.Page{No: no, Data: p.Pages[no]})
					}
					res, err := c.Push(ctx, "h", []commit.Request{req})
					if err != nil {
						t.Fatal(err)
					}
					var rep *commit.ReplayError
					if res[0].Decision != commit.Rejected || !errors.As(res[0].Err, &rep) || rep.Kind != tc.kind {
						t.Fatalf("push = %+v, want rejected by replay (%s)", res[0], tc.kind)
					}
					if v, _ := c.Volume(ctx, "h"); v.Head != head.Head {
						t.Fatalf("head moved to %d after a rejected commit", v.Head)
					}
				})
			}
			// The server still decides: B's own stale commit replays fine.
			res, err := b.Push(ctx, c)
			if err != nil || len(res) != 1 || res[0].Decision != commit.Replayed {
				t.Fatalf("B's push after the hostile ones = %+v, %v; want replayed", res, err)
			}
		})
	}
}

func sortedNos(m map[uint32][]byte) []uint32 {
	out := make([]uint32, 0, len(m))
	for no := range m {
		out = append(out, no)
	}
	slices.Sort(out)
	return out
}

// TestConflict_NamedMutations: replicas commit named mutations — a SQL
// mutator stored on the volume and a Go handler registered on both sides —
// concurrently; the stale ones are replayed by name on the server, and the
// count is exact.
func TestConflict_NamedMutations(t *testing.T) {
	const writers = 4
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			handlers := replay.NewRegistry()
			if err := handlers.Register("bump", func(ctx context.Context, tx replay.Tx, args json.RawMessage) error {
				var a struct{ ID, By int }
				if err := json.Unmarshal(args, &a); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "UPDATE c SET n = n + ? WHERE id = ?", a.By, a.ID)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			sc := cfg(t)
			sc.Mutators = handlers
			_, c := mustServer(t, sc)
			if _, err := c.CreateVolume(ctx, "m", 0); err != nil {
				t.Fatal(err)
			}
			if err := c.SetMutator(ctx, "m", "add", "UPDATE c SET n = n + :by WHERE id = :id"); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			seed, seedDB := mustReplica(t, filepath.Join(dir, "seed.db"), "m")
			mustExec(t, seedDB, "CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
			mustExec(t, seedDB, "INSERT INTO c VALUES (1, 0)")
			pushAll(t, seed, c)

			var wg sync.WaitGroup
			errs := make(chan error, writers)
			replayed := 0
			var mu sync.Mutex
			var delivered atomic.Int64 // decisions handed to Options.OnDecision
			for w := range writers {
				path := filepath.Join(dir, fmt.Sprintf("w%d.db", w))
				r, err := replica.Open(ctx, path, replica.Options{Volume: "m",
					Mutators:   &replica.ServerMutators{Client: c, Volume: "m", Local: handlers},
					OnDecision: func(replica.PushResult) { delivered.Add(1) }})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close(ctx) })
				if _, err := r.Pull(ctx, c); err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					for i := range 10 {
						name, by := "add", 1
						if i%2 == 1 {
							name, by = "bump", 10
						}
						if err := r.Mutate(ctx, name, map[string]int{"id": 1, "by": by}); err != nil {
							errs <- err
							return
						}
						for _, res := range pushAll(t, r, c) {
							if res.Decision == commit.Rejected {
								errs <- fmt.Errorf("rejected: %s", res.Reason)
								return
							}
							if res.Decision == commit.Replayed {
								mu.Lock()
								replayed++
								mu.Unlock()
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if _, err := seed.Pull(ctx, c); err != nil {
				t.Fatal(err)
			}
			if n := queryInt(t, seedDB, "SELECT n FROM c"); n != writers*(5*1+5*10) {
				t.Fatalf("n = %d, want %d", n, writers*(5+50))
			}
			if replayed == 0 {
				t.Fatal("no mutation was replayed; the test did not race")
			}
			if got := delivered.Load(); got != writers*10 {
				t.Fatalf("OnDecision saw %d decisions, want %d", got, writers*10)
			}
		})
	}
}

// TestConflict_Resolver: the embedding application's resolver sees each
// proposed decision on a stale commit and may reject it or ask for a
// replay instead of a merge.
func TestConflict_Resolver(t *testing.T) {
	ctx := context.Background()
	var verdict commit.Verdict
	var seen []commit.Decision
	var mu sync.Mutex
	cfg := backends["Embedded"](t)
	cfg.Resolver = func(ctx context.Context, p *commit.Proposal) commit.Verdict {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, p.Decision)
		return verdict
	}
	_, c := mustServer(t, cfg)
	if _, err := c.CreateVolume(ctx, "r", 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, dbA := mustReplica(t, filepath.Join(dir, "a.db"), "r")
	mustExec(t, dbA, "CREATE TABLE x(id INTEGER PRIMARY KEY, v INTEGER)")
	mustExec(t, dbA, "CREATE TABLE y(id INTEGER PRIMARY KEY, v INTEGER)")
	mustExec(t, dbA, "INSERT INTO x VALUES (1, 0)")
	mustExec(t, dbA, "INSERT INTO y VALUES (1, 0)")
	pushAll(t, a, c)
	b, dbB := mustReplica(t, filepath.Join(dir, "b.db"), "r")
	if _, err := b.Pull(ctx, c); err != nil {
		t.Fatal(err)
	}
	// Each round: a updates x, b (stale) updates y: mergeable.
	round := func(v commit.Verdict) replica.PushResult {
		t.Helper()
		if _, err := a.Pull(ctx, c); err != nil { // a writes at head: fast-path
			t.Fatal(err)
		}
		mu.Lock()
		verdict, seen = v, nil
		mu.Unlock()
		mustExec(t, dbA, "UPDATE x SET v = v + 1")
		pushAll(t, a, c)
		mustExec(t, dbB, "UPDATE y SET v = v + 1")
		res, err := b.Push(ctx, c)
		if err != nil || len(res) != 1 {
			t.Fatalf("push = %+v, %v", res, err)
		}
		return res[0]
	}
	if res := round(commit.Verdict{}); res.Decision != commit.Merged || len(seen) != 1 || seen[0] != commit.Merged {
		t.Fatalf("no override: %+v (resolver saw %v), want merged", res, seen)
	}
	if res := round(commit.Verdict{Replay: true, Reason: "audit"}); res.Decision != commit.Replayed || !strings.Contains(res.Reason, "audit") {
		t.Fatalf("replay asked: %+v, want replayed with the reason", res)
	}
	res := round(commit.Verdict{Reject: true, Reason: "frozen for audit"})
	var re *commit.ResolverError
	if res.Decision != commit.Rejected || !errors.As(res.Err, &re) || re.Reason != "frozen for audit" {
		t.Fatalf("reject asked: %+v, want a ResolverError", res)
	}
	if got := queryInt(t, dbB, "SELECT v FROM y"); got != 2 {
		t.Fatalf("y.v = %d after two accepted updates and a rejected one, want 2", got)
	}
}

// mustClones opens n replicas of volume in dir, each pulled to head.
func mustClones(t testing.TB, c *api.Client, dir, volume string, n int) ([]*replica.Replica, []*sql.DB) {
	t.Helper()
	rs := make([]*replica.Replica, n)
	dbs := make([]*sql.DB, n)
	for i := range rs {
		rs[i], dbs[i] = mustReplica(t, filepath.Join(dir, fmt.Sprintf("r%d.db", i)), volume)
		if _, err := rs[i].Pull(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	return rs, dbs
}

// TestSync_PushInBatches: a queue longer than one push request goes in
// several, each based on the version the one before reached, so all of a
// lone writer's commits are fast-path.
func TestSync_PushInBatches(t *testing.T) {
	ctx := context.Background()
	_, c := mustServer(t, backends["Embedded"](t))
	if _, err := c.CreateVolume(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Open(ctx, filepath.Join(t.TempDir(), "b.db"), replica.Options{Volume: "b", PushBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustExec(t, db, "CREATE TABLE t(x)")
	for i := range 7 {
		mustExec(t, db, "INSERT INTO t VALUES (?)", i)
	}
	res, err := r.Push(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 8 {
		t.Fatalf("%d results, want 8", len(res))
	}
	for i, p := range res {
		if p.Decision != commit.FastPath || p.Version != uint64(i+1) {
			t.Fatalf("result %d = %+v, want fast-path at version %d", i, p, i+1)
		}
	}
}
