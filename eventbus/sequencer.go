package eventbus

import (
	"context"
	"sync"
)

// Sequencer keeps the publishes of each aggregate in version order when
// several writers race on it. A writer announces the version it is about to
// store before storing, keeps the announcement while the outcome of its store
// is unknown, and ends it (Done) when its store failed or its publish is
// over; a writer whose store succeeded publishes only after Wait, which
// returns when no writer is storing or publishing the version before its
// own. Since a store expecting N can only succeed after version N was
// stored, the writer of N had announced itself before: a later writer always
// sees it.
//
// Every Bus has one (Bus.Sequencer), so that all the repositories publishing
// to a bus keep one order per aggregate. It is safe for concurrent use.
type Sequencer struct {
	mu   sync.Mutex
	busy map[seqKey]slot
}

type seqKey struct {
	tenant, typ, id string
	version         int64
}

// slot counts the attempts on one version; ch, made when someone waits, is
// closed when the count falls to zero.
type slot struct {
	n  int
	ch chan struct{}
}

// NewSequencer returns a sequencer with nothing announced.
func NewSequencer() *Sequencer { return &Sequencer{busy: make(map[seqKey]slot)} }

// Announce registers an attempt to store version of an aggregate.
func (s *Sequencer) Announce(tenant, aggregateType, id string, version int64) {
	k := seqKey{tenant, aggregateType, id, version}
	s.mu.Lock()
	sl := s.busy[k]
	sl.n++
	s.busy[k] = sl
	s.mu.Unlock()
}

// Done ends an attempt that Announce registered: a failed store, or a
// publish finished.
func (s *Sequencer) Done(tenant, aggregateType, id string, version int64) {
	k := seqKey{tenant, aggregateType, id, version}
	s.mu.Lock()
	if sl, ok := s.busy[k]; ok {
		if sl.n--; sl.n <= 0 {
			delete(s.busy, k)
			if sl.ch != nil {
				close(sl.ch)
			}
		} else {
			s.busy[k] = sl
		}
	}
	s.mu.Unlock()
}

// Wait blocks until no attempt on the version before version is under way,
// or ctx ends (then it returns ctx's error).
func (s *Sequencer) Wait(ctx context.Context, tenant, aggregateType, id string, version int64) error {
	k := seqKey{tenant, aggregateType, id, version - 1}
	for {
		s.mu.Lock()
		sl, ok := s.busy[k]
		if !ok {
			s.mu.Unlock()
			return nil
		}
		if sl.ch == nil {
			sl.ch = make(chan struct{})
			s.busy[k] = sl
		}
		ch := sl.ch
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
