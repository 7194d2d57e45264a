package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/replica"
)

// The cold-lazy volume: one table of documents, each with an integer
// primary key, a key in no order related to it and a few hundred bytes of
// text, and an index on the key. A point query by key walks the index and
// then the table: a handful of pages, whatever the volume's size.
const (
	lazySchema = "CREATE TABLE docs(id INTEGER PRIMARY KEY, key TEXT NOT NULL, body TEXT NOT NULL)"
	lazyIndex  = "CREATE INDEX docs_key ON docs(key)"
	// lazyInsert inserts the rows with ids ?1 to ?2; its key is lazyKey's.
	lazyInsert = "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2) " +
		"INSERT INTO docs(id, key, body) SELECT i, printf('user-%08x', (i * 2654435761) % 4294967296), " +
		"printf('document %d: %s', i, hex(randomblob(150))) FROM s"
	lazyQuery = "SELECT id, body FROM docs WHERE key = ?"

	lazyRowBytes    = 395     // about what a row takes in the file, its index entry included (measured at 1 GiB)
	lazyInsertBatch = 100_000 // rows per INSERT
	// seedPushPages is how many pages one seed commit carries, one commit
	// per push request: as many as fit the server's push size limit with
	// room for the frame (a page costs its bytes and a varint of at most 5).
	seedPushPages = (api.DefaultMaxPushBytes - 64<<10) / (api.DefaultPageSize + 5)
)

// lazyKey is the key of row id: an odd multiplier modulo 2^32 is a
// bijection, so keys are unique (for ids below 2^32, which maxLazyBytes
// keeps them) and scattered over the index.
func lazyKey(id int64) string { return fmt.Sprintf("user-%08x", uint64(id)*2654435761%(1<<32)) }

// buildLazyDB writes a SQLite file of about size bytes at path with plain
// SQLite: the rows in big statements without a journal, then the index
// (sorted once, as CREATE INDEX does, rather than grown row by row). It
// returns the rows it holds.
func buildLazyDB(ctx context.Context, path string, size int64) (int64, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_journal_mode=OFF&_synchronous=OFF&_cache_size=-131072"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the page size pragma must reach the connection that creates the table
	rows := max(1, size/lazyRowBytes)
	for _, q := range []string{fmt.Sprintf("PRAGMA page_size = %d", api.DefaultPageSize), lazySchema} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("build %s: %s: %w", path, q, err)
		}
	}
	for first := int64(1); first <= rows; first += lazyInsertBatch {
		if _, err := db.ExecContext(ctx, lazyInsert, first, min(first+lazyInsertBatch-1, rows)); err != nil {
			return 0, fmt.Errorf("build %s: insert rows from %d: %w", path, first, err)
		}
	}
	if _, err := db.ExecContext(ctx, lazyIndex); err != nil {
		return 0, fmt.Errorf("build %s: %w", path, err)
	}
	return rows, db.Close()
}

// pushFile makes the SQLite file at path the volume's next version, as
// commits of seedPushPages pages each, one per push request, each based on
// the version the one before became: fast-path, as nothing else writes
// the volume. Each commit states the file's final page count; the versions
// between are not databases, the last one is the file. It returns the
// pages and the commits.
func pushFile(ctx context.Context, c *api.Client, volume, path, clientID string) (uint32, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	const ps = api.DefaultPageSize
	if fi.Size() == 0 || fi.Size()%ps != 0 {
		return 0, 0, fmt.Errorf("push %s: %d bytes is not a whole number of %d-byte pages", path, fi.Size(), ps)
	}
	count := uint32(fi.Size() / ps)
	v, err := c.Volume(ctx, volume)
	if err != nil {
		return 0, 0, err
	}
	base, seq := v.Head, int64(0)
	buf := make([]byte, seedPushPages*ps)
	for first := uint32(1); first <= count; first += seedPushPages {
		n := min(seedPushPages, int(count-first+1))
		b := buf[:n*ps]
		if _, err := f.ReadAt(b, int64(first-1)*ps); err != nil {
			return 0, 0, fmt.Errorf("push %s: %w", path, err)
		}
		seq++
		req := commit.Request{ClientID: clientID, Seq: seq, Base: base, PageSize: ps, PageCount: count, Pages: make([]commit.Page, n)}
		for i := range n {
			req.Pages[i] = commit.Page{No: first + uint32(i), Data: b[i*ps : (i+1)*ps]}
		}
		res, err := c.Push(ctx, volume, []commit.Request{req})
		if err != nil {
			return 0, 0, fmt.Errorf("push %s, pages %d-%d: %w", path, first, first+uint32(n)-1, err)
		}
		if res[0].Decision != commit.FastPath {
			return 0, 0, fmt.Errorf("push %s, pages %d-%d: %s, want fast-path: %s", path, first, first+uint32(n)-1, res[0].Decision, res[0].Reason)
		}
		base = res[0].Version
	}
	return count, int(seq), nil
}

// seedLazy gives the cell's volume the cold-lazy database: built locally
// with plain SQLite and pushed in a few large commits, which takes seconds
// where a replica capturing it transaction by transaction would send each
// index page many times. Setup, not measured.
func (c *cell) seedLazy(ctx context.Context) error {
	rn := c.rn
	path := filepath.Join(c.dir, "seed.db")
	t0 := time.Now()
	rows, err := buildLazyDB(ctx, path, rn.cfg.Sizes.LazyBytes)
	if err != nil {
		return err
	}
	t1 := time.Now()
	pages, commits, err := pushFile(ctx, c.admin, c.volume, path, "bench-seed")
	if err != nil {
		return err
	}
	rn.logf("%s: seeded %s rows, %s pages (%s): built in %.1f s, pushed as %d commits in %.1f s",
		ColdLazy, commas(rows), commas(int64(pages)), bytesStr(float64(pages)*api.DefaultPageSize), t1.Sub(t0).Seconds(), commits, time.Since(t1).Seconds())
	rn.lazyPages, rn.lazyRows = pages, rows
	return os.Remove(path)
}

// coldReader is one reader of the cold-lazy workload: a clone of the
// volume's head, ready for its first query.
type coldReader struct {
	db      *sql.DB
	fetched func() int64 // pages brought down so far
	close   func(context.Context) error
}

// openColdReader clones the volume's head at path. Under full-file it
// downloads the whole file; otherwise it is a lazy replica, which pulls the
// head without fetching a page.
func openColdReader(ctx context.Context, strategy, path, volume, clientID string, pages uint32, c *api.Client, t *tally) (*coldReader, error) {
	if strategy == FullFile {
		f, err := openFileClient(ctx, path, volume, clientID, api.DefaultPageSize, c, t)
		if err != nil {
			return nil, err
		}
		return &coldReader{db: f.DB(), fetched: func() int64 { return int64(pages) },
			close: func(ctx context.Context) error { return errors.Join(f.Close(ctx), os.Remove(path)) }}, nil
	}
	r, err := replica.Open(ctx, path, replica.Options{Volume: volume, Lazy: true, Fetcher: c})
	if err != nil {
		return nil, err
	}
	if _, err := r.Pull(ctx, c); err != nil {
		r.Close(ctx)
		return nil, err
	}
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		r.Close(ctx)
		return nil, err
	}
	return &coldReader{db: db, fetched: func() int64 { return r.Lazy().Fetched },
		close: func(ctx context.Context) error { return errors.Join(db.Close(), r.Close(ctx)) }}, nil
}

// lookup runs the first query: the row of id, by its key.
func (r *coldReader) lookup(ctx context.Context, id int64) error {
	var got int64
	var body string
	if err := r.db.QueryRowContext(ctx, lazyQuery, lazyKey(id)).Scan(&got, &body); err != nil {
		return fmt.Errorf("query key %s: %w", lazyKey(id), err)
	}
	if got != id || !strings.HasPrefix(body, fmt.Sprintf("document %d: ", id)) {
		return fmt.Errorf("%w: key %s gave row %d (%.20q), want %d", errCheck, lazyKey(id), got, body, id)
	}
	return nil
}

// coldLazy: a new reader clones a volume of Sizes.LazyBytes and runs one
// point query on a random key. The volume is seeded once, on a hybrid
// server, and each strategy's readers then read it in turn: a lazy replica
// (hybrid; strict-pages and replay-all too, whose settings only decide
// commits, so their rows differ by noise only) pulls the head without a
// page and fetches what the query reads; the full-file client downloads
// the whole file, then queries it. A reader's latency is its clone and
// first query; Result.QueryP50 and QueryP99 are the query alone.
func (rn *runner) coldLazy(ctx context.Context) (_ []Result, err error) {
	rn.logf("%s: starting (one volume for every strategy)", ColdLazy)
	c, err := rn.newCell(ctx, ColdLazy, Hybrid)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ColdLazy, err)
	}
	defer func() {
		if cerr := c.close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", ColdLazy, cerr)
		}
	}()
	if err := c.seedLazy(ctx); err != nil {
		return nil, fmt.Errorf("%s: seed: %w", ColdLazy, err)
	}
	readers := rn.cfg.Sizes.Readers
	var out []Result
	for _, st := range rn.cfg.Strategies {
		// The first reader pays for reading the pages from the store, the
		// others find the upper levels of the index and the table cached.
		sub, cl, err := c.restartCold(ctx, st)
		if err != nil {
			return nil, err
		}
		var queries []time.Duration
		var fetched int64
		for i := range readers {
			id := 1 + rand.Int64N(rn.lazyRows)
			path := filepath.Join(c.dir, fmt.Sprintf("%s-r%d.db", st, i))
			sub.begin()
			t0 := time.Now()
			r, err := openColdReader(ctx, st, path, c.volume, fmt.Sprintf("bench-reader-%d", i), rn.lazyPages, cl, sub.tally)
			t1 := time.Now()
			if err == nil {
				err = r.lookup(ctx, id)
			}
			t2 := time.Now()
			sub.end()
			sub.attempted.Add(1)
			if err == nil {
				sub.latency(t2.Sub(t0))
				queries = append(queries, t2.Sub(t1))
				fetched += r.fetched()
			}
			if r != nil {
				err = errors.Join(err, r.close(ctx))
			}
			if err != nil {
				return nil, fmt.Errorf("%s × %s: reader %d: %w", ColdLazy, st, i, err)
			}
		}
		res := sub.result(int64(readers))
		res.Rounds, res.PerSecondMin, res.PerSecondMax = 1, res.PerSecond, res.PerSecond
		res.QueryP50, res.QueryP99, res.PagesFetched = quantile(queries, 0.5), quantile(queries, 0.99), fetched
		switch st {
		case StrictPages, ReplayAll:
			res.Note = "a lazy replica, the same reads as hybrid's"
		case FullFile:
			res.Note = "downloads the whole file, then queries it"
		}
		rn.logf("%s × %s: clone + first query p50 %s p99 %s, query alone p50 %s p99 %s, %s pages and %s down per reader",
			ColdLazy, st, ms(res.P50), ms(res.P99), ms(res.QueryP50), ms(res.QueryP99), commas(fetched/int64(readers)), bytesStr(res.DownPerCommit))
		out = append(out, res)
	}
	return out, nil
}
