package replay_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/replay"
	"github.com/cambiumdb/cambium/vfs"
)

// bank is a registry with one Go handler and SQL mutators over
// accounts(id, balance CHECK (balance >= 0), note, meta, stamp).
func bank(tb testing.TB) *replay.Registry {
	tb.Helper()
	reg := replay.NewRegistry()
	type transfer struct {
		From, To, Amount int64
	}
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(reg.Register("transfer", func(ctx context.Context, tx replay.Tx, args json.RawMessage) error {
		var a transfer
		if err := json.Unmarshal(args, &a); err != nil {
			return err
		}
		var balance int64
		if err := tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = ?", a.From).Scan(&balance); err != nil {
			return err
		}
		if balance < a.Amount {
			return fmt.Errorf("insufficient funds: %d < %d", balance, a.Amount)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - ?, stamp = datetime('now') WHERE id = ?", a.Amount, a.From); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + ?, note = hex(randomblob(4)) WHERE id = ?", a.Amount, a.To)
		return err
	}))
	must(reg.Register("attach", func(ctx context.Context, tx replay.Tx, _ json.RawMessage) error {
		_, err := tx.ExecContext(ctx, "ATTACH DATABASE ':memory:' AS x")
		return err
	}))
	must(reg.RegisterSQL("withdraw", `UPDATE accounts SET balance = balance - :amount WHERE id = :id;
		UPDATE accounts SET note = :note, meta = @meta, stamp = CURRENT_TIMESTAMP WHERE id = $id -- :ignored
		/* :also_ignored */; SELECT ':not_a_param'`))
	must(reg.RegisterSQL("open", "INSERT INTO accounts(id, balance, note) VALUES(:id, :balance, :note)"))
	return reg
}

func bankBase(tb testing.TB) replay.Input {
	return replay.Input{Source: mustBase(tb,
		"CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0), note, meta, stamp)",
		"INSERT INTO accounts(id, balance) VALUES(1, 100), (2, 0)"), Mutators: bank(tb)}
}

func memOf(in replay.Input) *vfs.MemDB { return in.Source.(*vfs.MemDB) }

func mustApplyTo(tb testing.TB, in replay.Input, out *replay.Output) {
	tb.Helper()
	mustApply(tb, memOf(in), out)
}

func TestEngine_Mutation(t *testing.T) {
	e := replay.NewEngine()
	t.Run("Handler", func(t *testing.T) {
		in := bankBase(t)
		in.Record = mutationRecord("transfer", `{"from":1,"to":2,"amount":30}`)
		out := mustReplay(t, e, in)
		if err := replay.Compare(mustReplay(t, e, in), out); err != nil {
			t.Fatalf("the same mutation replayed twice: %v", err)
		}
		mustApplyTo(t, in, out)
		if got, want := mustQuery(t, memOf(in), "SELECT group_concat(id || ':' || balance || ':' || ifnull(stamp, '-'), ',') FROM accounts"),
			"1:70:2023-11-14 22:13:20,2:30:-"; got != want {
			t.Fatalf("accounts=%q, want %q", got, want)
		}
	})
	t.Run("SQL", func(t *testing.T) {
		in := bankBase(t)
		in.Record = mutationRecord("withdraw", `{"id":1,"amount":25.0,"note":"rent","meta":{"k":[1, 2]},"extra":true}`)
		mustApplyTo(t, in, mustReplay(t, e, in))
		if got, want := mustQuery(t, memOf(in), "SELECT balance || '|' || typeof(balance) || '|' || note || '|' || meta || '|' || stamp FROM accounts WHERE id = 1"),
			`75|integer|rent|{"k":[1,2]}|2023-11-14 22:13:20`; got != want {
			t.Fatalf("row=%q, want %q", got, want)
		}
	})
	t.Run("SQLValues", func(t *testing.T) {
		in := bankBase(t)
		in.Record = mutationRecord("open", `{"id":3,"balance":7,"note":null}`)
		mustApplyTo(t, in, mustReplay(t, e, in))
		if got := mustQuery(t, memOf(in), "SELECT balance || typeof(note) FROM accounts WHERE id = 3"); got != "7null" {
			t.Fatalf("row=%q, want 7null", got)
		}
	})
	for _, tc := range []struct {
		name, mutation, args string
		code                 replay.Code
		reason               string
	}{
		{"HandlerError", "transfer", `{"from":2,"to":1,"amount":5}`, replay.CodeMutation, "insufficient funds: 0 < 5"},
		{"HandlerBadArgs", "transfer", `[1]`, replay.CodeMutation, "cannot unmarshal"},
		{"HandlerSandbox", "attach", ``, replay.CodeSandbox, "ATTACH"},
		{"SQLCheck", "withdraw", `{"id":1,"amount":500,"note":"x","meta":null}`, replay.CodeConstraint, "CHECK constraint failed: balance >= 0"},
		{"SQLMissingArg", "withdraw", `{"id":1,"amount":5}`, replay.CodeMutation, `"note" missing`},
		{"SQLNotObject", "withdraw", `[1,2]`, replay.CodeMutation, "JSON object"},
		{"SQLUnique", "open", `{"id":1,"balance":1,"note":"dup"}`, replay.CodeConstraint, "UNIQUE"},
		{"Unknown", "nope", `{}`, replay.CodeUnknownMutation, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bankBase(t)
			in.Record = mutationRecord(tc.mutation, tc.args)
			_, err := e.Replay(context.Background(), in)
			re := wantReject(t, err, tc.code)
			if !strings.Contains(re.Reason, tc.reason) || re.Statement != -1 {
				t.Fatalf("Reason=%q Statement=%d, want %q and -1", re.Reason, re.Statement, tc.reason)
			}
		})
	}
	t.Run("NoMutators", func(t *testing.T) {
		in := bankBase(t)
		in.Mutators, in.Record = nil, mutationRecord("transfer", `{}`)
		_, err := e.Replay(context.Background(), in)
		wantReject(t, err, replay.CodeUnknownMutation)
	})
	t.Run("ResolverFailure", func(t *testing.T) {
		in := bankBase(t)
		errStore := errors.New("mutator store down")
		in.Mutators = replay.MutatorsFunc(func(context.Context, string) (replay.Mutator, error) { return replay.Mutator{}, errStore })
		in.Record = mutationRecord("transfer", `{}`)
		_, err := e.Replay(context.Background(), in)
		var re *replay.RejectError
		if !errors.Is(err, errStore) || errors.As(err, &re) {
			t.Fatalf("err=%v, want the resolver's error, not a rejection", err)
		}
	})
}

// TestApply_PlainSQLite runs records through Apply on an ordinary
// database/sql transaction, as a client's rebase does.
func TestApply_PlainSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "plain.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0), note, meta, stamp); INSERT INTO accounts(id, balance) VALUES(1, 100), (2, 0)"); err != nil {
		t.Fatal(err)
	}
	reg := bank(t)
	run := func(rec *replay.Record) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := replay.Apply(ctx, tx, rec, reg); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	if err := run(mutationRecord("transfer", `{"from":1,"to":2,"amount":40}`)); err != nil {
		t.Fatal(err)
	}
	rec := sqlRecord("UPDATE accounts SET balance = balance + :n WHERE id = 2")
	rec.Statements[0].Args = []replay.Arg{{Name: "n", Value: replay.Value{Kind: replay.KindInt, Int: 2}}}
	if err := run(rec); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := db.QueryRow("SELECT group_concat(balance, ',') FROM accounts").Scan(&got); err != nil || got != "60,42" {
		t.Fatalf("balances=%q (%v), want 60,42", got, err)
	}
	wantReject(t, run(mutationRecord("withdraw", `{"id":2,"amount":100,"note":"","meta":null}`)), replay.CodeConstraint)
	wantReject(t, run(sqlRecord("SELECT nope()")), replay.CodeSQL)
	wantReject(t, run(&replay.Record{}), replay.CodeRecord)
}

func TestRegistry(t *testing.T) {
	reg := replay.NewRegistry()
	h := func(context.Context, replay.Tx, json.RawMessage) error { return nil }
	if err := reg.Register("a.b-c_1", h); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"Duplicate":   {reg.Register("a.b-c_1", h), replay.ErrMutationExists},
		"Upper":       {reg.Register("Transfer", h), replay.ErrMutationName},
		"Digit":       {reg.Register("1x", h), replay.ErrMutationName},
		"Long":        {reg.Register(strings.Repeat("x", replay.MaxNameLen+1), h), replay.ErrMutationName},
		"Space":       {reg.Register("a b", h), replay.ErrMutationName},
		"NoHandler":   {reg.Register("x", nil), replay.ErrMutator},
		"Positional":  {reg.RegisterSQL("y", "UPDATE t SET a = ?"), replay.ErrMutator},
		"BadParam":    {reg.RegisterSQL("y", "UPDATE t SET a = :_x"), replay.ErrMutator},
		"TclParam":    {reg.RegisterSQL("y", "UPDATE t SET a = $x(1)"), replay.ErrMutator},
		"NumberParam": {reg.RegisterSQL("y", "UPDATE t SET a = :1"), replay.ErrMutator},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: err=%v, want %v", name, tc.err, tc.want)
		}
	}
	if err := reg.Register(strings.Repeat("x", replay.MaxNameLen), h); err != nil {
		t.Fatalf("a %d-byte name: %v", replay.MaxNameLen, err)
	}
	_, err := reg.Mutator(context.Background(), "missing")
	var ue *replay.UnknownMutationError
	if !errors.As(err, &ue) || ue.Name != "missing" || !errors.Is(err, replay.ErrUnknownMutation) {
		t.Fatalf("Mutator(missing)=%v, want an UnknownMutationError", err)
	}
}
