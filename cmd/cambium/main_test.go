package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cambiumdb/cambium/server"
)

// cli runs the cambium command in-process and returns what it printed.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("cambium %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestCLI_Help(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			out := mustCLI(t, c.name, "--help")
			if !strings.Contains(out, "Usage:") || !strings.Contains(out, "Example:") {
				t.Fatalf("cambium %s --help lacks usage or example:\n%s", c.name, out)
			}
		})
	}
	if out := mustCLI(t, "--help"); !strings.Contains(out, "Commands:") {
		t.Fatalf("cambium --help:\n%s", out)
	}
	if _, err := cli(t, "frobnicate"); err == nil || !strings.Contains(err.Error(), "cambium --help") {
		t.Fatalf("unknown command: err = %v, want a hint", err)
	}
}

// mustServerFlag starts a server on the embedded default for one test and
// returns the --server flag that reaches it.
func mustServerFlag(t *testing.T) string {
	t.Helper()
	srv, err := server.Open(context.Background(), server.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close(context.Background()) })
	return "--server=" + ts.URL
}

// TestCLI_Workflow drives the replica commands against an in-process server
// on the embedded default: two replicas, a stale push, a reset, a redo.
func TestCLI_Workflow(t *testing.T) {
	s := mustServerFlag(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")

	mustCLI(t, "volume", "create", "notes", s)
	// Strict: a stale commit is rejected and the user resets and redoes it
	// (the hybrid policies are TestCLI_Hybrid's).
	if out := mustCLI(t, "volume", "set-policy", "notes", "strict", s); !strings.Contains(out, "policy strict") {
		t.Fatalf("volume set-policy:\n%s", out)
	}
	if _, err := cli(t, "volume", "set-policy", "notes", "yolo", s); err == nil || !strings.Contains(err.Error(), "replay, strict or no-merge") {
		t.Fatalf("set-policy yolo: err %v, want the valid policies named", err)
	}
	if out := mustCLI(t, "volume", "list", "--json", s); !strings.Contains(out, `"name": "notes"`) {
		t.Fatalf("volume list --json:\n%s", out)
	}
	mustCLI(t, "clone", "notes", a, s)
	mustCLI(t, "exec", a, "CREATE TABLE n(id INTEGER PRIMARY KEY, body TEXT)")
	mustCLI(t, "exec", a, "INSERT INTO n(body) VALUES (?)", "first")
	if out := mustCLI(t, "push", a, s); strings.Count(out, "fast-path") != 2 {
		t.Fatalf("push: want two fast-path commits:\n%s", out)
	}
	mustCLI(t, "clone", "notes", b, s)
	mustCLI(t, "exec", b, "INSERT INTO n(body) VALUES (?)", "from b")
	mustCLI(t, "push", b, s)

	mustCLI(t, "exec", a, "INSERT INTO n(body) VALUES (?)", "stale")
	out, err := cli(t, "push", a, s)
	if err == nil || !strings.Contains(out, "rejected") || !strings.Contains(out, "stale base") {
		t.Fatalf("stale push: err %v, want a rejection naming the stale base:\n%s", err, out)
	}
	// Under strict the stale commit is not dropped: the replica re-ran it on
	// the head (rebase), so it is pending on version 3 and the next push
	// takes it.
	var st replicaStatus
	if err := json.Unmarshal([]byte(mustCLI(t, "status", a, "--json", s)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 || st.Head != 3 || st.Version != 3 {
		t.Fatalf("status after the rejection = %+v, want version 3, head 3, 1 pending", st)
	}
	if out := mustCLI(t, "push", a, s); !strings.Contains(out, "fast-path") {
		t.Fatalf("push after the rebase: want fast-path:\n%s", out)
	}
	mustCLI(t, "exec", a, "INSERT INTO n(body) VALUES (?)", "redone")
	mustCLI(t, "push", a, s)
	mustCLI(t, "pull", b, s)
	want := "first\nfrom b\nstale\nredone\n"
	for _, f := range []string{a, b} {
		var rows []map[string]any
		if err := json.Unmarshal([]byte(mustCLI(t, "query", f, "SELECT body FROM n ORDER BY id", "--json")), &rows); err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, r := range rows {
			got += r["body"].(string) + "\n"
		}
		if got != want {
			t.Fatalf("%s has %q, want %q", filepath.Base(f), got, want)
		}
	}
	if _, err := cli(t, "exec", filepath.Join(dir, "missing.db"), "SELECT 1"); err == nil || !strings.Contains(err.Error(), "cambium clone") {
		t.Fatalf("exec on a non-replica: %v, want advice to clone", err)
	}
}

// TestCLI_Hybrid: on the default policy a stale commit is replayed and the
// replica catches up; one that fails on head is rejected, dropped, and
// cambium status says why.
func TestCLI_Hybrid(t *testing.T) {
	s := mustServerFlag(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mustCLI(t, "volume", "create", "bank", s)
	mustCLI(t, "clone", "bank", a, s)
	mustCLI(t, "exec", a, "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER CHECK (balance >= 0))")
	mustCLI(t, "exec", a, "INSERT INTO acct VALUES (1, 100)")
	mustCLI(t, "push", a, s)
	mustCLI(t, "clone", "bank", b, s)
	mustCLI(t, "exec", a, "UPDATE acct SET balance = balance - 30 WHERE id = 1")
	mustCLI(t, "push", a, s)

	mustCLI(t, "exec", b, "UPDATE acct SET balance = balance - 50 WHERE id = 1")
	if out := mustCLI(t, "push", b, s); !strings.Contains(out, "replayed, version 4") {
		t.Fatalf("stale push: want it replayed as version 4:\n%s", out)
	}
	if out := mustCLI(t, "query", b, "SELECT balance FROM acct"); !strings.Contains(out, "20") {
		t.Fatalf("b after the replay: want balance 20:\n%s", out)
	}
	mustCLI(t, "pull", a, s)
	mustCLI(t, "exec", a, "UPDATE acct SET balance = balance - 20 WHERE id = 1")
	mustCLI(t, "push", a, s)
	mustCLI(t, "exec", b, "UPDATE acct SET balance = balance - 10 WHERE id = 1") // fine on b, overdraws on head
	out, err := cli(t, "push", b, s)
	if err == nil || !strings.Contains(out, "CHECK constraint failed") || !strings.Contains(err.Error(), "cambium status") {
		t.Fatalf("overdraft push: err %v, want a rejection naming the constraint:\n%s", err, out)
	}
	var st replicaStatus
	if err := json.Unmarshal([]byte(mustCLI(t, "status", b, "--json", s)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || st.Version != 5 || len(st.Rejected) != 1 || st.Rejected[0].Kind != "constraint" {
		t.Fatalf("status after the rejection = %+v, want at version 5, nothing pending, one constraint rejection", st)
	}
	if out := mustCLI(t, "status", b, s); !strings.Contains(out, "rejected and dropped") || !strings.Contains(out, "balance >= 0") {
		t.Fatalf("status:\n%s", out)
	}
}

func TestCLI_Mutator(t *testing.T) {
	s := mustServerFlag(t)
	mustCLI(t, "volume", "create", "bank", s)
	mustCLI(t, "mutator", "set", "bank", "deposit", "UPDATE a SET n = n + :amount\n  WHERE id = :id", s)
	if out := mustCLI(t, "mutator", "list", "bank", s); !strings.Contains(out, "deposit") || !strings.Contains(out, "UPDATE a SET n = n + :amount WHERE id = :id") {
		t.Fatalf("mutator list:\n%s", out)
	}
	var ms []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, "mutator", "list", "bank", "--json", s)), &ms); err != nil || len(ms) != 1 || ms[0]["name"] != "deposit" {
		t.Fatalf("mutator list --json: %v %v", ms, err)
	}
	mustCLI(t, "mutator", "delete", "bank", "deposit", s)
	if out := mustCLI(t, "mutator", "list", "bank", s); strings.Contains(out, "deposit") {
		t.Fatalf("mutator list after delete:\n%s", out)
	}
	if _, err := cli(t, "mutator", "set", "bank", "Bad Name", "SELECT 1", s); err == nil || !strings.Contains(err.Error(), "mutator name") {
		t.Fatalf("mutator set with a bad name: %v", err)
	}
}

func TestCLI_Demo(t *testing.T) {
	out := mustCLI(t, "demo", "--dir", t.TempDir())
	for _, want := range []string{"replayed", "rejected", "stale base", "byte-identical"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestCLI_LazyClone: a lazy clone answers queries with the pages it
// fetches, writes, pushes, and says what it holds in status.
func TestCLI_LazyClone(t *testing.T) {
	s := mustServerFlag(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mustCLI(t, "volume", "create", "big", s)
	mustCLI(t, "clone", "big", a, s)
	mustCLI(t, "exec", a, "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
	mustCLI(t, "exec", a, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i, randomblob(2000) FROM n")
	mustCLI(t, "push", a, s)
	if out := mustCLI(t, "clone", "--lazy", "big", b, s); !strings.Contains(out, "lazy") {
		t.Fatalf("clone --lazy:\n%s", out)
	}
	if out := mustCLI(t, "query", b, "SELECT length(body) FROM t WHERE id = 500", s); !strings.Contains(out, "2000") {
		t.Fatalf("query on the lazy clone:\n%s", out)
	}
	var st replicaStatus
	if err := json.Unmarshal([]byte(mustCLI(t, "status", b, "--json", s)), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Lazy || st.Resident == 0 || st.Resident >= int(st.Pages)/4 {
		t.Fatalf("status of the lazy clone after one query = %+v, want lazy with a few of its %d pages", st, st.Pages)
	}
	mustCLI(t, "exec", b, "UPDATE t SET body = x'00' WHERE id = 500", s)
	mustCLI(t, "push", b, s)
	mustCLI(t, "pull", a, s)
	if out := mustCLI(t, "query", a, "SELECT length(body) FROM t WHERE id = 500"); !strings.Contains(out, "1") || strings.Contains(out, "2000") {
		t.Fatalf("a after b's push:\n%s", out)
	}
}
