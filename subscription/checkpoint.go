package subscription

import (
	"context"
	"sync"
)

// Checkpoints keeps, for each subscription name, the sequence number of the
// last entry it handled. Implementations must be safe for concurrent use.
type Checkpoints interface {
	// Load returns the saved sequence number, and false when none was saved.
	Load(ctx context.Context, name string) (seq int64, ok bool, err error)
	// Save records seq as the subscription's position.
	Save(ctx context.Context, name string, seq int64) error
}

// MemoryCheckpoints keeps checkpoints in memory, for tests and for
// subscriptions that rebuild from scratch at every start.
type MemoryCheckpoints struct {
	mu  sync.Mutex
	pos map[string]int64
}

var _ Checkpoints = (*MemoryCheckpoints)(nil)

// NewMemoryCheckpoints returns an empty checkpoint store.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{pos: map[string]int64{}}
}

// Load implements Checkpoints.
func (m *MemoryCheckpoints) Load(_ context.Context, name string) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq, ok := m.pos[name]
	return seq, ok, nil
}

// Save implements Checkpoints.
func (m *MemoryCheckpoints) Save(_ context.Context, name string, seq int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[name] = seq
	return nil
}
