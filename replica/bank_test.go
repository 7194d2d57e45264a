package replica_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/replica"
	"github.com/cambiumdb/cambium/server"
	"github.com/cambiumdb/cambium/vfs"
)

// TestConflict_Bank is the bank workload of Graft's own tests: replicas
// move money between accounts with random push and pull timing. Every
// transfer writes both balances and appends two ledger rows, so concurrent
// transfers conflict on the ledger's last page and are replayed; a transfer
// that would overdraw on head is rejected by the CHECK constraint.
//
// Afterwards: total balance is conserved, every balance equals its initial
// amount plus its ledger, the replicas equal the head, the head equals a
// serial execution of the stored commits' records in version order
// (invariant 5), and every fast-path commit's record replayed on its base
// gives exactly its pages (determinism). CAMBIUM_BANK_TRANSFERS scales it.
func TestConflict_Bank(t *testing.T) {
	const (
		replicas = 4
		accounts = 1000
		initial  = 100
	)
	transfers := envInt("CAMBIUM_BANK_TRANSFERS", 1000)
	for name, cfg := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			srv, c := mustServer(t, cfg(t))
			if _, err := c.CreateVolume(ctx, "bank", 0); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			seed, seedDB := mustReplica(t, filepath.Join(dir, "seed.db"), "bank")
			mustExec(t, seedDB, "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
			mustExec(t, seedDB, "CREATE TABLE ledger(n INTEGER PRIMARY KEY AUTOINCREMENT, acct INTEGER NOT NULL, delta INTEGER NOT NULL)")
			mustExec(t, seedDB, fmt.Sprintf("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < %d) INSERT INTO acct SELECT i, %d FROM s", accounts, initial))
			pushAll(t, seed, c)

			var (
				mu     sync.Mutex
				counts = map[commit.Decision]int{}
				wg     sync.WaitGroup
			)
			rs, dbs := mustClones(t, c, dir, "bank", replicas)
			errs := make(chan error, replicas)
			for i := range rs {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(i), 42))
					note := func(res []replica.PushResult) {
						mu.Lock()
						defer mu.Unlock()
						for _, r := range res {
							counts[r.Decision]++
						}
					}
					for range transfers / replicas {
						from, to := rng.IntN(accounts)+1, rng.IntN(accounts)+1
						amount := rng.IntN(60) + 1
						if err := transfer(dbs[i], from, to, amount); err != nil {
							errs <- err
							return
						}
						switch rng.IntN(6) {
						case 0, 1:
							res, err := rs[i].Push(ctx, c)
							if err != nil {
								errs <- err
								return
							}
							note(res)
						case 2:
							if _, err := rs[i].Pull(ctx, c); err != nil {
								errs <- err
								return
							}
						}
					}
					note(pushAll(t, rs[i], c))
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			t.Logf("decisions: %v", counts)
			if counts[commit.Replayed] == 0 {
				t.Fatalf("decisions %v: nothing replayed; the test did not race", counts)
			}

			var final []string
			for i := range rs {
				if _, err := rs[i].Pull(ctx, c); err != nil {
					t.Fatal(err)
				}
				if n := queryInt(t, dbs[i], "SELECT sum(balance) FROM acct"); n != accounts*initial {
					t.Fatalf("replica %d: total balance %d, want %d", i, n, accounts*initial)
				}
				if n := queryInt(t, dbs[i], `SELECT count(*) FROM acct a WHERE balance !=
					?+(SELECT coalesce(sum(delta), 0) FROM ledger l WHERE l.acct = a.id)`, initial); n != 0 {
					t.Fatalf("replica %d: %d balances differ from their ledger", i, n)
				}
				mustIntegrity(t, dbs[i])
				if d := dump(t, dbs[i]); final == nil {
					final = d
				} else if !slices.Equal(d, final) {
					t.Fatalf("replica %d differs from replica 0 after pulling to head", i)
				}
			}

			// Invariant 5: head equals the serial execution, in version order,
			// of the stored commits' records; and each fast-path record
			// replayed on its base gives its pages.
			model, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "model.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer model.Close()
			engine := replay.NewEngine()
			fastPath := 0
			var prev []byte
			v, err := srv.Meta.Volume(ctx, "bank")
			if err != nil {
				t.Fatal(err)
			}
			versionImages(t, srv, c, "bank", func(version int64, file []byte) {
				cm, err := srv.Meta.Commit(ctx, v.ID, version)
				if err != nil {
					t.Fatal(err)
				}
				rec, err := replay.DecodeRecord(cm.Record)
				if err != nil {
					t.Fatalf("version %d: %v", version, err)
				}
				tx, err := model.Begin()
				if err != nil {
					t.Fatal(err)
				}
				if err := replay.Apply(ctx, tx, rec, nil); err != nil {
					t.Fatalf("model: version %d (%s): %v", version, cm.Decision, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				if cm.Decision == "fast-path" && prev != nil {
					fastPath++
					checkDeterminism(t, engine, version, rec, prev, file, int(cm.PageCount), v.PageSize, srv, c)
				}
				prev = slices.Clone(file)
			})
			if fastPath == 0 {
				t.Fatal("no fast-path commit to check for determinism")
			}
			if got := dump(t, model); !slices.Equal(got, final) {
				t.Fatalf("head differs from the serial execution of its records (%d vs %d rows)", len(final), len(got))
			}
		})
	}
}

// transfer moves amount between two accounts with its ledger rows; an
// overdraft fails the CHECK locally and changes nothing.
func transfer(db *sql.DB, from, to, amount int) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"UPDATE acct SET balance = balance - ? WHERE id = ?", []any{amount, from}},
		{"UPDATE acct SET balance = balance + ? WHERE id = ?", []any{amount, to}},
		{"INSERT INTO ledger(acct, delta) VALUES (?, ?), (?, ?)", []any{from, -amount, to, amount}},
	} {
		if _, err := tx.Exec(q.sql, q.args...); err != nil {
			tx.Rollback()
			if strings.Contains(err.Error(), "constraint failed") {
				return nil
			}
			return err
		}
	}
	return tx.Commit()
}

// dump lists every account and ledger row, for comparing databases by
// content.
func dump(t testing.TB, db *sql.DB) []string {
	t.Helper()
	var out []string
	for _, q := range []string{"SELECT id, balance FROM acct ORDER BY id", "SELECT n, acct, delta FROM ledger ORDER BY n"} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(vals...))
		}
		rows.Close()
	}
	return out
}

// checkDeterminism replays version's record on the file of the version
// before it and compares the pages with those the version stored.
func checkDeterminism(t *testing.T, engine *replay.Engine, version int64, rec *replay.Record, base, file []byte, pageCount, pageSize int, srv *server.Server, c *api.Client) {
	t.Helper()
	ctx := context.Background()
	src := vfs.NewMemDB(pageSize)
	if err := src.SetBytes(base); err != nil {
		t.Fatal(err)
	}
	got, err := engine.Replay(ctx, replay.Input{Source: src, Record: rec, AllowDDL: true})
	if err != nil {
		t.Fatalf("version %d: replay on its base: %v", version, err)
	}
	v, err := srv.Meta.Volume(ctx, "bank")
	if err != nil {
		t.Fatal(err)
	}
	refs, err := srv.Meta.ChangedPages(ctx, v.ID, version-1, version)
	if err != nil {
		t.Fatal(err)
	}
	want := &replay.Output{PageCount: uint32(pageCount), Pages: map[uint32][]byte{}}
	for _, ref := range refs {
		off := int(ref.PageNo-1) * pageSize
		want.Pages[ref.PageNo] = file[off : off+pageSize]
	}
	if err := replay.Compare(got, want); err != nil {
		t.Fatalf("version %d: replaying its record on its base: %v", version, err)
	}
}
