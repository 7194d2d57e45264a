package pgschema

import (
	"context"
	"errors"
)

// AppendCommit stores c as the next version of its volume unless its
// idempotency key is already stored, in which case it returns the stored
// commit and duplicate = true: a retried commit never becomes a second
// version. c.Version must be the head + 1 (else *StaleHeadError).
func AppendCommit(ctx context.Context, ms Metastore, c NewCommit) (stored Commit, duplicate bool, err error) {
	err = ms.Update(ctx, func(tx Tx) error {
		if _, err := tx.LockVolume(ctx, c.Volume); err != nil {
			return err
		}
		prev, err := tx.CommitBySeq(ctx, c.Volume, c.ClientID, c.ClientSeq)
		if err == nil {
			stored, duplicate = prev, true
			return nil
		}
		if !errors.Is(err, ErrCommitNotFound) {
			return err
		}
		return tx.Append(ctx, c)
	})
	if err != nil || duplicate {
		return stored, duplicate, err
	}
	stored, err = ms.Commit(ctx, c.Volume, c.Version)
	return stored, false, err
}
