package subscription

import (
	"context"
	"fmt"
	"sync"

	"github.com/sourced-go/sourced/transport"
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
	mu    sync.Mutex
	pos   map[string]Checkpoint
	names names
}

var (
	_ Checkpoints      = (*MemoryCheckpoints)(nil)
	_ EntryCheckpoints = (*MemoryCheckpoints)(nil)
	_ Claimer          = (*MemoryCheckpoints)(nil)
	_ Resetter         = (*MemoryCheckpoints)(nil)
)

// Claim implements Claimer.
func (m *MemoryCheckpoints) Claim(name string) (func(), error) { return m.names.claim(name) }

// NewMemoryCheckpoints returns an empty checkpoint store.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{pos: map[string]Checkpoint{}}
}

// Load implements Checkpoints.
func (m *MemoryCheckpoints) Load(ctx context.Context, name string) (int64, bool, error) {
	c, ok, err := m.LoadCheckpoint(ctx, name)
	return c.Sequence, ok, err
}

// Save implements Checkpoints. A save at the sequence number the
// checkpoint already has keeps its event id.
func (m *MemoryCheckpoints) Save(_ context.Context, name string, seq int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.pos[name]; ok && cur.Sequence == seq {
		return nil
	}
	m.pos[name] = Checkpoint{Sequence: seq}
	return nil
}

// LoadCheckpoint implements EntryCheckpoints.
func (m *MemoryCheckpoints) LoadCheckpoint(_ context.Context, name string) (Checkpoint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.pos[name]
	return c, ok, nil
}

// SaveCheckpoint implements EntryCheckpoints.
func (m *MemoryCheckpoints) SaveCheckpoint(_ context.Context, name string, c Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[name] = c
	return nil
}

// ResetTo implements Resetter.
func (m *MemoryCheckpoints) ResetTo(ctx context.Context, seq int64, names ...string) error {
	if err := checkReset(seq, names); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range names {
		if m.names.held(name) && !RebuildingItself(ctx, name) {
			return fmt.Errorf("%w: %q runs on this checkpoint store: stop it before a reset", ErrNameInUse, name)
		}
	}
	for _, name := range names {
		m.pos[name] = Checkpoint{Sequence: seq}
	}
	return nil
}

// Claimer is implemented by a checkpoint store that lets one running
// subscription at a time use a name (MemoryCheckpoints and
// boltcheckpoint.Store do, within one process): Run claims its name for as
// long as it runs, and refuses to start with ErrNameInUse when another
// subscription holds it. Two subscriptions of one name would both handle
// every entry.
type Claimer interface {
	// Claim takes name, or fails with an error wrapping ErrNameInUse;
	// release gives it back.
	Claim(name string) (release func(), err error)
}

// SelfCheckpointing is implemented by a checkpoint store that hands out
// entry handlers that write the checkpoint themselves, in the transaction
// of the read model they update (boltcheckpoint.Store.Apply).
// TakeCheckpointWriters returns how many were made for a subscription's
// name since it was last asked. Run asks once, as it starts, only to
// clear the count: a count per name cannot tell this subscription's
// handlers from those made for one that never ran. The handlers refuse a
// set-up that cannot be exact themselves (ErrSetup), from what their
// context says of the running subscription.
type SelfCheckpointing interface {
	TakeCheckpointWriters(name string) int
}

// names is a set of claimed subscription names, for a Claimer.
type names struct {
	mu    sync.Mutex
	taken map[string]bool
}

// held reports whether name is claimed.
func (n *names) held(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.taken[name]
}

func (n *names) claim(name string) (func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.taken[name] {
		return nil, fmt.Errorf("%w: %q runs already on this checkpoint store (in this process)", ErrNameInUse, name)
	}
	if n.taken == nil {
		n.taken = map[string]bool{}
	}
	n.taken[name] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.taken, name)
			n.mu.Unlock()
		})
	}, nil
}

// Checkpoint is where a subscription stands, with the entry it stands on:
// the sequence number of the last entry handled, and the EventID of that
// entry's first event ("" when not known, or when the entry held no
// event). The event id tells a checkpoint the feed still holds from one
// left over from another store (reset, restored from an older backup, a
// server restarted on memory) that happens to reach the same number.
type Checkpoint struct {
	Sequence int64
	EventID  string
}

// CheckpointOf returns the Checkpoint that stands on entry.
func CheckpointOf(entry transport.FeedEntry) Checkpoint {
	c := Checkpoint{Sequence: entry.Sequence}
	if len(entry.Events) > 0 {
		c.EventID = entry.Events[0].EventID
	}
	return c
}

// EntryCheckpoints is implemented by a checkpoint store that keeps, beside
// the sequence number, which entry a checkpoint stands on. Run uses it to
// find a checkpoint that the feed no longer holds.
type EntryCheckpoints interface {
	Checkpoints
	// LoadCheckpoint returns the saved checkpoint, and false when none
	// was saved.
	LoadCheckpoint(ctx context.Context, name string) (Checkpoint, bool, error)
	// SaveCheckpoint records c as the subscription's checkpoint.
	SaveCheckpoint(ctx context.Context, name string, c Checkpoint) error
}
