package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cambiumdb/cambium/api"
	"github.com/cambiumdb/cambium/replay"
)

// ServerMutators resolves named mutations the way the server does for one
// volume: the application's Go handlers in local first (the same ones the
// server registers), then the volume's SQL mutators, fetched from the
// server once and kept (Refresh fetches them again). Give it to
// Options.Mutators so Mutate and rebases run the definitions the server
// replays.
type ServerMutators struct {
	Client *api.Client
	Volume string
	Local  *replay.Registry // may be nil

	mu  sync.Mutex
	sql map[string]string // nil until fetched
}

var _ replay.Mutators = (*ServerMutators)(nil)

// Mutator implements replay.Mutators.
func (m *ServerMutators) Mutator(ctx context.Context, name string) (replay.Mutator, error) {
	if m.Local != nil {
		mu, err := m.Local.Mutator(ctx, name)
		if err == nil || !errors.Is(err, replay.ErrUnknownMutation) {
			return mu, err
		}
	}
	m.mu.Lock()
	fetched := m.sql != nil
	m.mu.Unlock()
	if !fetched {
		if err := m.Refresh(ctx); err != nil {
			return replay.Mutator{}, err
		}
	}
	m.mu.Lock()
	sql, ok := m.sql[name]
	m.mu.Unlock()
	if !ok {
		return replay.Mutator{}, &replay.UnknownMutationError{Name: name}
	}
	return replay.Mutator{Name: name, SQL: sql}, nil
}

// Refresh fetches the volume's SQL mutators from the server.
func (m *ServerMutators) Refresh(ctx context.Context) error {
	list, err := m.Client.Mutators(ctx, m.Volume)
	if err != nil {
		return fmt.Errorf("fetch mutators of %s: %w", m.Volume, err)
	}
	byName := make(map[string]string, len(list))
	for _, mi := range list {
		byName[mi.Name] = mi.SQL
	}
	m.mu.Lock()
	m.sql = byName
	m.mu.Unlock()
	return nil
}
