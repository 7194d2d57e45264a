package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cambiumdb/cambium/pgschema"
)

const selectVolume = `SELECT id, name, page_size, head, page_count, policy, allow_ddl, created_at FROM volumes`

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

func scanVolume(row rowScanner) (pgschema.Volume, error) {
	var (
		v       pgschema.Volume
		created int64
	)
	if err := row.Scan(&v.ID, &v.Name, &v.PageSize, &v.Head, &v.PageCount, &v.Policy, &v.AllowDDL, &created); err != nil {
		return pgschema.Volume{}, err
	}
	v.CreatedAt = fromMicros(created)
	return v, nil
}

// CreateVolume creates an empty volume: head 0, page count 0, policy
// pgschema.DefaultPolicy.
func (s *Store) CreateVolume(ctx context.Context, name string, pageSize int) (pgschema.Volume, error) {
	if err := pgschema.ValidateVolumeName(name); err != nil {
		return pgschema.Volume{}, fmt.Errorf("create volume: %w", err)
	}
	if err := pgschema.ValidatePageSize(pageSize); err != nil {
		return pgschema.Volume{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	row := s.w.QueryRowContext(ctx, `INSERT INTO volumes (name, page_size, head, page_count, policy, created_at)
		VALUES (?, ?, 0, 0, ?, ?)
		RETURNING id, name, page_size, head, page_count, policy, allow_ddl, created_at`,
		name, pageSize, pgschema.DefaultPolicy, toMicros(time.Now()))
	v, err := scanVolume(row)
	if isUnique(err) {
		return pgschema.Volume{}, fmt.Errorf("create volume %s: %w", name, pgschema.ErrVolumeExists)
	}
	if err != nil {
		return pgschema.Volume{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	return v, nil
}

// Volume returns the volume named name (names are case-sensitive), or
// pgschema.ErrVolumeNotFound.
func (s *Store) Volume(ctx context.Context, name string) (pgschema.Volume, error) {
	v, err := scanVolume(s.r.QueryRowContext(ctx, selectVolume+` WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Volume{}, fmt.Errorf("volume %s: %w", name, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return pgschema.Volume{}, fmt.Errorf("volume %s: %w", name, err)
	}
	return v, nil
}

// VolumeByID returns the volume with the given id, or
// pgschema.ErrVolumeNotFound.
func (s *Store) VolumeByID(ctx context.Context, id int64) (pgschema.Volume, error) {
	v, err := scanVolume(s.r.QueryRowContext(ctx, selectVolume+` WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Volume{}, fmt.Errorf("volume %d: %w", id, pgschema.ErrVolumeNotFound)
	}
	if err != nil {
		return pgschema.Volume{}, fmt.Errorf("volume %d: %w", id, err)
	}
	return v, nil
}

// Volumes returns every volume, ordered by name in byte order.
func (s *Store) Volumes(ctx context.Context) ([]pgschema.Volume, error) {
	rows, err := s.r.QueryContext(ctx, selectVolume+` ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	defer rows.Close()
	var vols []pgschema.Volume
	for rows.Next() {
		v, err := scanVolume(rows)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		vols = append(vols, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return vols, nil
}
