package replay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrUnknownMutation is wrapped by UnknownMutationError: no mutator has
	// that name.
	ErrUnknownMutation = errors.New("replay: unknown mutation")
	// ErrMutationName is returned for a name ValidateName refuses.
	ErrMutationName = errors.New("replay: invalid mutation name")
	// ErrMutationExists is returned by Registry.Register for a name taken.
	ErrMutationExists = errors.New("replay: mutation already registered")
	// ErrMutator is returned for a Mutator that cannot run: neither or both
	// of Handler and SQL, or SQL whose parameters cannot be bound.
	ErrMutator = errors.New("replay: invalid mutator")
	// ErrMutationArgs is returned when a SQL mutator's arguments are not a
	// JSON object holding every parameter its SQL names.
	ErrMutationArgs = errors.New("replay: invalid mutation arguments")
)

// UnknownMutationError is what a Mutators returns for a name it does not
// know.
type UnknownMutationError struct {
	Name string
}

func (e *UnknownMutationError) Error() string {
	return fmt.Sprintf("replay: unknown mutation %q", e.Name)
}

// Unwrap returns ErrUnknownMutation.
func (e *UnknownMutationError) Unwrap() error { return ErrUnknownMutation }

// MaxNameLen is the longest mutation name ValidateName accepts.
const MaxNameLen = 64

// ValidateName accepts mutation names of the form [a-z][a-z0-9_.-]{0,63}:
// short, lowercase, safe in a URL path, a log line and a metric label.
// Errors wrap ErrMutationName.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%q: length %d, want 1..%d: %w", name, len(name), MaxNameLen, ErrMutationName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'):
		default:
			return fmt.Errorf("%q: byte %d, want [a-z][a-z0-9_.-]*: %w", name, i, ErrMutationName)
		}
	}
	return nil
}

// Tx is what a record runs on. *sql.Tx and *sql.Conn satisfy it: the
// client runs records on a transaction of its replica, the server's replay
// on its sandboxed connection inside the replay's transaction. A Handler
// must close the rows it opens before returning.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Tx = (*sql.Tx)(nil)
	_ Tx = (*sql.Conn)(nil)
)

// Handler runs a named mutation on tx with its JSON arguments. It must be
// deterministic given the database state, args, the SQL clock ('now') and
// SQL random(): it runs once on the client and may run again on the
// server (replay) and on the client (rebase), and each run must write the
// same pages. Read time and randomness through SQL, never from Go. An
// error aborts the transaction; the server rejects the commit with the
// error's text as the reason.
type Handler func(ctx context.Context, tx Tx, args json.RawMessage) error

// Mutator is one resolved mutation: a Go handler, or SQL.
//
// SQL is one or more statements separated by ';', run in order, with
// :name (or @name, $name) parameters bound from the arguments, a JSON
// object: an integral number becomes an INTEGER (when it fits in 64 bits),
// another number a REAL, a string TEXT, true/false 1/0, null NULL, and an
// object or array its compact JSON text. Parameter names must match
// [A-Za-z][A-Za-z0-9_]*; every parameter the SQL names must be present in
// the arguments (null for NULL); extra arguments are ignored; positional
// parameters (?, ?NNN) are not allowed.
type Mutator struct {
	Name    string
	Handler Handler
	SQL     string
}

// Validate checks the name, that exactly one of Handler and SQL is set,
// and that SQL's parameters can be bound. Errors wrap ErrMutationName or
// ErrMutator.
func (m Mutator) Validate() error {
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	switch {
	case m.Handler == nil && m.SQL == "":
		return fmt.Errorf("mutator %s: neither a handler nor SQL: %w", m.Name, ErrMutator)
	case m.Handler != nil && m.SQL != "":
		return fmt.Errorf("mutator %s: both a handler and SQL: %w", m.Name, ErrMutator)
	case m.SQL != "":
		if _, err := scanParams(m.SQL); err != nil {
			return fmt.Errorf("mutator %s: %w", m.Name, err)
		}
	}
	return nil
}

// Mutators resolves mutation names: an app's Registry, SQL mutators
// stored per volume, or both chained (MutatorsFunc).
type Mutators interface {
	// Mutator returns the mutator registered as name. For a name it does
	// not know it returns an error wrapping ErrUnknownMutation
	// (*UnknownMutationError); any other error is the resolver's own
	// failure (e.g. I/O) and is not the record's fault.
	Mutator(ctx context.Context, name string) (Mutator, error)
}

// MutatorsFunc adapts a function to Mutators.
type MutatorsFunc func(ctx context.Context, name string) (Mutator, error)

// Mutator implements Mutators.
func (f MutatorsFunc) Mutator(ctx context.Context, name string) (Mutator, error) {
	return f(ctx, name)
}

// Registry holds the mutators an application registers in Go: the same
// registry on the client (Options.Mutators of a replica) and on a server
// that embeds Cambium as a library. It is safe for concurrent use.
type Registry struct {
	mu struct {
		sync.RWMutex
		byName map[string]Mutator
	}
}

var (
	_ Mutators = (*Registry)(nil)
	_ Mutators = MutatorsFunc(nil)
)

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

// Register adds a Go handler under name.
func (r *Registry) Register(name string, h Handler) error {
	return r.add(Mutator{Name: name, Handler: h})
}

// RegisterSQL adds a SQL mutator under name (see Mutator for how its
// arguments are bound).
func (r *Registry) RegisterSQL(name, query string) error {
	return r.add(Mutator{Name: name, SQL: query})
}

func (r *Registry) add(m Mutator) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.byName[m.Name]; ok {
		return fmt.Errorf("register %s: %w", m.Name, ErrMutationExists)
	}
	if r.mu.byName == nil {
		r.mu.byName = make(map[string]Mutator)
	}
	r.mu.byName[m.Name] = m
	return nil
}

// Mutator implements Mutators.
func (r *Registry) Mutator(ctx context.Context, name string) (Mutator, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.mu.byName[name]
	if !ok {
		return Mutator{}, &UnknownMutationError{Name: name}
	}
	return m, nil
}
