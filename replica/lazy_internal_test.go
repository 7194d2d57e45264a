package replica

import (
	"context"
	"database/sql"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/server"
)

// lazyFixture is a server on the embedded default with volume "v" holding
// table big (2,000 rows of 1 KB), a full replica a that wrote it, and a
// lazy replica b at its head that has fetched nothing yet.
type lazyFixture struct {
	c      *api.Client
	a, b   *Replica
	dbA    *sql.DB
	bPath  string
	bTable *sql.DB
}

func newLazyFixture(t *testing.T) *lazyFixture {
	t.Helper()
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close(context.Background()) })
	f := &lazyFixture{c: api.NewClient(ts.URL)}
	if _, err := f.c.CreateVolume(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f.a, f.dbA = mustOpenWith(t, filepath.Join(dir, "a"), Options{Volume: "v"})
	mustExec(t, f.dbA, "CREATE TABLE big(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, body BLOB NOT NULL)")
	mustExec(t, f.dbA, "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) INSERT INTO big SELECT i, 0, randomblob(1000) FROM s")
	f.push(t)
	f.bPath = filepath.Join(dir, "b")
	f.b, f.bTable = mustOpenWith(t, f.bPath, Options{Volume: "v", Lazy: true, Fetcher: f.c})
	if _, err := f.b.Pull(ctx, f.c); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *lazyFixture) push(t *testing.T) {
	t.Helper()
	res, err := f.a.Push(context.Background(), f.c)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

func queryN(t *testing.T, db *sql.DB, id int) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT n FROM big WHERE id = ?", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLazy_FetchDuringPull: a page the lazy replica fetches at its old
// base while a pull is under way (after the pull learned what changed,
// before it applied the new version) must not survive the pull: the pull
// forgets every changed page it did not bring.
func TestLazy_FetchDuringPull(t *testing.T) {
	ctx := context.Background()
	f := newLazyFixture(t)
	if n := queryN(t, f.bTable, 1); n != 0 {
		t.Fatalf("row 1: %d", n)
	}
	mustExec(t, f.dbA, "UPDATE big SET n = 7 WHERE id IN (1, 1999)")
	f.push(t)

	rs, err := f.b.fetchAt(ctx, f.c, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Row 1999's page was not held when the pull asked: it is not in rs.
	// Read now, it comes at the old base.
	if n := queryN(t, f.bTable, 1999); n != 0 {
		t.Fatalf("row 1999 before the pull applied: %d, want the old 0", n)
	}
	if err := f.b.remote(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{1, 1999} {
		if n := queryN(t, f.bTable, id); n != 7 {
			t.Fatalf("row %d after the pull: %d, want 7", id, n)
		}
	}
}

// TestLazy_Crash: pages fetched since the resident set was last recorded
// are fetched again after a crash, never trusted unrecorded; a checkpoint
// records them. Either way the replica reads the right rows.
func TestLazy_Crash(t *testing.T) {
	ctx := context.Background()
	f := newLazyFixture(t)
	queryN(t, f.bTable, 10)
	fetched := f.b.Lazy().Resident
	if fetched == 0 {
		t.Fatal("nothing fetched")
	}
	mustCrash(t, f.b, f.bTable)

	b, db := mustOpenWith(t, f.bPath, Options{Fetcher: f.c})
	if st := b.Lazy(); st.Resident != 0 {
		t.Fatalf("after a crash: %d pages held, want none (none was recorded)", st.Resident)
	}
	queryN(t, db, 10)
	if st := b.Lazy(); st.Fetches == 0 || st.Resident != fetched {
		t.Fatalf("after a crash, row 10 again: %+v, want the %d pages fetched again", st, fetched)
	}
	// A local commit's checkpoint records the fetched pages with its own.
	mustExec(t, db, "UPDATE big SET n = 1 WHERE id = 10")
	if err := b.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	held := b.Lazy().Resident
	mustCrash(t, b, db)
	b, db = mustOpenWith(t, f.bPath, Options{Fetcher: f.c})
	if st := b.Lazy(); st.Resident != held {
		t.Fatalf("after a checkpoint and a crash: %d pages held, want %d", st.Resident, held)
	}
	if n := queryN(t, db, 10); n != 1 {
		t.Fatalf("row 10: %d, want the local commit's 1", n)
	}
	mustIntegrity(t, db)
}
