package segment_test

import (
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// synthPages returns n pages imitating SQLite table b-tree leaf pages
// (https://www.sqlite.org/fileformat2.html#b_tree_pages): an 8-byte page
// header, a cell pointer array, free space of zeros, then cells packed at the
// end of the page holding varint headers, integers and text with repetition.
// Deterministic for a given seed, cheap, and needs no cgo.
func synthPages(n, pageSize int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := []string{"alice", "bob", "carol", "dave", "order", "shipped", "pending",
		"invoice", "paris", "berlin", "tokyo", "@example.com", "premium", "refund"}
	pages := make([][]byte, n)
	for i := range pages {
		p := make([]byte, pageSize)
		p[0] = 0x0d // table leaf
		end := pageSize
		cells := 0
		ptr := 8
		// Fill to 60–95% like a real tree, leaving zeros in the middle.
		fill := pageSize * (60 + rng.IntN(36)) / 100
		for pageSize-end < fill && ptr+2 < end-64 {
			var cell []byte
			cell = binary.AppendUvarint(cell, uint64(20+rng.IntN(40)))
			cell = binary.AppendUvarint(cell, uint64(i*100+cells))
			cell = append(cell, 4, 1, 0x13, 0x19, 6) // record header
			for range 2 + rng.IntN(4) {
				cell = append(cell, words[rng.IntN(len(words))]...)
				cell = append(cell, ' ')
			}
			cell = binary.BigEndian.AppendUint64(cell, uint64(rng.Int64N(1_000_000)))
			if end-len(cell) <= ptr+2 {
				break
			}
			end -= len(cell)
			copy(p[end:], cell)
			binary.BigEndian.PutUint16(p[ptr:], uint16(end%65536))
			ptr += 2
			cells++
		}
		binary.BigEndian.PutUint16(p[3:], uint16(cells))
		binary.BigEndian.PutUint16(p[5:], uint16(end%65536))
		pages[i] = p
	}
	return pages
}

var (
	sqliteOnce  sync.Once
	sqlitePages [][]byte
	sqliteErr   error
)

// realSQLitePages returns the pages of a real SQLite database of about 8 MiB
// with 4 KiB pages: an orders table of integers and repetitive text, and an
// index on it. Built once per test binary.
func realSQLitePages(tb testing.TB) [][]byte {
	tb.Helper()
	sqliteOnce.Do(func() {
		sqlitePages, sqliteErr = buildSQLite()
	})
	if sqliteErr != nil {
		tb.Fatalf("build SQLite database: %v", sqliteErr)
	}
	return sqlitePages
}

func buildSQLite() ([][]byte, error) {
	dir, err := os.MkdirTemp("", "segment-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "bench.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for _, q := range []string{
		"PRAGMA page_size = 4096",
		"PRAGMA journal_mode = OFF",
		"PRAGMA synchronous = OFF",
		`CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, email TEXT,
			status TEXT, amount INTEGER, created INTEGER, note TEXT)`,
		"CREATE INDEX orders_customer ON orders (customer, created)",
	} {
		if _, err := db.Exec(q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		return nil, err
	}
	stmt, err := tx.Prepare("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	first := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"}
	last := []string{"smith", "jones", "garcia", "müller", "rossi", "dubois", "tanaka", "kowalski"}
	status := []string{"pending", "paid", "shipped", "delivered", "refunded"}
	notes := []string{"", "", "leave at door", "gift wrap please", "call before delivery",
		"fragile: glassware", "second attempt, customer was out"}
	for i := 1; i <= 60000; i++ {
		name := first[rng.IntN(len(first))] + " " + last[rng.IntN(len(last))]
		email := fmt.Sprintf("%s.%d@example.com", first[rng.IntN(len(first))], rng.IntN(10000))
		if _, err := stmt.Exec(i, name, email, status[rng.IntN(len(status))],
			rng.IntN(100000), 1_700_000_000+i*37, notes[rng.IntN(len(notes))]); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pages [][]byte
	for off := 0; off+4096 <= len(b); off += 4096 {
		pages = append(pages, b[off:off+4096])
	}
	return pages, nil
}
