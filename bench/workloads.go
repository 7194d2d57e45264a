package bench

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/cambiumdb/cambium/api"
)

// The database every workload starts from: Sizes.DBBytes of preloaded rows
// and one small table per purpose, so that each workload's transactions
// touch only their own pages.
func schema(writers int) []string {
	q := []string{
		"CREATE TABLE preload(id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
		"CREATE TABLE items(id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER NOT NULL)", // single, catch-up
		"CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",                  // single
		"INSERT INTO counters VALUES (1, 0)",
		"CREATE TABLE hot(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)", // hot-row
		"INSERT INTO hot VALUES (1, 0)",
		"CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)", // offline
	}
	for w := range max(writers, 1) { // disjoint; d0 for offline's online writer
		q = append(q,
			fmt.Sprintf("CREATE TABLE d%d(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)", w),
			fmt.Sprintf("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 10) INSERT INTO d%d SELECT i, 0 FROM s", w))
	}
	return q
}

// preloadRowBytes is about what one preloaded row takes in the file.
const preloadRowBytes = 100

// txOf runs statements as one transaction.
func txOf(stmts ...string) txFunc {
	return func(ctx context.Context, db *sql.DB) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				tx.Rollback()
				return fmt.Errorf("%.60s: %w", s, err)
			}
		}
		return tx.Commit()
	}
}

// stmt runs one statement with arguments as its own transaction.
func stmt(q string, args ...any) txFunc {
	return func(ctx context.Context, db *sql.DB) error {
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%.60s: %w", q, err)
		}
		return nil
	}
}

// body is a row's text: about 90 bytes, the same for the same i.
func body(kind string, i int) string {
	h := sha256.Sum256([]byte(fmt.Sprint(kind, i)))
	return fmt.Sprintf("%s %d %s", kind, i, hex.EncodeToString(h[:])[:64])
}

// itemTx is the single writer's small transaction, as in DESIGN.md's
// measurement: one INSERT and one UPDATE.
func itemTx(i int) txFunc {
	b := body("item", i)
	return func(ctx context.Context, db *sql.DB) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO items(body, n) VALUES (?, ?)", b, i); err != nil {
			tx.Rollback()
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE counters SET n = n + 1 WHERE id = 1"); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
}

func disjointTx(w, i int) txFunc {
	return stmt(fmt.Sprintf("UPDATE d%d SET v = v + 1 WHERE id = ?", w), i%10+1)
}

func hotTx() txFunc { return stmt("UPDATE hot SET n = n + 1 WHERE id = 1") }

func noteTx(i int) txFunc { return stmt("INSERT INTO notes(body) VALUES (?)", body("note", i)) }

func queryInt(ctx context.Context, db *sql.DB, q string) (int64, error) {
	var n sql.NullInt64
	err := db.QueryRowContext(ctx, q).Scan(&n)
	return n.Int64, err
}

// expect checks that query q yields want.
func expect(ctx context.Context, db *sql.DB, q string, want int64) error {
	got, err := queryInt(ctx, db, q)
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	if got != want {
		return fmt.Errorf("%w: %s = %d, want %d (the commits stored)", errCheck, q, got, want)
	}
	return nil
}

// seed gives the cell's volume its schema and preloaded rows, through a
// replica whose traffic is not counted.
func (c *cell) seed(ctx context.Context) error {
	w, err := openReplicaWriter(ctx, filepath.Join(c.dir, "seed.db"), c.volume, c.admin, c.tally)
	if err != nil {
		return err
	}
	defer w.Close(ctx)
	if err := w.Exec(ctx, txOf(schema(c.rn.cfg.Sizes.Writers)...)); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if rows := c.rn.cfg.Sizes.DBBytes / preloadRowBytes; rows > 0 {
		q := fmt.Sprintf("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < %d) "+
			"INSERT INTO preload(body) SELECT printf('preloaded row %%d %%s', i, hex(randomblob(32))) FROM s", rows)
		if err := w.Exec(ctx, stmt(q)); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	if err := w.Sync(ctx, time.Time{}, nil); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	v, err := c.admin.Volume(ctx, c.volume)
	if err != nil {
		return err
	}
	c.rn.dbPages = v.PageCount
	return nil
}

// run runs the cell's workload.
func (c *cell) run(ctx context.Context) (Result, error) {
	if err := c.seed(ctx); err != nil {
		return Result{}, err
	}
	s := c.rn.cfg.Sizes
	switch c.workload {
	case Single:
		return c.online(ctx, 1, s.Commits, func(_, i int) txFunc { return itemTx(i) },
			func(ctx context.Context, db *sql.DB, n int64) error {
				return errors.Join(expect(ctx, db, "SELECT count(*) FROM items", n), expect(ctx, db, "SELECT n FROM counters", n))
			})
	case Disjoint:
		sum := "SELECT 0"
		for w := range s.Writers {
			sum += fmt.Sprintf(" + (SELECT sum(v) FROM d%d)", w)
		}
		return c.online(ctx, s.Writers, s.PerWriter, disjointTx,
			func(ctx context.Context, db *sql.DB, n int64) error { return expect(ctx, db, sum, n) })
	case HotRow:
		return c.online(ctx, s.Writers, s.PerWriter, func(int, int) txFunc { return hotTx() },
			func(ctx context.Context, db *sql.DB, n int64) error { return expect(ctx, db, "SELECT n FROM hot", n) })
	case Offline:
		return c.offline(ctx)
	}
	return Result{}, fmt.Errorf("workload %s has no cell of its own", c.workload)
}

// online runs n transactions on each of writers clients at once, each
// pushed until decided before the next; the latency of one is from the
// start of its local transaction to that decision. check verifies the end
// state against the commits stored.
func (c *cell) online(ctx context.Context, writers, n int, tx func(w, i int) txFunc, check func(context.Context, *sql.DB, int64) error) (Result, error) {
	ws := make([]writer, 0, writers)
	defer func() {
		for _, w := range ws {
			w.Close(context.Background())
		}
	}()
	for i := range writers {
		w, err := c.open(ctx, fmt.Sprintf("w%d", i))
		if err != nil {
			return Result{}, err
		}
		ws = append(ws, w)
	}
	c.planned = int64(writers * n)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	c.begin()
	for w := range ws {
		wg.Go(func() {
			for i := range n {
				if time.Now().After(c.stop) {
					c.limited.Store(true)
					return
				}
				t0 := time.Now()
				c.attempted.Add(1)
				if err := ws[w].Exec(wctx, tx(w, i)); err != nil {
					cancel(fmt.Errorf("writer %d, transaction %d: %w", w, i, err))
					return
				}
				if err := ws[w].Sync(wctx, time.Time{}, nil); err != nil {
					cancel(fmt.Errorf("writer %d, sync %d: %w", w, i, err))
					return
				}
				c.latency(time.Since(t0))
			}
		})
	}
	wg.Wait()
	c.end()
	if err := context.Cause(wctx); err != nil {
		return Result{}, err
	}
	stored := c.tally.accepted()
	if err := ws[0].CatchUp(ctx); err != nil {
		return Result{}, err
	}
	if err := check(ctx, ws[0].DB(), stored); err != nil {
		return Result{}, err
	}
	return c.result(stored), nil
}

// offline: one client makes Sizes.Offline commits while offline and another
// pushes Sizes.Online commits meanwhile (to another table); then the first
// pushes. The measured phase is that push; a commit's latency runs from
// its start to the push that settled the commit.
func (c *cell) offline(ctx context.Context) (Result, error) {
	s := c.rn.cfg.Sizes
	off, err := c.open(ctx, "offline")
	if err != nil {
		return Result{}, err
	}
	defer off.Close(context.Background())
	on, err := c.open(ctx, "online")
	if err != nil {
		return Result{}, err
	}
	defer on.Close(context.Background())
	for i := range s.Offline {
		if err := off.Exec(ctx, noteTx(i)); err != nil {
			return Result{}, fmt.Errorf("offline commit %d: %w", i, err)
		}
	}
	for i := range s.Online {
		if err := on.Exec(ctx, disjointTx(0, i)); err != nil {
			return Result{}, err
		}
		if err := on.Sync(ctx, time.Time{}, nil); err != nil {
			return Result{}, err
		}
	}
	settled := 0
	c.begin()
	start := time.Now()
	c.attempted.Store(int64(s.Offline))
	c.planned = int64(s.Offline)
	err = off.Sync(ctx, c.stop, func(n int) {
		d := time.Since(start)
		for range n {
			c.latency(d)
		}
		settled += n
	})
	c.end()
	if err != nil {
		return Result{}, fmt.Errorf("push the offline commits: %w", err)
	}
	if settled < s.Offline {
		c.limited.Store(true)
	}
	stored := c.tally.accepted()
	if err := on.CatchUp(ctx); err != nil {
		return Result{}, err
	}
	if err := expect(ctx, on.DB(), "SELECT count(*) FROM notes", stored); err != nil {
		return Result{}, err
	}
	return c.result(stored), nil
}

// catchUp: a reader at the seed's version pulls Sizes.Versions versions at
// once. The history is written once, by one replica pushing batches on a
// hybrid server, and each strategy's readers then catch up on it in turn:
// a replica pulls each changed page once (hybrid, strict-pages and
// replay-all share that protocol; their rows differ by noise only), the
// full-file client downloads the whole file at head. A reader's latency is
// its whole catch-up.
func (rn *runner) catchUp(ctx context.Context) (_ []Result, err error) {
	rn.logf("%s: starting (one history for every strategy)", CatchUp)
	c, err := rn.newCell(ctx, CatchUp, Hybrid)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CatchUp, err)
	}
	defer func() {
		if cerr := c.close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", CatchUp, cerr)
		}
	}()
	if err := c.seed(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", CatchUp, err)
	}
	s := rn.cfg.Sizes
	readerPath := func(strategy string, i int) string {
		return filepath.Join(c.dir, fmt.Sprintf("%s-r%d.db", strategy, i))
	}
	for _, st := range rn.cfg.Strategies {
		if st == FullFile {
			continue // it downloads the whole file whatever it had
		}
		for i := range s.Readers {
			r, err := openReplicaWriter(ctx, readerPath(st, i), c.volume, c.admin, c.tally)
			if err == nil {
				err = errors.Join(r.CatchUp(ctx), r.Close(ctx))
			}
			if err != nil {
				return nil, fmt.Errorf("%s: reader at the seed: %w", CatchUp, err)
			}
		}
	}
	rn.logf("%s: writing %d versions", CatchUp, s.Versions)
	w, err := openReplicaWriter(ctx, filepath.Join(c.dir, "writer.db"), c.volume, c.admin, c.tally)
	if err != nil {
		return nil, err
	}
	if err := w.CatchUp(ctx); err != nil {
		w.Close(ctx)
		return nil, err
	}
	const batch = 500
	for i := range s.Versions {
		if err = w.Exec(ctx, itemTx(i)); err == nil && ((i+1)%batch == 0 || i == s.Versions-1) {
			err = w.Sync(ctx, time.Time{}, nil)
		}
		if err != nil {
			w.Close(ctx)
			return nil, fmt.Errorf("%s: write version %d: %w", CatchUp, i, err)
		}
	}
	if err := w.Close(ctx); err != nil {
		return nil, err
	}

	var out []Result
	for _, st := range rn.cfg.Strategies {
		sub, cl, err := c.restartCold(ctx, st)
		if err != nil {
			return nil, err
		}
		for i := range s.Readers {
			var r writer
			if st == FullFile {
				r = &fileClient{path: readerPath(st, i), volume: c.volume, clientID: fmt.Sprintf("bench-reader-%d", i), pageSize: api.DefaultPageSize, c: cl, t: sub.tally}
			} else if r, err = openReplicaWriter(ctx, readerPath(st, i), c.volume, cl, sub.tally); err != nil {
				return nil, err
			}
			sub.begin()
			t0 := time.Now()
			err := r.CatchUp(ctx)
			sub.latency(time.Since(t0))
			sub.end()
			sub.attempted.Add(1)
			if err == nil {
				err = expect(ctx, r.DB(), "SELECT count(*) FROM items", int64(s.Versions))
			}
			if err = errors.Join(err, r.Close(ctx)); err != nil {
				return nil, fmt.Errorf("%s × %s: reader %d: %w", CatchUp, st, i, err)
			}
		}
		res := sub.result(int64(s.Versions) * int64(s.Readers))
		res.Rounds, res.PerSecondMin, res.PerSecondMax = 1, res.PerSecond, res.PerSecond
		if st == StrictPages || st == ReplayAll {
			res.Note = "a replica's pull, the same protocol as hybrid's"
		}
		rn.logf("%s × %s: %s", CatchUp, st, summary(&res))
		out = append(out, res)
	}
	return out, nil
}
