package pgstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/pgschema"
)

// copyThresholdAll is the number of page-index rows above which AppendAll
// sends them by COPY: the rows of a whole group ride in the statement that
// stores its commits, so COPY's extra round trip only pays off for bulk
// commits. A variable so tests can run both paths.
var copyThresholdAll = 4096

// appendAllCommitsSQL stores a slice of commits from arrays, all or none,
// in one statement:
//   - k: the commits, numbered from 1 in slice order;
//   - dup: the first commit whose idempotency key is stored already. When
//     there is one, no statement below writes anything, so a duplicate
//     leaves the transaction usable, as it does for Append. (Keys repeated
//     within the slice were refused before sending.) The scalar subquery is
//     one index probe per commit: a join might be planned as a scan of the
//     whole commit log.
//   - c: the commit rows. ON CONFLICT only matters if a key appeared since
//     dup's snapshot, which the volume locks rule out; the caller then sees
//     fewer rows than commits and refuses to commit the transaction.
//   - v: each volume's new head and page count, those of its last commit.
//
// It returns dup's ordinal (NULL if none) and the number of commit rows
// inserted. appendAllSQL adds the page-index rows.
const appendAllCommitsCTEs = `
WITH k AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
		$7::text[], $8::bigint[], $9::bigint[], $10::bytea[], $11::bytea[], $12::timestamptz[])
		WITH ORDINALITY AS k (volume_id, version, base, client_id, client_seq, decision,
			reason, page_count, pages_count, record, checksum, received_at, ord)
), dup AS (
	SELECT min(ord) AS ord FROM k
	WHERE (SELECT true FROM commits c
		WHERE c.volume_id = k.volume_id AND c.client_id = k.client_id AND c.client_seq = k.client_seq
		LIMIT 1)
), c AS (
	INSERT INTO commits (volume_id, version, base, client_id, client_seq, decision, reason,
		page_count, pages_count, record, checksum, received_at)
	SELECT volume_id, version, base, client_id, client_seq, decision, reason,
		page_count, pages_count, record, checksum, received_at
	FROM k WHERE (SELECT ord FROM dup) IS NULL
	ON CONFLICT (volume_id, client_id, client_seq) DO NOTHING
	RETURNING 1
), v AS (
	UPDATE volumes SET head = h.head, page_count = h.page_count
	FROM unnest($13::bigint[], $14::bigint[], $15::bigint[]) AS h (id, head, page_count)
	WHERE volumes.id = h.id AND (SELECT count(*) FROM c) = cardinality($1::bigint[])
)`

// appendAllCommitsSQL stores the commits only, for slices whose page-index
// rows go in by COPY.
const appendAllCommitsSQL = appendAllCommitsCTEs + `
SELECT (SELECT ord FROM dup), (SELECT count(*) FROM c), 0::bigint`

// appendAllSQL stores the commits and, only if all of them went in, their
// page-index rows.
const appendAllSQL = appendAllCommitsCTEs + `, p AS (
	INSERT INTO page_index (volume_id, page_no, version, segment_id, frame_offset, frame_length, page_offset, hash)
	SELECT w.volume_id, w.page_no, w.version, (SELECT s.id FROM segments s WHERE s.key = w.seg),
		w.frame_offset, w.frame_length, w.page_offset, w.hash
	FROM unnest($16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[], $21::bigint[],
		$22::bigint[], $23::bigint[])
		AS w (volume_id, version, page_no, seg, frame_offset, frame_length, page_offset, hash)
	WHERE (SELECT count(*) FROM c) = cardinality($1::bigint[])
	RETURNING 1
)
SELECT (SELECT ord FROM dup), (SELECT count(*) FROM c), (SELECT count(*) FROM p)`

// AppendAll implements pgschema.Tx. Everything that needs no database is
// checked first, in slice order, exactly as Append checks each commit; then
// the segment keys, commit rows, page-index rows and heads go in one
// pipelined batch, one round trip (plus a COPY for more than
// copyThresholdAll page rows).
//
// It keeps a failure all-or-nothing without a savepoint, by the guard Append
// uses: a stored key makes the statement write no commit, page or head, so
// the transaction stays usable; any other failure after sending marks the
// transaction broken, and Update then rolls it back instead of committing.
func (t *tx) AppendAll(ctx context.Context, cs []pgschema.NewCommit) error {
	if t.done {
		return fmt.Errorf("append all: %w", errTxDone)
	}
	if len(cs) == 0 {
		return nil
	}
	heads, failed, err := t.checkAll(cs)
	if err != nil {
		// Append in turn would have stored cs[:failed] first, and failed
		// earlier on a key stored already.
		return t.firstStored(ctx, cs[:failed], err)
	}
	dup, err := t.appendAll(ctx, cs)
	if err != nil {
		t.broken = err
		return err
	}
	if dup >= 0 {
		c := &cs[dup]
		return fmt.Errorf("append version %d of volume %d: key %s/%d: %w", c.Version, c.Volume, c.ClientID, c.ClientSeq, pgschema.ErrDuplicateCommit)
	}
	for vol, h := range heads {
		*t.locked[vol] = h
	}
	return nil
}

// checkAll checks cs as Append checks each commit, counting the commits
// before it in cs, plus the idempotency keys that cs repeats. It returns
// each volume's head after cs, or the index of the first commit that fails
// and its error.
func (t *tx) checkAll(cs []pgschema.NewCommit) (map[int64]lockedVolume, int, error) {
	heads := make(map[int64]lockedVolume, 1)
	keys := make(map[pgschema.CommitKey]struct{}, len(cs))
	for i := range cs {
		c := &cs[i]
		if err := pgschema.ValidateNewCommit(c); err != nil {
			return nil, i, err
		}
		h, ok := heads[c.Volume]
		if !ok {
			l, locked := t.locked[c.Volume]
			if !locked {
				return nil, i, fmt.Errorf("append to volume %d: %w", c.Volume, pgschema.ErrVolumeNotLocked)
			}
			h = *l
		}
		if c.Version != h.head+1 {
			return nil, i, &pgschema.StaleHeadError{Volume: c.Volume, Head: h.head, Version: c.Version}
		}
		k := pgschema.CommitKey{Volume: c.Volume, ClientID: c.ClientID, Seq: c.ClientSeq}
		if _, dup := keys[k]; dup {
			return nil, i, fmt.Errorf("append version %d of volume %d: key %s/%d: %w", c.Version, c.Volume, c.ClientID, c.ClientSeq, pgschema.ErrDuplicateCommit)
		}
		keys[k] = struct{}{}
		heads[c.Volume] = lockedVolume{head: c.Version, pageCount: c.PageCount}
	}
	return heads, len(cs), nil
}

// firstStored returns ErrDuplicateCommit for the first of cs whose key is
// stored already, else err: the error Append in turn would have met first.
func (t *tx) firstStored(ctx context.Context, cs []pgschema.NewCommit, err error) error {
	if len(cs) == 0 {
		return err
	}
	keys := make([]pgschema.CommitKey, len(cs))
	for i, c := range cs {
		keys[i] = pgschema.CommitKey{Volume: c.Volume, ClientID: c.ClientID, Seq: c.ClientSeq}
	}
	stored, lerr := t.LookupCommits(ctx, keys)
	if lerr != nil {
		return fmt.Errorf("append all: %w (and checking earlier commits: %w)", err, lerr)
	}
	if len(stored) == 0 {
		return err
	}
	found := make(map[pgschema.CommitKey]bool, len(stored))
	for _, s := range stored {
		found[pgschema.CommitKey{Volume: s.Volume, ClientID: s.ClientID, Seq: s.ClientSeq}] = true
	}
	for i, k := range keys {
		if found[k] {
			c := &cs[i]
			return fmt.Errorf("append version %d of volume %d: key %s/%d: %w", c.Version, c.Volume, c.ClientID, c.ClientSeq, pgschema.ErrDuplicateCommit)
		}
	}
	return err
}

// appendAll sends checked commits. It returns the index of the first commit
// whose key is stored already, in which case nothing was written but
// segment names, or -1 when all were stored; an error means the
// transaction may hold part of cs.
func (t *tx) appendAll(ctx context.Context, cs []pgschema.NewCommit) (dup int, err error) {
	n, nPages := len(cs), 0
	var keys []string
	for i := range cs {
		nPages += len(cs[i].Pages)
		for _, p := range cs[i].Pages {
			keys = append(keys, p.Segment)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	vols, versions, bases := make([]int64, n), make([]int64, n), make([]int64, n)
	clients, seqs, decisions, reasons := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
	pageCounts, pagesCounts := make([]int64, n), make([]int64, n)
	records, checksums, received := make([][]byte, n), make([][]byte, n), make([]time.Time, n)
	last := make(map[int64]int, 1) // volume -> index of its last commit
	for i := range cs {
		c := &cs[i]
		vols[i], versions[i], bases[i] = c.Volume, c.Version, c.Base
		clients[i], seqs[i], decisions[i], reasons[i] = c.ClientID, c.ClientSeq, string(c.Decision), c.Reason
		pageCounts[i], pagesCounts[i] = int64(c.PageCount), int64(len(c.Pages))
		records[i], checksums[i], received[i] = nonNil(c.Record), nonNil(c.Checksum), c.ReceivedAt
		last[c.Volume] = i
	}
	headIDs, heads, headCounts := make([]int64, 0, len(last)), make([]int64, 0, len(last)), make([]int64, 0, len(last))
	for vol, i := range last {
		headIDs, heads, headCounts = append(headIDs, vol), append(heads, cs[i].Version), append(headCounts, int64(cs[i].PageCount))
	}
	args := []any{vols, versions, bases, clients, seqs, decisions, reasons, pageCounts, pagesCounts,
		records, checksums, received, headIDs, heads, headCounts}

	useCopy := nPages > copyThresholdAll
	sql := appendAllCommitsSQL
	if !useCopy {
		sql = appendAllSQL
		pVols, pVersions, pageNos, segs := make([]int64, 0, nPages), make([]int64, 0, nPages), make([]int64, 0, nPages), make([]string, 0, nPages)
		frameOffs, frameLens, pageOffs, hashes := make([]int64, 0, nPages), make([]int64, 0, nPages), make([]int64, 0, nPages), make([]int64, 0, nPages)
		for i := range cs {
			c := &cs[i]
			for _, p := range c.Pages {
				pVols, pVersions, pageNos, segs = append(pVols, c.Volume), append(pVersions, c.Version), append(pageNos, int64(p.PageNo)), append(segs, p.Segment)
				frameOffs, frameLens = append(frameOffs, p.FrameOffset), append(frameLens, p.FrameLength)
				pageOffs, hashes = append(pageOffs, p.PageOffset), append(hashes, int64(p.Hash))
			}
		}
		args = append(args, pVols, pVersions, pageNos, segs, frameOffs, frameLens, pageOffs, hashes)
	}

	var b pgx.Batch
	if len(keys) > 0 {
		b.Queue(insertSegmentsSQL, keys)
	}
	var dupOrd *int64
	var commits, pageRows int64
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&dupOrd, &commits, &pageRows) })
	var segIDs map[string]int64
	if useCopy {
		segIDs = make(map[string]int64, len(keys))
		b.Queue(`SELECT key, id FROM segments WHERE key = ANY($1)`, keys).Query(func(rows pgx.Rows) error {
			var key string
			var id int64
			_, err := pgx.ForEachRow(rows, []any{&key, &id}, func() error {
				segIDs[key] = id
				return nil
			})
			return err
		})
	}
	what := fmt.Sprintf("append %d commits", n)
	if err := t.send(ctx, &b); err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if dupOrd != nil {
		return int(*dupOrd - 1), nil
	}
	if commits != int64(n) {
		// A key appeared after dup's snapshot, which the volume locks
		// rule out; some commits went in without their pages.
		return -1, fmt.Errorf("%s: stored %d commit rows of %d", what, commits, n)
	}
	if useCopy {
		rows := make([][]any, 0, nPages)
		for i := range cs {
			c := &cs[i]
			for _, p := range c.Pages {
				id, ok := segIDs[p.Segment]
				if !ok {
					return -1, fmt.Errorf("%s: segment %s: no id", what, p.Segment)
				}
				rows = append(rows, []any{c.Volume, int64(p.PageNo), c.Version, id, p.FrameOffset, p.FrameLength, p.PageOffset, int64(p.Hash)})
			}
		}
		copied, err := t.conn.CopyFrom(ctx, pgx.Identifier{"page_index"},
			[]string{"volume_id", "page_no", "version", "segment_id", "frame_offset", "frame_length", "page_offset", "hash"},
			pgx.CopyFromRows(rows))
		if err != nil {
			return -1, fmt.Errorf("%s: copy page index: %w", what, err)
		}
		pageRows = copied
	}
	if pageRows != int64(nPages) {
		// As in Append: only a segment deleted while being written could
		// make a page row go missing.
		return -1, fmt.Errorf("%s: stored %d of %d page-index rows", what, pageRows, nPages)
	}
	return -1, nil
}
