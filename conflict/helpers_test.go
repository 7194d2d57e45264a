package conflict

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/vfs"
)

// testVFS is registered once, before any connection (see vfs.Register).
var testVFS *vfs.VFS

func TestMain(m *testing.M) {
	v, err := vfs.Register("cambium-conflict-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testVFS = v
	os.Exit(m.Run())
}

const testPageSize = 4096

// volume is a toy server for one database: a linear history of file
// images and of the pages each version wrote, which is what the page index
// knows. Commits are made by real SQLite on the Cambium VFS, so their read
// and write sets are exact.
type volume struct {
	tb       testing.TB
	pageSize int
	images   [][]byte          // images[v] is the database at version v; images[0] is empty
	wrote    []map[uint32]bool // wrote[v] is the pages version v wrote
}

func newVolume(tb testing.TB) *volume {
	return &volume{tb: tb, pageSize: testPageSize, images: [][]byte{nil}, wrote: []map[uint32]bool{nil}}
}

func (v *volume) head() int64 { return int64(len(v.images) - 1) }

func (v *volume) count(version int64) uint32 {
	return uint32(len(v.images[version]) / v.pageSize)
}

func (v *volume) page(version int64, pgno uint32) []byte {
	img := v.images[version]
	if int(pgno)*v.pageSize > len(img) {
		return nil
	}
	return img[int(pgno-1)*v.pageSize : int(pgno)*v.pageSize]
}

var mountSeq atomic.Int64

// tx runs stmts in one transaction (BEGIN…COMMIT) on a replica of version
// base and returns the commit the VFS captured.
func (v *volume) tx(base int64, stmts ...string) *vfs.Capture {
	v.tb.Helper()
	return v.capture(base, nil, true, stmts)
}

// txAfter is tx, with setup run on the connection before BEGIN (e.g.
// PRAGMA encoding, which must precede the first table and writes nothing).
func (v *volume) txAfter(base int64, setup []string, stmts ...string) *vfs.Capture {
	v.tb.Helper()
	return v.capture(base, setup, true, stmts)
}

// autocommit runs stmts one by one without BEGIN (for VACUUM, or PRAGMAs
// that must precede the first write), expecting exactly one of them to
// commit.
func (v *volume) autocommit(base int64, stmts ...string) *vfs.Capture {
	v.tb.Helper()
	return v.capture(base, nil, false, stmts)
}

func (v *volume) capture(base int64, setup []string, inTx bool, stmts []string) *vfs.Capture {
	tb := v.tb
	tb.Helper()
	src := vfs.NewMemDB(v.pageSize)
	if err := src.SetBytes(v.images[base]); err != nil {
		tb.Fatal(err)
	}
	var caps []*vfs.Capture
	name := fmt.Sprintf("/conflict/%d.db", mountSeq.Add(1))
	if err := testVFS.Mount(name, src, func(ctx context.Context, c *vfs.Capture) error {
		caps = append(caps, c)
		return src.Commit(ctx, c)
	}); err != nil {
		tb.Fatal(err)
	}
	defer testVFS.Unmount(name)
	db, err := sql.Open("sqlite3", fmt.Sprintf("file:%s?vfs=%s&_journal_mode=MEMORY&_sync=NORMAL", name, testVFS.Name()))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	mustExec(tb, db, fmt.Sprintf("PRAGMA page_size=%d", v.pageSize))
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	for _, q := range setup {
		mustExecConn(tb, conn, q)
	}
	if inTx {
		mustExecConn(tb, conn, "BEGIN")
	}
	for _, q := range stmts {
		mustExecConn(tb, conn, q)
	}
	if inTx {
		mustExecConn(tb, conn, "COMMIT")
	}
	if len(caps) != 1 {
		tb.Fatalf("%q on v%d: %d commits captured, want 1 (last error %v)", stmts, base, len(caps), testVFS.LastError(name))
	}
	return caps[0]
}

// mustExecConn runs q, draining rows when it returns some (SELECT, PRAGMA),
// so that every row a statement reads joins the read set.
func mustExecConn(tb testing.TB, conn *sql.Conn, q string) {
	tb.Helper()
	rows, err := conn.QueryContext(context.Background(), q)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	rows.Close()
}

func mustExec(tb testing.TB, db *sql.DB, q string, args ...any) {
	tb.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

// store appends c, made on base, as the next version: as made when base is
// head (the fast path), else with m applied (a merge). It returns the new
// version.
func (v *volume) store(c *vfs.Capture, m *Merge) int64 {
	img := slices.Clone(v.images[v.head()])
	count := c.PageCount
	if m != nil {
		count = m.PageCount
	}
	img = resize(img, int(count)*v.pageSize)
	wrote := map[uint32]bool{1: true}
	for p, b := range c.Pages {
		if p > count {
			v.tb.Fatalf("stored page %d beyond page count %d", p, count)
		}
		copy(img[int(p-1)*v.pageSize:], b)
		wrote[p] = true
	}
	if m != nil {
		copy(img, m.Page1)
	}
	if got := binary.BigEndian.Uint32(img[hdrPageCount:]); got != count {
		v.tb.Fatalf("stored page 1 says %d pages, page count %d", got, count)
	}
	v.images = append(v.images, img)
	v.wrote = append(v.wrote, wrote)
	return v.head()
}

func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	return append(b, make([]byte, n-len(b))...)
}

// fastPath stores c, which must be based on head.
func (v *volume) fastPath(c *vfs.Capture) int64 {
	v.tb.Helper()
	return v.store(c, nil)
}

// input builds Detect's input for c made on base, from what the page index
// would answer (pgschema's ChangedPages leaves out pages beyond head's page
// count) and the stored copies of page 1.
func (v *volume) input(base int64, c *vfs.Capture) Input {
	head := v.head()
	newest := map[uint32]int64{}
	for ver := base + 1; ver <= head; ver++ {
		for p := range v.wrote[ver] {
			newest[p] = ver
		}
	}
	in := Input{
		Base: base, Head: head,
		BaseCount: v.count(base), HeadCount: v.count(head), ClientCount: c.PageCount,
		BasePage1: v.page(base, 1), HeadPage1: v.page(head, 1), ClientPage1: c.Pages[1],
	}
	for p, ver := range newest {
		if p <= in.HeadCount {
			in.Changed = append(in.Changed, Change{Page: p, Version: ver})
		}
	}
	slices.SortFunc(in.Changed, func(a, b Change) int { return int(a.Page) - int(b.Page) })
	in.ReadSet = ranges(c.ReadSet)
	for p := range c.Pages {
		in.Written = append(in.Written, p)
	}
	slices.Sort(in.Written)
	return in
}

// ranges turns ascending page numbers into ranges.
func ranges(pages []uint32) []Range {
	var out []Range
	for _, p := range pages {
		if n := len(out); n > 0 && out[n-1].First+out[n-1].Count == p {
			out[n-1].Count++
			continue
		}
		out = append(out, Range{First: p, Count: 1})
	}
	return out
}

// push decides c made on base as the server would without replay: the fast
// path at head, else Detect, storing it when it merges. The report is nil
// on the fast path.
func (v *volume) push(base int64, c *vfs.Capture) *Report {
	v.tb.Helper()
	if base == v.head() {
		v.fastPath(c)
		return nil
	}
	r := Detect(v.input(base, c))
	if r.Mergeable() {
		v.store(c, r.Merge)
	}
	return r
}

// open opens version ver's image with plain SQLite (the default VFS, not
// Cambium's), read-only, and checks that PRAGMA integrity_check is ok.
func (v *volume) open(ver int64) *sql.DB {
	tb := v.tb
	tb.Helper()
	db := openImage(tb, v.images[ver])
	if got := integrity(tb, db); got != "ok" {
		tb.Fatalf("v%d: integrity_check=%q, want ok", ver, got)
	}
	return db
}

func openImage(tb testing.TB, img []byte) *sql.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "image.db")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		tb.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// integrity returns PRAGMA integrity_check's report, or the error that
// kept it from running (a malformed image).
func integrity(tb testing.TB, db *sql.DB) string {
	tb.Helper()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err.Error()
		}
		msgs = append(msgs, s)
	}
	if err := rows.Err(); err != nil {
		return err.Error()
	}
	return strings.Join(msgs, "\n")
}

func queryInt(tb testing.TB, db *sql.DB, q string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}

// reader serves the pages of an image and counts reads.
func reader(img []byte, pageSize int, reads *int) PageReader {
	return func(ctx context.Context, pgno uint32) ([]byte, error) {
		if reads != nil {
			*reads++
		}
		if pgno == 0 || int(pgno)*pageSize > len(img) {
			return nil, fmt.Errorf("page %d out of range", pgno)
		}
		return img[int(pgno-1)*pageSize : int(pgno)*pageSize], nil
	}
}

// others returns c's written pages other than page 1 and those in skip.
func others(c *vfs.Capture, skip ...uint32) []uint32 {
	var out []uint32
	for p := range c.Pages {
		if p != 1 && !slices.Contains(skip, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// seedTwoTables is a volume at v1 with tables a and b of 200 rows each,
// each row ~300 bytes, so each table spans many leaves and a row of a never
// shares a page with a row of b.
func seedTwoTables(tb testing.TB) *volume {
	tb.Helper()
	v := newVolume(tb)
	v.fastPath(v.tx(0,
		"CREATE TABLE a(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad BLOB)",
		"CREATE TABLE b(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad BLOB)",
		"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200) INSERT INTO a SELECT i, 0, zeroblob(300) FROM s",
		"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200) INSERT INTO b SELECT i, 0, zeroblob(300) FROM s",
	))
	return v
}
