package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/pages/s3store"
	"github.com/cambiumdb/cambium/pages/segment"
	"github.com/cambiumdb/cambium/replica"
)

// Floor is the least one commit can cost on the run's backends, measured
// in the same run: a bare metadata transaction of a commit's shape (lock
// the head, insert the commit row and one page-index row per page, advance
// the head) and a bare write of its segment's bytes, with none of
// Cambium's code in between. The shape is the single writer's commit.
type Floor struct {
	Pages        int    `json:"pages"`         // pages per commit
	RecordBytes  int    `json:"record_bytes"`  // its logical record
	SegmentBytes int    `json:"segment_bytes"` // its pages as one compressed segment
	Meta         string `json:"meta"`          // what the metadata transaction ran on
	MetaAbout    string `json:"meta_about"`    // its settings
	Store        string `json:"store"`         // what the write went to
	Samples      int    `json:"samples"`

	MetaP50  time.Duration `json:"meta_p50_ns"`
	MetaP99  time.Duration `json:"meta_p99_ns"`
	StoreP50 time.Duration `json:"store_p50_ns"`
	StoreP99 time.Duration `json:"store_p99_ns"`
}

// PerCommit is the floor of one unbatched commit: the two medians in turn.
func (f Floor) PerCommit() time.Duration { return f.MetaP50 + f.StoreP50 }

func (rn *runner) floor(ctx context.Context) (Floor, error) {
	f := Floor{Samples: rn.cfg.FloorIterations}
	dir := filepath.Join(rn.cfg.WorkDir, "floor")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	pages, record, err := probeCommit(ctx, dir, rn.cfg.Sizes)
	if err != nil {
		return f, fmt.Errorf("probe a commit's shape: %w", err)
	}
	f.Pages, f.RecordBytes = len(pages), len(record)
	enc := segment.NewEncoder(api.DefaultPageSize)
	for i, p := range pages {
		if err := enc.Add(1, 1, uint32(i+1), p); err != nil {
			return f, err
		}
	}
	seg, _, err := enc.Finish()
	if err != nil {
		return f, err
	}
	f.SegmentBytes = len(seg)

	var meta, store []time.Duration
	if rn.pgURL != "" {
		f.Meta = "PostgreSQL transaction"
		meta, f.MetaAbout, err = floorPostgres(ctx, rn.pgURL, f.Pages, record, f.Samples)
	} else {
		f.Meta, f.MetaAbout = "SQLite transaction", "WAL, synchronous=FULL, as the embedded metastore"
		meta, err = floorSQLite(ctx, filepath.Join(dir, "meta.db"), f.Pages, record, f.Samples)
	}
	if err != nil {
		return f, err
	}
	if rn.s3 != nil {
		f.Store = "S3 PUT"
		store, err = floorS3(ctx, rn.s3, seg, f.Samples)
	} else {
		f.Store = "file write + fsync"
		store, err = floorFile(dir, seg, f.Samples)
	}
	if err != nil {
		return f, err
	}
	f.MetaP50, f.MetaP99 = quantile(meta, 0.5), quantile(meta, 0.99)
	f.StoreP50, f.StoreP99 = quantile(store, 0.5), quantile(store, 0.99)
	return f, nil
}

// probeCommit makes the single writer's transaction on a local replica of
// a database like the workloads' (no server needed: the commit stays
// pending) and returns the pages it wrote and its encoded record.
func probeCommit(ctx context.Context, dir string, s Sizes) ([][]byte, []byte, error) {
	r, err := replica.Open(ctx, filepath.Join(dir, "probe.db"), replica.Options{Volume: "probe"})
	if err != nil {
		return nil, nil, err
	}
	defer r.Close(ctx)
	db, err := sql.Open("cambium", r.Path())
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	if err := txOf(schema(1)...)(ctx, db); err != nil {
		return nil, nil, err
	}
	if rows := s.DBBytes / preloadRowBytes; rows > 0 {
		q := fmt.Sprintf("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < %d) "+
			"INSERT INTO preload(body) SELECT printf('preloaded row %%d %%s', i, hex(randomblob(32))) FROM s", rows)
		if err := stmt(q)(ctx, db); err != nil {
			return nil, nil, err
		}
	}
	// A few transactions first, so the probe's is not the table's first.
	for i := range 10 {
		if err := itemTx(i)(ctx, db); err != nil {
			return nil, nil, err
		}
	}
	pending, err := r.Pending(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(pending) == 0 {
		return nil, nil, errors.New("no pending commit")
	}
	last := pending[len(pending)-1]
	var pages [][]byte
	for no, p := range last.Pages {
		if no <= last.PageCount {
			pages = append(pages, p)
		}
	}
	var rec []byte
	if last.Record != nil {
		rec = last.Record.Encode()
	}
	return pages, rec, nil
}

// floorPostgres times n bare transactions of a commit's shape.
func floorPostgres(ctx context.Context, pgURL string, pages int, record []byte, n int) ([]time.Duration, string, error) {
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close(context.Background())
	var version, fsync, syncCommit string
	for q, dst := range map[string]*string{"SHOW server_version": &version, "SHOW fsync": &fsync, "SHOW synchronous_commit": &syncCommit} {
		if err := conn.QueryRow(ctx, q).Scan(dst); err != nil {
			return nil, "", err
		}
	}
	about := fmt.Sprintf("PostgreSQL %s, fsync=%s, synchronous_commit=%s", version, fsync, syncCommit)
	for _, q := range []string{
		`CREATE TABLE floor_head(id int PRIMARY KEY, head bigint NOT NULL)`,
		`CREATE TABLE floor_commit(v bigint PRIMARY KEY, client text NOT NULL, seq bigint NOT NULL, record bytea)`,
		`CREATE TABLE floor_page(page int, v bigint, segment text NOT NULL, off bigint NOT NULL, len int NOT NULL, hash bigint NOT NULL, PRIMARY KEY (page, v))`,
		`INSERT INTO floor_head VALUES (1, 0)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return nil, "", err
		}
	}
	out := make([]time.Duration, 0, n)
	for v := int64(1); v <= int64(n); v++ {
		t0 := time.Now()
		b := &pgx.Batch{}
		b.Queue(`SELECT head FROM floor_head WHERE id = 1 FOR UPDATE`)
		b.Queue(`INSERT INTO floor_commit VALUES ($1, 'bench', $1, $2)`, v, record)
		for p := range pages {
			b.Queue(`INSERT INTO floor_page VALUES ($1, $2, 'segments/floor', $3, 4096, 0)`, p+1, v, p*4096)
		}
		b.Queue(`UPDATE floor_head SET head = $1 WHERE id = 1`, v)
		tx, err := conn.Begin(ctx)
		if err != nil {
			return nil, "", err
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			tx.Rollback(ctx)
			return nil, "", err
		}
		if err := tx.Commit(ctx); err != nil {
			return nil, "", err
		}
		out = append(out, time.Since(t0))
	}
	return out, about, nil
}

// floorSQLite times n bare transactions of a commit's shape on an SQLite
// file set up as the embedded metastore sets up its own.
func floorSQLite(ctx context.Context, path string, pages int, record []byte, n int) ([]time.Duration, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE floor_head(id INTEGER PRIMARY KEY, head INTEGER NOT NULL)`,
		`CREATE TABLE floor_commit(v INTEGER PRIMARY KEY, client TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB)`,
		`CREATE TABLE floor_page(page INTEGER, v INTEGER, segment TEXT NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, hash INTEGER NOT NULL, PRIMARY KEY (page, v))`,
		`INSERT INTO floor_head VALUES (1, 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, err
		}
	}
	out := make([]time.Duration, 0, n)
	for v := int64(1); v <= int64(n); v++ {
		t0 := time.Now()
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			var head int64
			if err := tx.QueryRowContext(ctx, `SELECT head FROM floor_head WHERE id = 1`).Scan(&head); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO floor_commit VALUES (?, 'bench', ?, ?)`, v, v, record); err != nil {
				return err
			}
			for p := range pages {
				if _, err := tx.ExecContext(ctx, `INSERT INTO floor_page VALUES (?, ?, 'segments/floor', ?, 4096, 0)`, p+1, v, p*4096); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE floor_head SET head = ? WHERE id = 1`, v); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// floorS3 times n bare PUTs of the segment.
func floorS3(ctx context.Context, c *s3Config, seg []byte, n int) ([]time.Duration, error) {
	store, err := s3store.Open(ctx, *c.store())
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := store.Put(ctx, fmt.Sprintf("floor/%06d", i), seg); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// floorFile times n bare writes of the segment to a new file, each
// fsynced.
func floorFile(dir string, seg []byte, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("seg-%06d", i)))
		if err != nil {
			return nil, err
		}
		_, err = f.Write(seg)
		if err == nil {
			err = f.Sync()
		}
		if err = errors.Join(err, f.Close()); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}
