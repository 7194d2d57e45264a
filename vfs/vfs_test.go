package vfs

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/psanford/sqlite3vfs"
)

// workload is a deterministic random sequence of transactions; each is a
// list of statements run in one BEGIN…COMMIT.
func workload(seed uint64, n int) [][]string {
	rng := rand.New(rand.NewPCG(seed, 1))
	var txs [][]string
	nextID := 1
	txs = append(txs, []string{
		"CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)",
		"CREATE INDEX t_k ON t(k)",
	})
	for i := 0; i < n; i++ {
		var tx []string
		for j := 0; j < 1+rng.IntN(6); j++ {
			switch r := rng.IntN(10); {
			case r < 5:
				tx = append(tx, fmt.Sprintf("INSERT INTO t(id,k,v) VALUES(%d,'k%d',zeroblob(%d))",
					nextID, rng.IntN(1000), rng.IntN(3000)))
				nextID++
			case r < 7:
				tx = append(tx, fmt.Sprintf("UPDATE t SET v=zeroblob(%d), k='u%d' WHERE id=%d",
					rng.IntN(5000), rng.IntN(1000), 1+rng.IntN(nextID)))
			case r < 9:
				tx = append(tx, fmt.Sprintf("DELETE FROM t WHERE id=%d", 1+rng.IntN(nextID)))
			default:
				tx = append(tx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS s%d(a, b UNIQUE)", rng.IntN(5)))
			}
		}
		txs = append(txs, tx)
		if i == n/2 {
			txs = append(txs, []string{"CREATE INDEX IF NOT EXISTS t_v ON t(length(v))"})
			txs = append(txs, []string{"DELETE FROM t WHERE id % 3 = 0"})
			txs = append(txs, []string{"VACUUM"})
		}
	}
	return txs
}

func runTx(db *sql.DB, stmts []string) error {
	if len(stmts) == 1 && strings.HasPrefix(stmts[0], "VACUUM") {
		_, err := db.Exec(stmts[0])
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return tx.Commit()
}

func TestVFS_CaptureMatchesPlain(t *testing.T) {
	for _, pageSize := range []int{4096, 1024} {
		t.Run(fmt.Sprintf("PageSize%d", pageSize), func(t *testing.T) {
			db, rec, _ := mustMount(t, pageSize, "")
			plain, plainPath := mustPlain(t, pageSize)
			prev := rec.db.Bytes()
			for i, tx := range workload(uint64(pageSize), 60) {
				before := rec.count()
				if err := runTx(db, tx); err != nil {
					t.Fatalf("tx %d on vfs: %v", i, err)
				}
				if err := runTx(plain, tx); err != nil {
					t.Fatalf("tx %d on plain: %v", i, err)
				}
				want, err := os.ReadFile(plainPath)
				if err != nil {
					t.Fatal(err)
				}
				if rec.count() == before {
					// SQLite writes nothing when no byte changes (an UPDATE
					// to the same value, a DELETE of a missing row): no commit.
					if err := diffPages(prev, want, pageSize); err != nil {
						t.Fatalf("tx %d %q: no capture, but plain SQLite changed: %v", i, tx, err)
					}
					continue
				}
				if got, want := rec.count(), before+1; got != want {
					t.Fatalf("tx %d: %d captures, want %d", i, got, want)
				}
				c := rec.last()
				// The capture applied to the previous state is the new state.
				applied := NewMemDB(pageSize)
				if err := applied.SetBytes(prev); err != nil {
					t.Fatal(err)
				}
				if err := applied.Commit(context.Background(), c); err != nil {
					t.Fatal(err)
				}
				if err := diffPages(applied.Bytes(), want, pageSize); err != nil {
					t.Fatalf("tx %d %q: capture applied vs plain SQLite: %v", i, tx, err)
				}
				if got, want := headerPageCount(c.Pages[1]), c.PageCount; got != want {
					t.Fatalf("tx %d: header page count %d, Capture.PageCount %d", i, got, want)
				}
				prev = applied.Bytes()
			}
		})
	}
}

func TestVFS_LargeTransaction(t *testing.T) {
	db, rec, _ := mustMount(t, 4096, "&_cache_size=10")
	plain, plainPath := mustPlain(t, 4096)
	mustExec(t, plain, "PRAGMA cache_size=10")
	var got int
	if err := db.QueryRow("PRAGMA cache_size").Scan(&got); err != nil || got != 10 {
		t.Fatalf("cache_size=%d (%v), want 10", got, err)
	}
	tx := []string{"CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)"}
	for i := 0; i < 200; i++ {
		tx = append(tx, fmt.Sprintf("INSERT INTO big(v) VALUES(zeroblob(%d))", 1000+i*7))
	}
	tx = append(tx, "CREATE INDEX big_v ON big(length(v))")
	for _, d := range []*sql.DB{db, plain} {
		if err := runTx(d, tx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := rec.count(), 1; got != want {
		t.Fatalf("captures=%d, want %d", got, want)
	}
	if got := len(rec.last().Pages); got < 60 {
		t.Fatalf("captured %d pages, want more than the 10-page cache", got)
	}
	want, err := os.ReadFile(plainPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := diffPages(rec.db.Bytes(), want, 4096); err != nil {
		t.Fatalf("vfs vs plain: %v", err)
	}
}

// pathTo walks a table b-tree from root to the leaf holding rowid
// (https://www.sqlite.org/fileformat2.html#b_tree_pages).
func pathTo(t *testing.T, img []byte, pageSize int, root uint32, rowid int64) []uint32 {
	t.Helper()
	var path []uint32
	for pgno := root; ; {
		path = append(path, pgno)
		page := img[int(pgno-1)*pageSize : int(pgno)*pageSize]
		hdr := page
		if pgno == 1 {
			hdr = page[100:]
		}
		switch hdr[0] {
		case 0x0d:
			return path
		case 0x05:
		default:
			t.Fatalf("page %d: type %#x, want a table b-tree page", pgno, hdr[0])
		}
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		next := binary.BigEndian.Uint32(hdr[8:])
		for i := 0; i < n; i++ {
			off := binary.BigEndian.Uint16(hdr[12+2*i:])
			cell := page[off:]
			key, _ := binary.Uvarint(nil) // placeholder to keep imports honest
			_ = key
			k := sqliteVarint(cell[4:])
			if rowid <= k {
				next = binary.BigEndian.Uint32(cell)
				break
			}
		}
		pgno = next
	}
}

// sqliteVarint decodes SQLite's big-endian varint.
func sqliteVarint(b []byte) int64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i]&0x80 == 0 {
			return int64(v)
		}
	}
	return int64(v<<8 | uint64(b[8]))
}

func TestVFS_ReadSet(t *testing.T) {
	db, rec, _ := mustMount(t, 4096, "")
	tx := []string{"CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"}
	for i := 0; i < 400; i++ {
		tx = append(tx, "INSERT INTO t(v) VALUES(zeroblob(300))")
	}
	if err := runTx(db, tx); err != nil {
		t.Fatal(err)
	}
	var root uint32
	if err := db.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name='t'").Scan(&root); err != nil {
		t.Fatal(err)
	}
	path := pathTo(t, rec.db.Bytes(), 4096, root, 250)
	if len(path) < 2 {
		t.Fatalf("path %v: want an interior root", path)
	}
	want := slices.Sorted(slices.Values(append([]uint32{1}, path...)))

	t.Run("PointUpdate", func(t *testing.T) {
		n := rec.count()
		l := traced(t, 4096, func() { mustExec(t, db, "UPDATE t SET v=x'01'||zeroblob(299) WHERE id=250") })
		if got := rec.count(); got != n+1 {
			t.Fatalf("captures=%d, want %d; calls %s", got, n+1, l)
		}
		if got := rec.last().ReadSet; !slices.Equal(got, want) {
			t.Fatalf("ReadSet=%v, want %v", got, want)
		}
	})
	t.Run("PointLookup", func(t *testing.T) {
		var reads []uint32
		trace = func(op string, arg int64) {
			if op == "ReadAt" {
				reads = append(reads, uint32(arg/4096)+1)
			}
		}
		var n int
		err := db.QueryRow("SELECT length(v) FROM t WHERE id=250").Scan(&n)
		trace = nil
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Compact(slices.Sorted(slices.Values(reads)))
		if !slices.Equal(got, want) {
			t.Fatalf("pages read=%v, want %v", got, want)
		}
	})
}

func TestVFS_Rollback(t *testing.T) {
	t.Run("Small", func(t *testing.T) {
		db, rec, _ := mustMount(t, 4096, "")
		mustExec(t, db, "CREATE TABLE t(x)")
		before, n := rec.db.Bytes(), rec.count()
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("INSERT INTO t VALUES(1)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if got := rec.count(); got != n {
			t.Fatalf("captures=%d after ROLLBACK, want %d", got, n)
		}
		if string(rec.db.Bytes()) != string(before) {
			t.Fatal("state changed after ROLLBACK")
		}
	})
	t.Run("Spilled", func(t *testing.T) {
		db, rec, _ := mustMount(t, 4096, "&_cache_size=10")
		mustExec(t, db, "CREATE TABLE t(x)")
		mustExec(t, db, "INSERT INTO t VALUES(zeroblob(100))")
		before, n := rec.db.Bytes(), rec.count()
		var writes int
		trace = func(op string, arg int64) {
			if op == "WriteAt" {
				writes++
			}
		}
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			if _, err := tx.Exec("INSERT INTO t VALUES(zeroblob(2000))"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec("UPDATE t SET x=zeroblob(10) WHERE rowid=1"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		trace = nil
		if writes == 0 {
			t.Fatal("no page spilled to the VFS: the test does not exercise spill")
		}
		if got := rec.count(); got != n {
			t.Fatalf("captures=%d after ROLLBACK, want %d", got, n)
		}
		if string(rec.db.Bytes()) != string(before) {
			t.Fatal("state changed after ROLLBACK")
		}
		var cnt int
		if err := db.QueryRow("SELECT count(*) FROM t").Scan(&cnt); err != nil || cnt != 1 {
			t.Fatalf("count=%d (%v), want 1", cnt, err)
		}
	})
}

func TestVFS_CommitFailure(t *testing.T) {
	for _, name := range []string{"Autocommit", "Explicit", "Spilled"} {
		t.Run(name, func(t *testing.T) {
			db, rec, mount := mustMount(t, 4096, "&_cache_size=10")
			mustExec(t, db, "CREATE TABLE t(x)")
			mustExec(t, db, "INSERT INTO t VALUES(1)")
			before, n := rec.db.Bytes(), rec.count()
			rec.failWith = errInjected
			var err error
			switch name {
			case "Autocommit":
				_, err = db.Exec("INSERT INTO t VALUES(2)")
			case "Explicit", "Spilled":
				rows := 1
				if name == "Spilled" {
					rows = 100
				}
				tx, berr := db.Begin()
				if berr != nil {
					t.Fatal(berr)
				}
				for i := 0; i < rows; i++ {
					if _, err := tx.Exec("INSERT INTO t VALUES(zeroblob(2000))"); err != nil {
						t.Fatal(err)
					}
				}
				err = tx.Commit()
			}
			rec.failWith = nil
			if err == nil {
				t.Fatal("COMMIT succeeded, want an error from the failing CommitFunc")
			}
			var ce *CommitError
			if lerr := testVFS.LastError(mount); !errors.As(lerr, &ce) || !errors.Is(lerr, errInjected) {
				t.Fatalf("LastError=%v, want a CommitError wrapping the injected error", lerr)
			}
			if got := rec.count(); got != n {
				t.Fatalf("captures=%d, want %d", got, n)
			}
			if string(rec.db.Bytes()) != string(before) {
				t.Fatal("state changed after a failed COMMIT")
			}
			var cnt int
			if err := db.QueryRow("SELECT count(*) FROM t").Scan(&cnt); err != nil || cnt != 1 {
				t.Fatalf("count=%d (%v), want 1", cnt, err)
			}
			// The connection keeps working.
			mustExec(t, db, "INSERT INTO t VALUES(3)")
			if got := rec.count(); got != n+1 {
				t.Fatalf("captures=%d after a later commit, want %d", got, n+1)
			}
		})
	}
}

func TestVFS_Page1Served(t *testing.T) {
	db, rec, name := mustMount(t, 4096, "")
	mustExec(t, db, "CREATE TABLE t(x)")
	stored := rec.last().Pages[1]
	m := testVFS.lookup(name)
	f := newMainFile(m, "")
	defer f.Close()
	if err := f.Lock(sqlite3vfs.LockShared); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		inCounter := (i >= 24 && i < 28) || (i >= 92 && i < 96)
		if !inCounter && got[i] != stored[i] {
			t.Fatalf("byte %d served %#x, stored %#x", i, got[i], stored[i])
		}
	}
	if a, b := binary.BigEndian.Uint32(got[24:]), binary.BigEndian.Uint32(got[92:]); a != b {
		t.Fatalf("served counters %d and %d, want equal", a, b)
	}
	if string(got[24:28]) == string(stored[24:28]) {
		t.Fatalf("served counter %x equals the stored one: no epoch", got[24:28])
	}
	// Reads of the counters alone (the pager's check at each shared lock).
	part := make([]byte, 16)
	if _, err := f.ReadAt(part, 24); err != nil {
		t.Fatal(err)
	}
	if string(part) != string(got[24:40]) {
		t.Fatalf("ReadAt(16, 24)=%x, want %x", part, got[24:40])
	}
}

func TestVFS_Clock(t *testing.T) {
	db, _, _ := mustMount(t, 4096, "")
	at := time.Date(2031, 5, 6, 7, 8, 9, 123e6, time.UTC)
	testVFS.SetTime(at)
	defer testVFS.SetTime(time.Time{})
	var got string
	if err := db.QueryRow("SELECT strftime('%Y-%m-%d %H:%M:%f','now')").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "2031-05-06 07:08:09.123"; got != want {
		t.Fatalf("now=%q, want %q", got, want)
	}
	mustExec(t, db, "CREATE TABLE t(x, at DEFAULT CURRENT_TIMESTAMP)")
	mustExec(t, db, "INSERT INTO t(x) VALUES(1)")
	if err := db.QueryRow("SELECT at FROM t").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "2031-05-06 07:08:09"; !strings.HasPrefix(got, "2031-05-06T07:08:09") && got != want {
		t.Fatalf("DEFAULT CURRENT_TIMESTAMP=%q, want %q", got, want)
	}
}

func TestVFS_RefusesJournal(t *testing.T) {
	db, rec, name := mustMount(t, 4096, "")
	mustExec(t, db, "PRAGMA journal_mode=DELETE")
	_, err := db.Exec("CREATE TABLE t(x)")
	if err == nil {
		t.Fatal("write with journal_mode=DELETE succeeded, want an error")
	}
	if lerr := testVFS.LastError(name); !errors.Is(lerr, ErrJournalFile) {
		t.Fatalf("LastError=%v, want ErrJournalFile", lerr)
	}
	if got := rec.count(); got != 0 {
		t.Fatalf("captures=%d, want 0", got)
	}
	mustExec(t, db, "PRAGMA journal_mode=MEMORY")
}

func TestVFS_Register(t *testing.T) {
	if _, err := Register(testVFS.Name()); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("Register(taken)=%v, want ErrNameTaken", err)
	}
	if err := testVFS.Mount("/x", NewMemDB(4096), nil); err != nil {
		t.Fatal(err)
	}
	defer testVFS.Unmount("/x")
	if err := testVFS.Mount("/x", NewMemDB(4096), nil); !errors.Is(err, ErrMounted) {
		t.Fatalf("Mount(twice)=%v, want ErrMounted", err)
	}
}
