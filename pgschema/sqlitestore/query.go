package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/cambiumdb/cambium/pgschema"
)

// querier is what the read pool and a write transaction have in common, so
// a query serves both Store and tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const selectCommit = `SELECT volume_id, version, base, client_id, client_seq, decision, reason,
	page_count, pages_count, record, checksum, received_at, created_at FROM commits`

func scanCommit(row rowScanner) (pgschema.Commit, error) {
	var (
		c                pgschema.Commit
		decision         string
		received         sql.NullInt64
		created          int64
		record, checksum []byte
	)
	if err := row.Scan(&c.Volume, &c.Version, &c.Base, &c.ClientID, &c.ClientSeq, &decision, &c.Reason,
		&c.PageCount, &c.PagesCount, &record, &checksum, &received, &created); err != nil {
		return pgschema.Commit{}, err
	}
	c.Decision = pgschema.Decision(decision)
	c.Record, c.Checksum = nilIfEmpty(record), nilIfEmpty(checksum)
	c.ReceivedAt, c.CreatedAt = fromNullMicros(received), fromMicros(created)
	return c, nil
}

// nilIfEmpty returns an empty stored blob as nil, however it was given.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Commit returns the stored commit at version of volume, or
// pgschema.ErrCommitNotFound.
func (s *Store) Commit(ctx context.Context, volume, version int64) (pgschema.Commit, error) {
	c, err := scanCommit(s.r.QueryRowContext(ctx, selectCommit+` WHERE volume_id = ? AND version = ?`, volume, version))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Commit{}, fmt.Errorf("commit %d/%d: %w", volume, version, pgschema.ErrCommitNotFound)
	}
	if err != nil {
		return pgschema.Commit{}, fmt.Errorf("commit %d/%d: %w", volume, version, err)
	}
	return c, nil
}

// Commits returns the stored commits of volume with from < version <= to, in
// version order.
func (s *Store) Commits(ctx context.Context, volume, from, to int64) ([]pgschema.Commit, error) {
	rows, err := s.r.QueryContext(ctx, selectCommit+` WHERE volume_id = ? AND version > ? AND version <= ? ORDER BY version`,
		volume, from, to)
	if err != nil {
		return nil, fmt.Errorf("commits %d/(%d,%d]: %w", volume, from, to, err)
	}
	defer rows.Close()
	var cs []pgschema.Commit
	for rows.Next() {
		c, err := scanCommit(rows)
		if err != nil {
			return nil, fmt.Errorf("commits %d/(%d,%d]: %w", volume, from, to, err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("commits %d/(%d,%d]: %w", volume, from, to, err)
	}
	return cs, nil
}

// pageCountAt is a scalar subquery for the page count of snapshot (?1, ?2):
// that of the latest commit at or before ?2, or 0 before the first. A
// version past the head has the head's page count.
const pageCountAt = `coalesce((SELECT page_count FROM commits
	WHERE volume_id = ?1 AND version <= ?2 ORDER BY version DESC LIMIT 1), 0)`

// Hot queries. Each is one statement, so it reads one snapshot even on the
// read pool, outside any transaction; their plans are checked by
// TestStore_QueryPlans.
const (
	// queryPageAt seeks the primary key (volume_id, page_no, version)
	// backwards from (?1, ?3, ?2). Parameters: volume, version, page.
	queryPageAt = `SELECT p.page_no, p.version, s.key, p.frame_offset, p.frame_length, p.page_offset, p.hash
	FROM page_index AS p JOIN segments AS s ON s.id = p.segment_id
	WHERE p.volume_id = ?1 AND p.page_no = ?3 AND p.version <= ?2 AND ?3 <= ` + pageCountAt + `
	ORDER BY p.version DESC LIMIT 1`

	// queryPagesAt is queryPageAt for each page of a JSON array of page
	// numbers. CROSS JOIN keeps the array the outer loop: without
	// statistics the planner would rather scan the volume's whole index.
	// Parameters: volume, version, JSON array.
	queryPagesAt = `SELECT p.page_no, p.version, s.key, p.frame_offset, p.frame_length, p.page_offset, p.hash
	FROM json_each(?3) AS r
	CROSS JOIN page_index AS p ON p.volume_id = ?1 AND p.page_no = r.value AND p.version = (
		SELECT q.version FROM page_index AS q
		WHERE q.volume_id = ?1 AND q.page_no = r.value AND q.version <= ?2
		ORDER BY q.version DESC LIMIT 1)
	JOIN segments AS s ON s.id = p.segment_id
	WHERE r.value <= ` + pageCountAt + `
	ORDER BY p.page_no`

	// queryChangedPages finds each page's newest version in (from, to] from
	// the covering index page_index_version alone (it holds page_no as the
	// primary key's suffix), then reads only those rows. INDEXED BY and
	// CROSS JOIN pin that plan: without statistics the planner prefers a
	// primary-key range on page_no, which reads the volume's whole history.
	// Parameters: volume, to, from.
	queryChangedPages = `WITH latest (page_no, version) AS (
		SELECT page_no, max(version) FROM page_index INDEXED BY page_index_version
		WHERE volume_id = ?1 AND version > ?3 AND version <= ?2 AND page_no <= ` + pageCountAt + `
		GROUP BY page_no)
	SELECT l.page_no, l.version, s.key, p.frame_offset, p.frame_length, p.page_offset, p.hash
	FROM latest AS l
	CROSS JOIN page_index AS p ON p.volume_id = ?1 AND p.page_no = l.page_no AND p.version = l.version
	JOIN segments AS s ON s.id = p.segment_id
	ORDER BY l.page_no`
)

func scanPageRef(row rowScanner) (pgschema.PageRef, error) {
	var (
		r    pgschema.PageRef
		hash int64
	)
	if err := row.Scan(&r.PageNo, &r.Version, &r.Segment, &r.FrameOffset, &r.FrameLength, &r.PageOffset, &hash); err != nil {
		return pgschema.PageRef{}, err
	}
	r.Hash = uint64(hash)
	return r, nil
}

func scanPageRefs(rows *sql.Rows) ([]pgschema.PageRef, error) {
	defer rows.Close()
	var refs []pgschema.PageRef
	for rows.Next() {
		r, err := scanPageRef(rows)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, rows.Err()
}

// PageAt returns where page pageNo of snapshot (volume, version) lives, or
// pgschema.ErrPageNotFound.
func (s *Store) PageAt(ctx context.Context, volume int64, pageNo uint32, version int64) (pgschema.PageRef, error) {
	r, err := scanPageRef(s.r.QueryRowContext(ctx, queryPageAt, volume, version, pageNo))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.PageRef{}, fmt.Errorf("page %d of %d@%d: %w", pageNo, volume, version, pgschema.ErrPageNotFound)
	}
	if err != nil {
		return pgschema.PageRef{}, fmt.Errorf("page %d of %d@%d: %w", pageNo, volume, version, err)
	}
	return r, nil
}

// PagesAt returns PageAt's answer for each of pageNos that has one, in
// ascending page order, once per page number however often it is asked for.
// One statement reads them all, from one snapshot.
func (s *Store) PagesAt(ctx context.Context, volume, version int64, pageNos []uint32) ([]pgschema.PageRef, error) {
	if len(pageNos) == 0 {
		return nil, nil
	}
	sorted := slices.Clone(pageNos)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	arr := make([]byte, 0, 1+len(sorted)*8)
	arr = append(arr, '[')
	for i, p := range sorted {
		if i > 0 {
			arr = append(arr, ',')
		}
		arr = strconv.AppendUint(arr, uint64(p), 10)
	}
	arr = append(arr, ']')
	rows, err := s.r.QueryContext(ctx, queryPagesAt, volume, version, string(arr))
	if err != nil {
		return nil, fmt.Errorf("pages of %d@%d: %w", volume, version, err)
	}
	refs, err := scanPageRefs(rows)
	if err != nil {
		return nil, fmt.Errorf("pages of %d@%d: %w", volume, version, err)
	}
	return refs, nil
}

// ChangedPages returns each page written by versions from < v <= to once, at
// its newest version in that range, in ascending page order, leaving out
// pages beyond the page count at to.
func (s *Store) ChangedPages(ctx context.Context, volume, from, to int64) ([]pgschema.PageRef, error) {
	return changedPages(ctx, s.r, volume, from, to)
}

func changedPages(ctx context.Context, q querier, volume, from, to int64) ([]pgschema.PageRef, error) {
	if from >= to {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, queryChangedPages, volume, to, from)
	if err != nil {
		return nil, fmt.Errorf("changed pages %d/(%d,%d]: %w", volume, from, to, err)
	}
	refs, err := scanPageRefs(rows)
	if err != nil {
		return nil, fmt.Errorf("changed pages %d/(%d,%d]: %w", volume, from, to, err)
	}
	return refs, nil
}
