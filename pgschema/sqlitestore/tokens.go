package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/cambiumdb/cambium/pgschema"
)

const selectToken = `SELECT id, secret_hash, coalesce(volume_id, 0), can_read, can_write, can_admin,
	note, created_at, expires_at FROM tokens`

func scanToken(row rowScanner) (pgschema.Token, error) {
	var (
		t       pgschema.Token
		created int64
		expires sql.NullInt64
	)
	if err := row.Scan(&t.ID, &t.SecretHash, &t.Volume, &t.Read, &t.Write, &t.Admin,
		&t.Note, &created, &expires); err != nil {
		return pgschema.Token{}, err
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt = fromNullMicros(expires)
	return t, nil
}

// CreateToken stores an access token and returns it as stored: times
// truncated to the microsecond, in UTC.
func (s *Store) CreateToken(ctx context.Context, t pgschema.Token) (pgschema.Token, error) {
	if err := pgschema.ValidateToken(&t); err != nil {
		return pgschema.Token{}, fmt.Errorf("create token: %w", err)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	var volume sql.NullInt64 // NULL: every volume
	if t.Volume != 0 {
		volume = sql.NullInt64{Int64: t.Volume, Valid: true}
	}
	stored, err := scanToken(s.w.QueryRowContext(ctx, `INSERT INTO tokens
		(id, secret_hash, volume_id, can_read, can_write, can_admin, note, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING id, secret_hash, coalesce(volume_id, 0), can_read, can_write, can_admin, note, created_at, expires_at`,
		t.ID, t.SecretHash, volume, t.Read, t.Write, t.Admin, t.Note, toMicros(t.CreatedAt), toNullMicros(t.ExpiresAt)))
	switch {
	case isPrimaryKey(err):
		return pgschema.Token{}, fmt.Errorf("create token %s: %w", t.ID, pgschema.ErrTokenExists)
	case isForeignKey(err):
		return pgschema.Token{}, fmt.Errorf("create token %s: volume %d: %w", t.ID, t.Volume, pgschema.ErrVolumeNotFound)
	case err != nil:
		return pgschema.Token{}, fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return stored, nil
}

// Token returns the token with the given id, or pgschema.ErrTokenNotFound.
func (s *Store) Token(ctx context.Context, id string) (pgschema.Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, selectToken+` WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return pgschema.Token{}, fmt.Errorf("token %s: %w", id, pgschema.ErrTokenNotFound)
	}
	if err != nil {
		return pgschema.Token{}, fmt.Errorf("token %s: %w", id, err)
	}
	return t, nil
}

// Tokens returns every token, ordered by id in byte order.
func (s *Store) Tokens(ctx context.Context) ([]pgschema.Token, error) {
	rows, err := s.r.QueryContext(ctx, selectToken+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var ts []pgschema.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// DeleteToken deletes the token with the given id, or returns
// pgschema.ErrTokenNotFound.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("delete token %s: %w", id, pgschema.ErrTokenNotFound)
	}
	return nil
}

// isPrimaryKey reports whether err is a PRIMARY KEY constraint violation,
// which SQLite reports apart from UNIQUE ones (its extended code 1555).
func isPrimaryKey(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
}
