package replica

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"

	"github.com/cambiumdb/cambium/replay"
)

// Mutate runs the named mutation in one write transaction of the replica,
// resolved through Options.Mutators, and records the mutation — its name
// and arguments, not the statements it ran — as the pending commit's
// logical record, so the server replays it by name (DESIGN "Logical
// records and replay"). The transaction's replay context (clock, random
// seed, time zone) is fixed as for any write transaction, and its pages
// and read set are captured the same way. A mutation that changes nothing
// makes no commit.
//
// args is marshalled to JSON; a json.RawMessage or []byte is taken as JSON
// already. When the mutation fails nothing is committed and the error is
// a *replay.RejectError (its handler's error, a constraint, an unknown
// name, ...) or, for a failure that is not the mutation's, a plain one.
func (r *Replica) Mutate(ctx context.Context, name string, args any) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	if err := replay.ValidateName(name); err != nil {
		return fmt.Errorf("mutate: %w", err)
	}
	raw, err := mutationArgs(args)
	if err != nil {
		return fmt.Errorf("mutate %s: %w", name, err)
	}
	m := &Mutation{Name: name, Args: raw}
	// The mutation rides in BeginTx's context to the driver, whose
	// transaction then records it instead of its statements.
	tx, err := r.sqlDB().BeginTx(context.WithValue(ctx, mutationKey{}, m), nil)
	if err != nil {
		return fmt.Errorf("mutate %s: %w", name, err)
	}
	if err := replay.Apply(ctx, tx, &Record{Mutation: m}, r.opts.Mutators); err != nil {
		tx.Rollback()
		return fmt.Errorf("mutate %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("mutate %s: %w", name, err)
	}
	return nil
}

// mutationArgs returns args as JSON.
func mutationArgs(args any) (json.RawMessage, error) {
	var raw []byte
	switch a := args.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		raw = a
	case []byte:
		raw = a
	default:
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("arguments: %v: %w", err, replay.ErrMutationArgs)
		}
		return b, nil
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("arguments are not JSON: %w", replay.ErrMutationArgs)
	}
	return append(json.RawMessage(nil), raw...), nil
}

// sqlDB returns the replica's own connection pool, opened on first use
// and closed by Close.
func (r *Replica) sqlDB() *sql.DB {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.db == nil {
		r.mu.db = sql.OpenDB(connector{r})
	}
	return r.mu.db
}

// connector opens cambium connections on one replica.
type connector struct{ r *Replica }

var _ driver.Connector = connector{}

func (c connector) Connect(context.Context) (driver.Conn, error) { return c.r.connect() }
func (c connector) Driver() driver.Driver                        { return &Driver{} }
