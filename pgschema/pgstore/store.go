// Package pgstore is the PostgreSQL implementation of pgschema.Metastore, the
// production backend: volumes, the commit log and the page index live in
// tables that several cambiumd processes share, serialized per volume by the
// volume row's lock.
//
// It owns the PostgreSQL schema (the embedded migrations/*.sql, applied at
// Open) and the SQL that reads and writes it. It stores no page bytes: a page
// index row names a segment that a pages.Store holds.
//
// Schema in brief: volumes (head and page count move with each commit);
// segments (a bigint id per object key, so the page index is narrow and
// garbage collection can count references); commits (one row per version,
// unique on the idempotency key); page_index (primary key (volume, page,
// version), read backwards for "latest version of page p at or before v",
// and an index on (volume, version) for "pages changed in (from, to]");
// tokens.
package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/cambiumdb/cambium/pgschema"
)

// DefaultMaxConns is the connection pool size when Options.MaxConns is 0.
const DefaultMaxConns = 16

// Options tune a Store. The zero value is usable: every field has a default.
type Options struct {
	// MaxConns bounds the connection pool; DefaultMaxConns if 0. Each
	// running Update holds one connection until it ends.
	MaxConns int32

	// Logger receives migration progress; a no-op logger if nil.
	Logger *zap.Logger
}

// Store is a pgschema.Metastore over a PostgreSQL database. It is safe for
// concurrent use, and several processes may share one database: migrations
// run under an advisory lock, and appends to a volume serialize on its row.
type Store struct {
	pool *pgxpool.Pool
	log  *zap.Logger
}

var _ pgschema.Metastore = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or key=value DSN),
// applies the pending migrations, and returns the Store. A database migrated
// by a newer Cambium is a *pgschema.SchemaTooNewError.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	// The hot statements are point lookups and inserts whose best plan does
	// not depend on their arguments, yet with array arguments PostgreSQL
	// keeps planning them afresh (~0.2 ms each). Plan once per connection;
	// changedPages opts out, since its best plan depends on the range.
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := &Store{pool: pool, log: opts.Logger}
	all, err := migrations()
	if err == nil {
		err = migrate(ctx, pool, all, s.log)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool, waiting for connections in use to be
// returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// querier is what reads need: a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const volumeColumns = `id, name, page_size, head, page_count, policy, allow_ddl, created_at`

func scanVolume(row pgx.Row) (pgschema.Volume, error) {
	var v pgschema.Volume
	var pageCount int64
	err := row.Scan(&v.ID, &v.Name, &v.PageSize, &v.Head, &pageCount, &v.Policy, &v.AllowDDL, &v.CreatedAt)
	v.PageCount = uint32(pageCount)
	return v, err
}

// CreateVolume implements pgschema.Metastore.
func (s *Store) CreateVolume(ctx context.Context, name string, pageSize int) (pgschema.Volume, error) {
	if err := pgschema.ValidateVolumeName(name); err != nil {
		return pgschema.Volume{}, err
	}
	if err := pgschema.ValidatePageSize(pageSize); err != nil {
		return pgschema.Volume{}, err
	}
	v, err := scanVolume(s.pool.QueryRow(ctx,
		`INSERT INTO volumes (name, page_size, policy) VALUES ($1, $2, $3) RETURNING `+volumeColumns,
		name, pageSize, pgschema.DefaultPolicy))
	if isUniqueViolation(err, "volumes_name_key") {
		return pgschema.Volume{}, fmt.Errorf("create volume %q: %w", name, pgschema.ErrVolumeExists)
	}
	if err != nil {
		return pgschema.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	return v, nil
}

// Volume implements pgschema.Metastore.
func (s *Store) Volume(ctx context.Context, name string) (pgschema.Volume, error) {
	v, err := scanVolume(s.pool.QueryRow(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("volume %q: %w", name, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("volume %q: %w", name, err)
	}
	return v, nil
}

// VolumeByID implements pgschema.Metastore.
func (s *Store) VolumeByID(ctx context.Context, id int64) (pgschema.Volume, error) {
	v, err := scanVolume(s.pool.QueryRow(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("volume %d: %w", id, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("volume %d: %w", id, err)
	}
	return v, nil
}

// Volumes implements pgschema.Metastore. Names sort by byte value (COLLATE
// "C"), whatever the database's collation.
func (s *Store) Volumes(ctx context.Context) ([]pgschema.Volume, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+volumeColumns+` FROM volumes ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	vols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Volume, error) { return scanVolume(r) })
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return vols, nil
}

const commitColumns = `volume_id, version, base, client_id, client_seq, decision, reason,
	page_count, pages_count, record, checksum, received_at, created_at`

func scanCommit(row pgx.Row) (pgschema.Commit, error) {
	var c pgschema.Commit
	var pageCount int64
	err := row.Scan(&c.Volume, &c.Version, &c.Base, &c.ClientID, &c.ClientSeq, &c.Decision, &c.Reason,
		&pageCount, &c.PagesCount, &c.Record, &c.Checksum, &c.ReceivedAt, &c.CreatedAt)
	c.PageCount = uint32(pageCount)
	return c, err
}

// Commit implements pgschema.Metastore.
func (s *Store) Commit(ctx context.Context, volume, version int64) (pgschema.Commit, error) {
	c, err := scanCommit(s.pool.QueryRow(ctx,
		`SELECT `+commitColumns+` FROM commits WHERE volume_id = $1 AND version = $2`, volume, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("commit %d of volume %d: %w", version, volume, pgschema.ErrCommitNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("commit %d of volume %d: %w", version, volume, err)
	}
	return c, nil
}

// Commits implements pgschema.Metastore.
func (s *Store) Commits(ctx context.Context, volume, from, to int64) ([]pgschema.Commit, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+commitColumns+` FROM commits WHERE volume_id = $1 AND version > $2 AND version <= $3 ORDER BY version`,
		volume, from, to)
	if err != nil {
		return nil, fmt.Errorf("commits (%d, %d] of volume %d: %w", from, to, volume, err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Commit, error) { return scanCommit(r) })
	if err != nil {
		return nil, fmt.Errorf("commits (%d, %d] of volume %d: %w", from, to, volume, err)
	}
	return cs, nil
}

// The page count of snapshot ($1, $2): NULL, so no page qualifies, when the
// version has no commit (version 0 or beyond head).
const pageCountAt = `(SELECT c.page_count FROM commits c WHERE c.volume_id = $1 AND c.version = $2)`

// pageAtSQL reads the primary key backwards from (volume, page, version).
const pageAtSQL = `
SELECT p.page_no, p.version, s.key, p.frame_offset, p.frame_length, p.page_offset, p.hash
FROM page_index p JOIN segments s ON s.id = p.segment_id
WHERE p.volume_id = $1 AND p.page_no = $3 AND p.version <= $2 AND $3 <= ` + pageCountAt + `
ORDER BY p.version DESC
LIMIT 1`

// pagesAtSQL is pageAtSQL for each distinct requested page, in one query.
const pagesAtSQL = `
SELECT p.page_no, p.version, s.key, p.frame_offset, p.frame_length, p.page_offset, p.hash
FROM (SELECT DISTINCT n FROM unnest($3::bigint[]) AS n WHERE n >= 1 AND n <= ` + pageCountAt + `) q
CROSS JOIN LATERAL (
	SELECT * FROM page_index p
	WHERE p.volume_id = $1 AND p.page_no = q.n AND p.version <= $2
	ORDER BY p.version DESC
	LIMIT 1
) p
JOIN segments s ON s.id = p.segment_id
ORDER BY p.page_no`

// changedPagesSQL keeps each page's newest row in (from, to], in one pass
// over the range's rows. Ordering by page_no DESC, version DESC lets the
// planner choose a backward scan of the primary key (long ranges) as well as
// the version index plus a sort (short ones). The segment key is a scalar
// subquery so that it is one primary-key probe per result row: a join lets
// the planner hash the whole segments table, which grows with every volume's
// history.
//
// It serves every range, however long: it reads page_index once, so no plan
// of it reads a row twice. The long-range query it replaced found each
// page's newest version from an index alone and joined back for those rows,
// visiting fewer heap rows, but the planner may run any such join as a
// nested loop that scans the volume's version index once per changed page
// (BENCHMARKS.md, finding 3): statistics taken before the volume grew (the
// server never runs ANALYZE; autovacuum waits for a tenth of the table to
// change) estimate one row for it, and fresh ones still take a probe into
// an import's version, which wrote every page, for a probe of a few rows.
// After other volumes filled the table, a pull of 10,000 versions of 216
// pages took 1 s that way and 15 ms here, the first pull of a 2,000-page
// import 0.3 s and 8 ms (of a 20,000-page one, 40 s and 40 ms); where the
// join got a good plan, it took 14 ms to this query's 26. See
// BenchmarkChangedPagesPlan.
const changedPagesSQL = `
SELECT p.page_no, p.version, (SELECT s.key FROM segments s WHERE s.id = p.segment_id),
	p.frame_offset, p.frame_length, p.page_offset, p.hash
FROM (
	SELECT DISTINCT ON (page_no) page_no, version, segment_id, frame_offset, frame_length, page_offset, hash
	FROM page_index
	WHERE volume_id = $1 AND version > $3 AND version <= $2 AND page_no <= ` + pageCountAt + `
	ORDER BY page_no DESC, version DESC
) p
ORDER BY p.page_no`

func scanPageRef(row pgx.Row) (pgschema.PageRef, error) {
	var r pgschema.PageRef
	var pageNo, hash int64
	err := row.Scan(&pageNo, &r.Version, &r.Segment, &r.FrameOffset, &r.FrameLength, &r.PageOffset, &hash)
	r.PageNo, r.Hash = uint32(pageNo), uint64(hash)
	return r, err
}

func collectPageRefs(rows pgx.Rows) ([]pgschema.PageRef, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.PageRef, error) { return scanPageRef(r) })
}

// PageAt implements pgschema.Metastore.
func (s *Store) PageAt(ctx context.Context, volume int64, pageNo uint32, version int64) (pgschema.PageRef, error) {
	r, err := scanPageRef(s.pool.QueryRow(ctx, pageAtSQL, volume, version, int64(pageNo)))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("page %d of volume %d at version %d: %w", pageNo, volume, version, pgschema.ErrPageNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("page %d of volume %d at version %d: %w", pageNo, volume, version, err)
	}
	return r, nil
}

// PagesAt implements pgschema.Metastore.
func (s *Store) PagesAt(ctx context.Context, volume, version int64, pageNos []uint32) ([]pgschema.PageRef, error) {
	if len(pageNos) == 0 {
		return nil, nil
	}
	nos := make([]int64, len(pageNos))
	for i, p := range pageNos {
		nos[i] = int64(p)
	}
	rows, err := s.pool.Query(ctx, pagesAtSQL, volume, version, nos)
	if err != nil {
		return nil, fmt.Errorf("pages of volume %d at version %d: %w", volume, version, err)
	}
	refs, err := collectPageRefs(rows)
	if err != nil {
		return nil, fmt.Errorf("pages of volume %d at version %d: %w", volume, version, err)
	}
	return refs, nil
}

// ChangedPages implements pgschema.Metastore.
func (s *Store) ChangedPages(ctx context.Context, volume, from, to int64) ([]pgschema.PageRef, error) {
	return changedPages(ctx, s.pool, volume, from, to)
}

func changedPages(ctx context.Context, q querier, volume, from, to int64) ([]pgschema.PageRef, error) {
	if from >= to {
		return nil, nil
	}
	// The simple protocol sends the range inline, so the planner sees it
	// and picks the index that suits its width (see changedPagesSQL).
	rows, err := q.Query(ctx, changedPagesSQL, pgx.QueryExecModeSimpleProtocol, volume, to, from)
	if err != nil {
		return nil, fmt.Errorf("pages changed in (%d, %d] of volume %d: %w", from, to, volume, err)
	}
	refs, err := collectPageRefs(rows)
	if err != nil {
		return nil, fmt.Errorf("pages changed in (%d, %d] of volume %d: %w", from, to, volume, err)
	}
	return refs, nil
}

// isUniqueViolation reports whether err is a unique violation (SQLSTATE
// 23505) of the named constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
