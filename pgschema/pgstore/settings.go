package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/pgschema"
)

// Configure implements pgschema.Metastore. It waits for the volume's row
// lock, so a commit being decided finishes under the old settings.
func (s *Store) Configure(ctx context.Context, volume int64, set pgschema.Settings) (pgschema.Volume, error) {
	if err := pgschema.ValidatePolicy(set.Policy); err != nil {
		return pgschema.Volume{}, err
	}
	v, err := scanVolume(s.pool.QueryRow(ctx,
		`UPDATE volumes SET policy = $2, allow_ddl = $3 WHERE id = $1 RETURNING `+volumeColumns,
		volume, set.Policy, set.AllowDDL))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("configure volume %d: %w", volume, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("configure volume %d: %w", volume, err)
	}
	return v, nil
}

// SetMutator implements pgschema.Metastore.
func (s *Store) SetMutator(ctx context.Context, volume int64, name, sql string) error {
	if err := pgschema.ValidateMutatorName(name); err != nil {
		return err
	}
	if err := pgschema.ValidateMutatorSQL(sql); err != nil {
		return err
	}
	if sql == "" {
		if _, err := s.pool.Exec(ctx, `DELETE FROM mutators WHERE volume_id = $1 AND name = $2`, volume, name); err != nil {
			return fmt.Errorf("delete mutator %s of volume %d: %w", name, volume, err)
		}
		return nil
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO mutators (volume_id, name, sql) VALUES ($1, $2, $3)
		ON CONFLICT (volume_id, name) DO UPDATE SET sql = excluded.sql, updated_at = now()`, volume, name, sql)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("set mutator %s of volume %d: %w", name, volume, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return fmt.Errorf("set mutator %s of volume %d: %w", name, volume, err)
	}
	return nil
}

const mutatorColumns = `volume_id, name, sql, updated_at`

func scanMutator(row pgx.Row) (pgschema.Mutator, error) {
	var m pgschema.Mutator
	err := row.Scan(&m.Volume, &m.Name, &m.SQL, &m.UpdatedAt)
	return m, err
}

// Mutator implements pgschema.Metastore.
func (s *Store) Mutator(ctx context.Context, volume int64, name string) (pgschema.Mutator, error) {
	m, err := scanMutator(s.pool.QueryRow(ctx,
		`SELECT `+mutatorColumns+` FROM mutators WHERE volume_id = $1 AND name = $2`, volume, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("mutator %s of volume %d: %w", name, volume, pgschema.ErrMutatorNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("mutator %s of volume %d: %w", name, volume, err)
	}
	return m, nil
}

// Mutators implements pgschema.Metastore.
func (s *Store) Mutators(ctx context.Context, volume int64) ([]pgschema.Mutator, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+mutatorColumns+` FROM mutators WHERE volume_id = $1 ORDER BY name COLLATE "C"`, volume)
	if err != nil {
		return nil, fmt.Errorf("mutators of volume %d: %w", volume, err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Mutator, error) { return scanMutator(r) })
	if err != nil {
		return nil, fmt.Errorf("mutators of volume %d: %w", volume, err)
	}
	return ms, nil
}

// ClientCommits implements pgschema.Metastore; the idempotency key's index
// serves it.
func (s *Store) ClientCommits(ctx context.Context, volume int64, clientID string, fromSeq, toSeq int64) ([]pgschema.Commit, error) {
	rows, err := s.pool.Query(ctx, `SELECT volume_id, version, base, client_id, client_seq, decision, reason,
	page_count, pages_count, ''::bytea, checksum, received_at, created_at
	FROM commits WHERE volume_id = $1 AND client_id = $2 AND client_seq BETWEEN $3 AND $4 ORDER BY client_seq`,
		volume, clientID, fromSeq, toSeq)
	if err != nil {
		return nil, fmt.Errorf("commits of client %s on volume %d: %w", clientID, volume, err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Commit, error) { return scanCommit(r) })
	if err != nil {
		return nil, fmt.Errorf("commits of client %s on volume %d: %w", clientID, volume, err)
	}
	return cs, nil
}
