// Package snapshot is the port for aggregate snapshots, with a memory and
// a bbolt implementation. A snapshot holds an aggregate's state at a
// version, so that a load replays only the events after it.
//
// A repository set up with repository.WithSnapshots writes them and reads
// them; it checks every snapshot before use (its schema version, that it
// decodes, and that the batch it was taken at is still the one stored), and
// rebuilds the state from the events when a check fails. It keeps only
// states that come back from a JSON round trip the same, field by field,
// and only states built from events that come back from storage as they
// were recorded. A snapshot can make a load faster, never wrong.
//
// A user-written store proves itself with package snapshot/snapshottest.
package snapshot

import (
	"context"
	"errors"
	"sync"

	"github.com/sourced-go/sourced/transport"
)

// ErrInvalid: a Get or Put was given a bad reference or snapshot.
var ErrInvalid = errors.New("invalid snapshot request")

// Snapshot is one aggregate's state at a version.
type Snapshot struct {
	// Version is the aggregate version the state is at.
	Version int64
	// Schema is the state's schema version, which the user bumps when the
	// state type changes; a snapshot of another schema is ignored.
	Schema int
	// Marker is the id of the first event of the batch at Version: a load
	// checks that this batch is still the one stored (an aggregate deleted
	// and created again under its id has other events).
	Marker string
	// State is the encoded state.
	State []byte
}

// Store keeps the latest snapshot of each aggregate. Implementations must be
// safe for concurrent use.
type Store interface {
	// Get returns the latest snapshot of ref, and false when there is none.
	Get(ctx context.Context, ref transport.Ref) (Snapshot, bool, error)
	// Put keeps s as ref's snapshot unless a snapshot of a higher version
	// is kept already.
	Put(ctx context.Context, ref transport.Ref, s Snapshot) error
	// Delete forgets ref's snapshot.
	Delete(ctx context.Context, ref transport.Ref) error
}

// Check validates the arguments of Get, Put and Delete.
func Check(ref transport.Ref, s *Snapshot) error {
	if err := ref.Validate(); err != nil {
		return errors.Join(ErrInvalid, err)
	}
	if s != nil && (s.Version <= 0 || len(s.State) == 0) {
		return errors.Join(ErrInvalid, errors.New("a snapshot needs a positive version and a state"))
	}
	return nil
}

// Memory keeps snapshots in memory.
type Memory struct {
	mu sync.RWMutex
	m  map[transport.Ref]Snapshot
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty memory store.
func NewMemory() *Memory { return &Memory{m: map[transport.Ref]Snapshot{}} }

// Get implements Store.
func (m *Memory) Get(_ context.Context, ref transport.Ref) (Snapshot, bool, error) {
	if err := Check(ref, nil); err != nil {
		return Snapshot{}, false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.m[ref]
	s.State = append([]byte(nil), s.State...)
	return s, ok, nil
}

// Put implements Store.
func (m *Memory) Put(_ context.Context, ref transport.Ref, s Snapshot) error {
	if err := Check(ref, &s); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.m[ref]; ok && cur.Version > s.Version {
		return nil
	}
	s.State = append([]byte(nil), s.State...)
	m.m[ref] = s
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, ref transport.Ref) error {
	if err := Check(ref, nil); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, ref)
	return nil
}
