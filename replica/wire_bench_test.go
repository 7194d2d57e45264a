package replica_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replica"
	"github.com/cambiumdb/cambium/server"
)

// BenchmarkWire_OneRowCommit measures what one captured one-row insert
// costs on the wire, on a database of CAMBIUM_BENCH_DB_MB megabytes (default
// 100): the pages it writes and the bytes of its push body, record included.
func BenchmarkWire_OneRowCommit(b *testing.B) {
	ctx := context.Background()
	mb := envInt("CAMBIUM_BENCH_DB_MB", 100)
	srv, err := server.Open(ctx, server.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close(ctx)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	c := api.NewClient(ts.URL)
	if _, err := c.CreateVolume(ctx, "v", 0); err != nil {
		b.Fatal(err)
	}
	r, err := replica.Open(ctx, filepath.Join(b.TempDir(), "a.db"), replica.Options{Volume: "v"})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB)"); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec("CREATE INDEX t_name ON t(name)"); err != nil {
		b.Fatal(err)
	}
	// Fill to the size asked, 8 MB per transaction, pushing as we go.
	for filled := 0; filled < mb; filled += 8 {
		if _, err := db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 8000)
			INSERT INTO t(name, body) SELECT 'name-' || abs(random() % 1000000), randomblob(1000) FROM n`); err != nil {
			b.Fatal(err)
		}
		if _, err := r.Push(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	var pagesTotal, bytesTotal, recordTotal int
	n := 0
	for b.Loop() {
		n++
		if _, err := db.Exec("INSERT INTO t(name, body) VALUES (?, ?)", fmt.Sprintf("name-%d", n), []byte("a small row")); err != nil {
			b.Fatal(err)
		}
		pend, err := r.Pending(ctx)
		if err != nil || len(pend) != 1 {
			b.Fatalf("pending: %v %d", err, len(pend))
		}
		p := pend[0]
		req := commit.Request{ClientID: "x", Seq: int64(p.Seq), Base: int64(p.BaseVersion), PageSize: 4096, PageCount: p.PageCount,
			ReadSet: commit.RangesOf(p.ReadSet), Record: p.Record.Encode()}
		for no, data := range p.Pages {
			req.Pages = append(req.Pages, commit.Page{No: no, Data: data})
		}
		pagesTotal += len(p.Pages)
		recordTotal += len(req.Record)
		bytesTotal += len(api.AppendPush(nil, []commit.Request{req}))
		if _, err := r.Push(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	st, err := r.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.PageCount)*4096/1e6, "db-MB")
	b.ReportMetric(float64(pagesTotal)/float64(n), "pages/commit")
	b.ReportMetric(float64(bytesTotal)/float64(n), "wire-bytes/commit")
	b.ReportMetric(float64(recordTotal)/float64(n), "record-bytes/commit")
}
