package repository

import "sync"

// sequencer keeps publishes of one aggregate in version order when several
// writers in this process race on it. A writer announces the version it is
// about to store before storing; a successful writer publishes only when no
// writer is still storing or publishing the version before its own. Since a
// store expecting N can only succeed after version N was stored, the writer
// of N had announced itself before: the later writer always sees it.
type sequencer struct {
	mu   sync.Mutex
	cond *sync.Cond
	busy map[seqKey]int // announced attempts per aggregate and version
}

type seqKey struct {
	tenant, id string
	version    int64
}

func newSequencer() *sequencer {
	s := &sequencer{busy: make(map[seqKey]int)}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// announce registers an attempt to store version.
func (s *sequencer) announce(tenant, id string, version int64) {
	s.mu.Lock()
	s.busy[seqKey{tenant, id, version}]++
	s.mu.Unlock()
}

// done ends an attempt: a failed store, or a publish finished.
func (s *sequencer) done(tenant, id string, version int64) {
	s.mu.Lock()
	k := seqKey{tenant, id, version}
	if s.busy[k]--; s.busy[k] <= 0 {
		delete(s.busy, k)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// waitTurn blocks until no attempt on the version before is under way.
func (s *sequencer) waitTurn(tenant, id string, version int64) {
	s.mu.Lock()
	for s.busy[seqKey{tenant, id, version - 1}] > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
}
