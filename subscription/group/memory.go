package group

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// DefaultLeaseTime is how long a lease lasts without renewal unless a
// coordinator is told otherwise: a member that dies loses its partitions
// to the others within this time.
const DefaultLeaseTime = 10 * time.Second

// Memory is a Coordinator for the members of one process: tests, and
// read models kept in a bbolt file. Its clock is injected, so tests move
// time instead of sleeping.
type Memory struct {
	mu     sync.Mutex
	now    func() time.Time
	lease  time.Duration
	groups map[string]*memGroup
	ids    int64
}

type memGroup struct {
	partitions int
	members    map[*memMember]time.Time // live until
	leases     []memLease
}

type memLease struct {
	owner      *memMember // nil: free
	generation int64
	until      time.Time
}

var _ Coordinator = (*Memory)(nil)

// MemoryOption configures a Memory coordinator.
type MemoryOption func(*Memory)

// LeaseTime sets how long a lease lasts without renewal (default
// DefaultLeaseTime).
func LeaseTime(d time.Duration) MemoryOption {
	return func(m *Memory) {
		if d > 0 {
			m.lease = d
		}
	}
}

// NewMemory returns an in-memory coordinator reading time from now
// (time.Now when nil).
func NewMemory(now func() time.Time, opts ...MemoryOption) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, lease: DefaultLeaseTime, groups: map[string]*memGroup{}}
	for _, o := range opts {
		if o != nil {
			o(m)
		}
	}
	return m
}

// Join implements Coordinator.
func (m *Memory) Join(_ context.Context, group, member string, partitions int) (Membership, error) {
	if err := CheckJoin(group, member, partitions); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		g = &memGroup{partitions: partitions, members: map[*memMember]time.Time{}, leases: make([]memLease, partitions)}
		m.groups[group] = g
	} else if g.partitions != partitions {
		return nil, PartitionCountError(group, g.partitions, partitions)
	}
	m.ids++
	mm := &memMember{m: m, g: g, group: group, name: member, id: m.ids, changed: make(chan struct{}, 1)}
	g.members[mm] = m.now().Add(m.lease)
	g.notify(mm)
	return mm, nil
}

// notify signals every member but except.
func (g *memGroup) notify(except *memMember) {
	for o := range g.members {
		if o != except {
			select {
			case o.changed <- struct{}{}:
			default:
			}
		}
	}
}

type memMember struct {
	m       *Memory
	g       *memGroup
	group   string
	name    string
	id      int64 // tells apart two joins under one name
	changed chan struct{}
	closed  bool
}

func (mm *memMember) less(o *memMember) bool {
	if mm.name != o.name {
		return mm.name < o.name
	}
	return mm.id < o.id
}

// Sync implements Membership.
func (mm *memMember) Sync(context.Context) (State, error) {
	m, g := mm.m, mm.g
	m.mu.Lock()
	defer m.mu.Unlock()
	if mm.closed {
		return State{}, ErrClosed
	}
	now := m.now()
	g.members[mm] = now.Add(m.lease)
	left := false
	live := make([]*memMember, 0, len(g.members))
	for o, until := range g.members {
		if !until.After(now) {
			delete(g.members, o) // expired: its leases expire too
			left = true
			continue
		}
		live = append(live, o)
	}
	if left {
		g.notify(mm)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].less(live[j]) })
	share := Share(g.partitions, len(live), slices.Index(live, mm))
	var held []int
	for p := range g.leases {
		l := &g.leases[p]
		if l.owner == mm && l.until.After(now) {
			l.until = now.Add(m.lease)
			held = append(held, p)
		}
	}
	for p := range g.leases {
		if len(held) >= share {
			break
		}
		l := &g.leases[p]
		if l.owner != nil && l.until.After(now) {
			continue // held, by this member or a live other
		}
		l.owner, l.until = mm, now.Add(m.lease)
		l.generation++
		held = append(held, p)
	}
	sort.Ints(held)
	st := State{Held: make([]Fence, len(held))}
	for i, p := range held {
		st.Held[i] = Fence{Group: mm.group, Member: mm.name, Partition: p, Generation: g.leases[p].generation}
	}
	if n := len(held) - share; n > 0 {
		st.Surplus = append([]int(nil), held[len(held)-n:]...)
	}
	return st, nil
}

// Release implements Membership.
func (mm *memMember) Release(_ context.Context, partitions ...int) error {
	m := mm.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if mm.closed {
		return ErrClosed
	}
	mm.release(partitions)
	return nil
}

func (mm *memMember) release(partitions []int) {
	g := mm.g
	freed := false
	for _, p := range partitions {
		if p >= 0 && p < len(g.leases) && g.leases[p].owner == mm {
			g.leases[p].owner, g.leases[p].until = nil, time.Time{}
			freed = true
		}
	}
	if freed {
		g.notify(mm)
	}
}

// Changed implements Membership.
func (mm *memMember) Changed() <-chan struct{} { return mm.changed }

// Close implements Membership.
func (mm *memMember) Close(context.Context) error {
	m, g := mm.m, mm.g
	m.mu.Lock()
	defer m.mu.Unlock()
	if mm.closed {
		return ErrClosed
	}
	mm.closed = true
	all := make([]int, len(g.leases))
	for i := range all {
		all[i] = i
	}
	mm.release(all)
	delete(g.members, mm)
	g.notify(mm)
	return nil
}

// Check reports whether f is still the current claim of its partition
// (ErrFenced otherwise): for a read model in one process that wants to
// fence its commits with the memory coordinator.
func (m *Memory) Check(f Fence) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[f.Group]
	if g == nil || f.Partition < 0 || f.Partition >= len(g.leases) {
		return ErrFenced
	}
	l := g.leases[f.Partition]
	if l.owner == nil || l.owner.name != f.Member || l.generation != f.Generation {
		return ErrFenced
	}
	return nil
}
