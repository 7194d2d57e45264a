package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cambiumdb/cambium/pgschema"
)

const tokenColumns = `id, secret_hash, coalesce(volume_id, 0), can_read, can_write, can_admin,
	note, created_at, expires_at`

func scanToken(row pgx.Row) (pgschema.Token, error) {
	var (
		t       pgschema.Token
		expires *time.Time // NULL: never
	)
	if err := row.Scan(&t.ID, &t.SecretHash, &t.Volume, &t.Read, &t.Write, &t.Admin,
		&t.Note, &t.CreatedAt, &expires); err != nil {
		return pgschema.Token{}, err
	}
	if expires != nil {
		t.ExpiresAt = *expires
	}
	return t, nil
}

// CreateToken implements pgschema.Metastore. A zero CreatedAt becomes the
// transaction's now(); times are stored to the microsecond.
func (s *Store) CreateToken(ctx context.Context, t pgschema.Token) (pgschema.Token, error) {
	if err := pgschema.ValidateToken(&t); err != nil {
		return pgschema.Token{}, fmt.Errorf("create token: %w", err)
	}
	var volume *int64 // NULL: every volume
	if t.Volume != 0 {
		volume = &t.Volume
	}
	var created, expires *time.Time
	if !t.CreatedAt.IsZero() {
		created = &t.CreatedAt
	}
	if !t.ExpiresAt.IsZero() {
		expires = &t.ExpiresAt
	}
	stored, err := scanToken(s.pool.QueryRow(ctx, `INSERT INTO tokens
		(id, secret_hash, volume_id, can_read, can_write, can_admin, note, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, now()), $9)
		RETURNING `+tokenColumns,
		t.ID, t.SecretHash, volume, t.Read, t.Write, t.Admin, t.Note, created, expires))
	switch {
	case isUniqueViolation(err, "tokens_pkey"):
		return pgschema.Token{}, fmt.Errorf("create token %s: %w", t.ID, pgschema.ErrTokenExists)
	case isForeignKeyViolation(err):
		return pgschema.Token{}, fmt.Errorf("create token %s: volume %d: %w", t.ID, t.Volume, pgschema.ErrVolumeNotFound)
	case err != nil:
		return pgschema.Token{}, fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return stored, nil
}

// Token implements pgschema.Metastore.
func (s *Store) Token(ctx context.Context, id string) (pgschema.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return pgschema.Token{}, fmt.Errorf("token %s: %w", id, pgschema.ErrTokenNotFound)
	}
	if err != nil {
		return pgschema.Token{}, fmt.Errorf("token %s: %w", id, err)
	}
	return t, nil
}

// Tokens implements pgschema.Metastore. Ids sort by byte value (COLLATE
// "C"), whatever the database's collation.
func (s *Store) Tokens(ctx context.Context) ([]pgschema.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgschema.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// DeleteToken implements pgschema.Metastore.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete token %s: %w", id, pgschema.ErrTokenNotFound)
	}
	return nil
}
