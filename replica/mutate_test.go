package replica

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/vfs"
)

func bankMutators(tb testing.TB) *replay.Registry {
	tb.Helper()
	reg := replay.NewRegistry()
	err := reg.Register("deposit", func(ctx context.Context, tx replay.Tx, args json.RawMessage) error {
		var a struct{ ID, Amount int64 }
		if err := json.Unmarshal(args, &a); err != nil {
			return err
		}
		if a.Amount <= 0 {
			return errors.New("amount must be positive")
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM accounts WHERE id = ?", a.ID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO accounts(id, balance) VALUES(?, 0)", a.ID); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + ?, token = randomblob(8), at = datetime('now') WHERE id = ?", a.Amount, a.ID)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := reg.RegisterSQL("withdraw", "UPDATE accounts SET balance = balance - :amount, token = random(), at = CURRENT_TIMESTAMP WHERE id = :id"); err != nil {
		tb.Fatal(err)
	}
	return reg
}

// TestReplica_Mutate runs named mutations on a replica: each pending commit
// records the mutation, not its statements, and replaying that record on
// its base with the server's engine gives the client's pages.
func TestReplica_Mutate(t *testing.T) {
	ctx := context.Background()
	reg := bankMutators(t)
	r, db := mustOpenWith(t, filepath.Join(t.TempDir(), "db"), Options{Volume: "test", Mutators: reg})
	mustExec(t, db, "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0), token, at)")
	if err := r.Mutate(ctx, "deposit", map[string]int64{"id": 1, "amount": 100}); err != nil {
		t.Fatal(err)
	}
	if err := r.Mutate(ctx, "withdraw", json.RawMessage(`{"id": 1, "amount": 30}`)); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "UPDATE accounts SET balance = balance + 1 WHERE id = 1") // SQL and mutations mix
	if err := r.Mutate(ctx, "deposit", struct{ ID, Amount int64 }{2, 5}); err != nil {
		t.Fatal(err)
	}

	t.Run("Rejected", func(t *testing.T) {
		before := len(mustPending(t, r))
		for _, tc := range []struct {
			name string
			args any
			code replay.Code
		}{
			{"withdraw", map[string]int64{"id": 1, "amount": 1000}, replay.CodeConstraint},
			{"deposit", map[string]int64{"id": 1, "amount": -1}, replay.CodeMutation},
			{"nope", nil, replay.CodeUnknownMutation},
		} {
			var re *replay.RejectError
			if err := r.Mutate(ctx, tc.name, tc.args); !errors.As(err, &re) || re.Code != tc.code {
				t.Fatalf("Mutate(%s)=%v, want a %s rejection", tc.name, err, tc.code)
			}
		}
		if err := r.Mutate(ctx, "Bad Name", nil); !errors.Is(err, replay.ErrMutationName) {
			t.Fatalf("Mutate(bad name)=%v, want ErrMutationName", err)
		}
		if err := r.Mutate(ctx, "deposit", json.RawMessage(`{not json`)); !errors.Is(err, replay.ErrMutationArgs) {
			t.Fatalf("Mutate(bad JSON)=%v, want ErrMutationArgs", err)
		}
		if got := len(mustPending(t, r)); got != before {
			t.Fatalf("pending=%d after failed mutations, want %d", got, before)
		}
	})

	pending := mustPending(t, r)
	if got, want := len(pending), 5; got != want {
		t.Fatalf("pending=%d, want %d", got, want)
	}
	for i, want := range []string{"", "deposit", "withdraw", "", "deposit"} {
		rec := pending[i].Record
		switch {
		case want == "" && (rec.Mutation != nil || len(rec.Statements) == 0):
			t.Fatalf("commit %d: record %+v, want SQL statements", i, rec)
		case want != "" && (rec.Mutation == nil || rec.Mutation.Name != want || len(rec.Statements) != 0):
			t.Fatalf("commit %d: record %+v, want mutation %s and no statements", i, rec, want)
		case want != "" && rec.Context.Time.IsZero():
			t.Fatalf("commit %d: mutation record without a replay time", i)
		}
	}
	if got, want := string(pending[2].Record.Mutation.Args), `{"id": 1, "amount": 30}`; got != want {
		t.Fatalf("Args=%s, want %s as given", got, want)
	}

	e := replay.NewEngine()
	base := vfs.NewMemDB(r.PageSize())
	for i, pc := range pending {
		out, err := e.Replay(ctx, replay.Input{Source: base, Record: pc.Record, AllowDDL: true, Mutators: reg})
		if err != nil {
			t.Fatalf("replay commit %d: %v", i, err)
		}
		want := &replay.Output{PageCount: pc.PageCount, Pages: pc.Pages}
		if err := replay.Compare(out, want); err != nil {
			t.Fatalf("replay commit %d: %v", i, err)
		}
		if err := base.Commit(ctx, &vfs.Capture{PageSize: r.PageSize(), PageCount: pc.PageCount, Pages: pc.Pages}); err != nil {
			t.Fatal(err)
		}
	}
	var balance int
	if err := db.QueryRow("SELECT balance FROM accounts WHERE id = 1").Scan(&balance); err != nil || balance != 71 {
		t.Fatalf("balance=%d (%v), want 71", balance, err)
	}
	mustIntegrity(t, db)
}

func TestReplica_MutateClosed(t *testing.T) {
	r, err := Open(context.Background(), filepath.Join(t.TempDir(), "db"), Options{Volume: "v", Mutators: bankMutators(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Mutate(context.Background(), "deposit", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Mutate after Close=%v, want ErrClosed", err)
	}
}
