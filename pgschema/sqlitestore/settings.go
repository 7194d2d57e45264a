package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

// Configure changes a volume's conflict settings.
func (s *Store) Configure(ctx context.Context, volume int64, set pgschema.Settings) (pgschema.Volume, error) {
	if err := pgschema.ValidatePolicy(set.Policy); err != nil {
		return pgschema.Volume{}, err
	}
	v, err := scanVolume(s.w.QueryRowContext(ctx, `UPDATE volumes SET policy = ?, allow_ddl = ? WHERE id = ?
		RETURNING id, name, page_size, head, page_count, policy, allow_ddl, created_at`, set.Policy, set.AllowDDL, volume))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("configure volume %d: %w", volume, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("configure volume %d: %w", volume, err)
	}
	return v, nil
}

// SetMutator stores, replaces or (empty sql) deletes a mutator.
func (s *Store) SetMutator(ctx context.Context, volume int64, name, sqlText string) error {
	if err := pgschema.ValidateMutatorName(name); err != nil {
		return err
	}
	if err := pgschema.ValidateMutatorSQL(sqlText); err != nil {
		return err
	}
	if sqlText == "" {
		if _, err := s.w.ExecContext(ctx, `DELETE FROM mutators WHERE volume_id = ? AND name = ?`, volume, name); err != nil {
			return fmt.Errorf("delete mutator %s of volume %d: %w", name, volume, err)
		}
		return nil
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO mutators (volume_id, name, sql, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (volume_id, name) DO UPDATE SET sql = excluded.sql, updated_at = excluded.updated_at`,
		volume, name, sqlText, toMicros(time.Now()))
	if isForeignKey(err) {
		return fmt.Errorf("set mutator %s of volume %d: %w", name, volume, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return fmt.Errorf("set mutator %s of volume %d: %w", name, volume, err)
	}
	return nil
}

const selectMutator = `SELECT volume_id, name, sql, updated_at FROM mutators`

func scanMutator(row rowScanner) (pgschema.Mutator, error) {
	var m pgschema.Mutator
	var updated int64
	if err := row.Scan(&m.Volume, &m.Name, &m.SQL, &updated); err != nil {
		return pgschema.Mutator{}, err
	}
	m.UpdatedAt = fromMicros(updated)
	return m, nil
}

// Mutator returns one mutator, or pgschema.ErrMutatorNotFound.
func (s *Store) Mutator(ctx context.Context, volume int64, name string) (pgschema.Mutator, error) {
	m, err := scanMutator(s.r.QueryRowContext(ctx, selectMutator+` WHERE volume_id = ? AND name = ?`, volume, name))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("mutator %s of volume %d: %w", name, volume, pgschema.ErrMutatorNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("mutator %s of volume %d: %w", name, volume, err)
	}
	return m, nil
}

// Mutators returns a volume's mutators ordered by name.
func (s *Store) Mutators(ctx context.Context, volume int64) ([]pgschema.Mutator, error) {
	rows, err := s.r.QueryContext(ctx, selectMutator+` WHERE volume_id = ? ORDER BY name`, volume)
	if err != nil {
		return nil, fmt.Errorf("mutators of volume %d: %w", volume, err)
	}
	defer rows.Close()
	var ms []pgschema.Mutator
	for rows.Next() {
		m, err := scanMutator(rows)
		if err != nil {
			return nil, fmt.Errorf("mutators of volume %d: %w", volume, err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mutators of volume %d: %w", volume, err)
	}
	return ms, nil
}

// ClientCommits returns a client's stored commits in a sequence range,
// without their records.
func (s *Store) ClientCommits(ctx context.Context, volume int64, clientID string, fromSeq, toSeq int64) ([]pgschema.Commit, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT volume_id, version, base, client_id, client_seq, decision, reason,
	page_count, pages_count, X'', checksum, received_at, created_at
	FROM commits WHERE volume_id = ? AND client_id = ? AND client_seq BETWEEN ? AND ? ORDER BY client_seq`,
		volume, clientID, fromSeq, toSeq)
	if err != nil {
		return nil, fmt.Errorf("commits of client %s on volume %d: %w", clientID, volume, err)
	}
	defer rows.Close()
	var cs []pgschema.Commit
	for rows.Next() {
		c, err := scanCommit(rows)
		if err != nil {
			return nil, fmt.Errorf("commits of client %s on volume %d: %w", clientID, volume, err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("commits of client %s on volume %d: %w", clientID, volume, err)
	}
	return cs, nil
}
