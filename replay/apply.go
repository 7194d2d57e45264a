package replay

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// Code is the stable class of a RejectError. Codes survive the wire: the
// HTTP layer sends them as is and the client maps them back.
type Code string

// Reject codes.
const (
	// CodeConstraint: a constraint failed (UNIQUE, CHECK, NOT NULL,
	// FOREIGN KEY, a trigger's RAISE); the reason is SQLite's message,
	// e.g. "CHECK constraint failed: balance >= 0".
	CodeConstraint Code = "constraint"
	// CodeSandbox: the record tried something replay does not allow
	// (ATTACH, load_extension, a PRAGMA off the allow-list, DDL on a
	// volume that forbids it); the reason says what was denied.
	CodeSandbox Code = "sandbox"
	// CodeTimeout: the replay ran past Engine.Timeout.
	CodeTimeout Code = "timeout"
	// CodeTooBig: a string or blob past Engine.MaxBlobBytes, SQL past
	// Engine.MaxSQLBytes, or more pages or temporary storage than the
	// engine's memory limits allow.
	CodeTooBig Code = "too_big"
	// CodeSQL: SQL that does not parse, names what does not exist, or
	// fails in SQLite for another reason of its own.
	CodeSQL Code = "sql"
	// CodeMutation: a mutation's handler returned an error, or its
	// arguments do not fit its SQL.
	CodeMutation Code = "mutation"
	// CodeUnknownMutation: no mutator has the record's mutation name.
	CodeUnknownMutation Code = "unknown_mutation"
	// CodeRecord: the record cannot be run at all (empty, both statements
	// and a mutation, a bad mutation name, no replay time).
	CodeRecord Code = "record"
)

// RejectError says a replay failed because of the record: running it again
// on the same snapshot would fail the same way, so the commit is rejected,
// not retried. Errors that are not the record's fault (reading the
// snapshot, a cancelled context) are never a RejectError.
type RejectError struct {
	Code   Code
	Reason string
	// Statement is the index in Record.Statements of the statement that
	// failed, or -1 when the failure belongs to no one statement (a
	// mutation, the COMMIT, the record as a whole).
	Statement int
	// Err is the underlying error, when there is one. It stays on the
	// side that produced it: only Code, Reason and Statement travel.
	Err error
}

func (e *RejectError) Error() string {
	if e.Statement >= 0 {
		return fmt.Sprintf("replay: rejected (%s) at statement %d: %s", e.Code, e.Statement, e.Reason)
	}
	return fmt.Sprintf("replay: rejected (%s): %s", e.Code, e.Reason)
}

// Unwrap returns the underlying error.
func (e *RejectError) Unwrap() error { return e.Err }

// statementError wraps an error that is not the record's fault with the
// index of the statement it interrupted (-1 for none).
type statementError struct {
	index int
	err   error
}

func (e *statementError) Error() string {
	if e.index < 0 {
		return e.err.Error()
	}
	return fmt.Sprintf("statement %d: %v", e.index, e.err)
}

func (e *statementError) Unwrap() error { return e.err }

// Apply runs rec on tx: its statements in order, each with its bound
// arguments, or its mutation resolved through m. It neither begins nor
// ends a transaction: tx is one. The client uses it to run a mutation and
// to re-run pending transactions on a new head (rebase); the server's
// replay runs it on its sandboxed connection.
//
// A statement runs through ExecContext, which steps it once: a statement
// the client ran as a query (SELECT, INSERT … RETURNING) does all its
// writes in that step, but a query that calls random() once per row it
// returns draws as many values as rows the client read, which one step
// does not reproduce.
//
// It returns a *RejectError when the record itself fails; any other error
// (I/O, a cancelled ctx, the Mutators' own failure) is returned wrapped
// and may be transient.
func Apply(ctx context.Context, tx Tx, rec *Record, m Mutators) error {
	if err := rec.Validate(); err != nil {
		return &RejectError{Code: CodeRecord, Reason: err.Error(), Statement: -1, Err: err}
	}
	if rec.Mutation != nil {
		return applyMutation(ctx, tx, rec.Mutation, m)
	}
	for i, st := range rec.Statements {
		if _, err := tx.ExecContext(ctx, st.SQL, st.args()...); err != nil {
			return classify(ctx, err, CodeSQL, i)
		}
	}
	return nil
}

func applyMutation(ctx context.Context, tx Tx, mu *Mutation, m Mutators) error {
	if m == nil {
		err := &UnknownMutationError{Name: mu.Name}
		return &RejectError{Code: CodeUnknownMutation, Reason: err.Error() + " (no mutators)", Statement: -1, Err: err}
	}
	mut, err := m.Mutator(ctx, mu.Name)
	if errors.Is(err, ErrUnknownMutation) {
		return &RejectError{Code: CodeUnknownMutation, Reason: err.Error(), Statement: -1, Err: err}
	}
	if err != nil {
		return &statementError{index: -1, err: fmt.Errorf("resolve mutation %s: %w", mu.Name, err)}
	}
	if mut.Name == "" {
		mut.Name = mu.Name
	}
	if err := mut.Validate(); err != nil {
		return &RejectError{Code: CodeMutation, Reason: err.Error(), Statement: -1, Err: err}
	}
	if mut.Handler != nil {
		if err := mut.Handler(ctx, tx, mu.Args); err != nil {
			return classify(ctx, err, CodeMutation, -1)
		}
		return nil
	}
	p, err := scanParams(mut.SQL)
	if err != nil {
		return &RejectError{Code: CodeMutation, Reason: err.Error(), Statement: -1, Err: err}
	}
	args, err := bindArgs(p, mu.Args)
	if err != nil {
		return &RejectError{Code: CodeMutation, Reason: fmt.Sprintf("mutation %s: %v", mu.Name, err), Statement: -1, Err: err}
	}
	if _, err := tx.ExecContext(ctx, mut.SQL, args...); err != nil {
		return classify(ctx, err, CodeSQL, -1)
	}
	return nil
}

// args returns the statement's arguments for database/sql.
func (s Statement) args() []any {
	out := make([]any, len(s.Args))
	for i, a := range s.Args {
		if a.Name != "" {
			out[i] = sql.Named(a.Name, a.Value.Driver())
		} else {
			out[i] = a.Value.Driver()
		}
	}
	return out
}

// tooBigMessage is SQLite's text for SQLITE_TOOBIG, which randomblob's
// override also returns (a Go function can only fail with SQLITE_ERROR).
const tooBigMessage = "string or blob too big"

// classify turns the error of statement stmt (or -1) into a *RejectError
// when the record is to blame, using fallback for an error that is not
// SQLite's (a Go handler's own), and wraps it in a statementError when not.
func classify(ctx context.Context, err error, fallback Code, stmt int) error {
	if re := (*RejectError)(nil); errors.As(err, &re) {
		if re.Statement < 0 && stmt >= 0 {
			re.Statement = stmt
		}
		return re
	}
	transient := func() error { return &statementError{index: stmt, err: err} }
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, sql.ErrTxDone) {
		return transient()
	}
	reject := func(code Code) error {
		return &RejectError{Code: code, Reason: err.Error(), Statement: stmt, Err: err}
	}
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return reject(fallback)
	}
	switch se.Code {
	case sqlite3.ErrConstraint:
		return reject(CodeConstraint)
	case sqlite3.ErrAuth:
		return reject(CodeSandbox)
	case sqlite3.ErrTooBig, sqlite3.ErrFull, sqlite3.ErrNomem:
		return reject(CodeTooBig)
	case sqlite3.ErrError, sqlite3.ErrMismatch, sqlite3.ErrRange, sqlite3.ErrMisuse:
		if strings.Contains(se.Error(), tooBigMessage) {
			return reject(CodeTooBig)
		}
		return reject(CodeSQL)
	default:
		// I/O, corruption, locking, an interrupt that was not ours: the
		// snapshot or the machine, not the record.
		return transient()
	}
}
