package group_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// applied counts how often each sequence number was handled.
type applied struct {
	mu    sync.Mutex
	count map[int64]int
	by    map[int64]string
	more  chan struct{}
}

func newApplied() *applied {
	return &applied{count: map[int64]int{}, by: map[int64]string{}, more: make(chan struct{}, 1)}
}

func (a *applied) add(member string, seq int64) {
	a.mu.Lock()
	a.count[seq]++
	a.by[seq] = member
	a.mu.Unlock()
	select {
	case a.more <- struct{}{}:
	default:
	}
}

// waitAll waits until n distinct entries were handled, then checks that
// none was handled twice.
func (a *applied) waitAll(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		a.mu.Lock()
		got := len(a.count)
		a.mu.Unlock()
		if got >= n {
			break
		}
		select {
		case <-a.more:
		case <-deadline:
			t.Fatalf("%d of %d entries handled", got, n)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	assert.Len(t, a.count, n)
	for seq, c := range a.count {
		assert.Equal(t, 1, c, "sequence number %d handled %d times", seq, c)
	}
}

// member runs group.Run for one member and reports its assignments.
type member struct {
	cancel   context.CancelFunc
	done     chan error
	assigned chan []int
}

func startMember(t *testing.T, coord group.Coordinator, name string, feed transport.Feeder, cps subscription.Checkpoints, seen *applied) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, done: make(chan error, 1), assigned: make(chan []int, 100)}
	newSub := func(p transport.Partition, f group.Fence) (*subscription.Subscription, error) {
		assert.Equal(t, name, f.Member)
		assert.Equal(t, p.Number, f.Partition)
		sub, err := subscription.New(feed, "list", cps, subscription.Partition(p.Count, p.Number), subscription.Wait(time.Second))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error {
			if !p.Holds(e.AggregateID) {
				return fmt.Errorf("entry of partition %d in %d", transport.PartitionOf(e.AggregateID, p.Count), p.Number)
			}
			seen.add(name, e.Sequence)
			return nil
		})
		return sub, nil
	}
	go func() {
		m.done <- group.Run(ctx, coord, "list", name, 4, newSub, group.Ticks(make(chan time.Time)),
			group.OnAssign(func(ps []int) { m.assigned <- ps }))
	}()
	return m
}

func (m *member) waitFor(t *testing.T, want []int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ps := <-m.assigned:
			if slices.Equal(ps, want) {
				return
			}
		case <-deadline:
			t.Fatalf("member never held %v", want)
		}
	}
}

func (m *member) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	require.NoError(t, <-m.done)
}

func storeSome(t *testing.T, tr transport.Transport, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		ref := transport.Ref{Type: "order", ID: uuid.NewString()}
		data, _ := json.Marshal(map[string]int{"n": i})
		require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any))
	}
}

func TestRunSharesPartitionsAndHandsOver(t *testing.T) {
	tr := memory.New()
	coord := group.NewMemory(newClock().Now)
	cps := subscription.NewMemoryCheckpoints()
	seen := newApplied()

	a := startMember(t, coord, "a", tr, cps, seen)
	a.waitFor(t, []int{0, 1, 2, 3})
	storeSome(t, tr, 0, 100)
	seen.waitAll(t, 100)

	b := startMember(t, coord, "b", tr, cps, seen)
	b.waitFor(t, []int{2, 3})
	a.waitFor(t, []int{0, 1})
	storeSome(t, tr, 100, 100)
	seen.waitAll(t, 200)
	seen.mu.Lock()
	byMember := map[string]int{}
	for seq, who := range seen.by {
		if seq > 100 {
			byMember[who]++
		}
	}
	seen.mu.Unlock()
	assert.Positive(t, byMember["a"])
	assert.Positive(t, byMember["b"])

	a.stop(t) // graceful: b takes everything at once
	b.waitFor(t, []int{0, 1, 2, 3})
	storeSome(t, tr, 200, 50)
	seen.waitAll(t, 250)
	b.stop(t)
}

func TestRunFailingSubscriptionEndsRun(t *testing.T) {
	tr := memory.New()
	storeSome(t, tr, 0, 10)
	coord := group.NewMemory(nil)
	boom := errors.New("boom")
	newSub := func(p transport.Partition, _ group.Fence) (*subscription.Subscription, error) {
		sub, err := subscription.New(tr, "fail", subscription.NewMemoryCheckpoints(), subscription.Partition(p.Count, p.Number),
			subscription.Retry(noRetry))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(func(context.Context, transport.FeedEntry) error { return boom })
		return sub, nil
	}
	err := group.Run(context.Background(), coord, "fail", "a", 2, newSub, group.Ticks(make(chan time.Time)))
	require.ErrorIs(t, err, boom)
	// The member left: another takes everything.
	m, err := coord.Join(context.Background(), "fail", "b", 2)
	require.NoError(t, err)
	assert.Len(t, sync1(t, m).Held, 2)
	require.NoError(t, m.Close(context.Background()))
}

func TestRunPartitionCountMismatch(t *testing.T) {
	coord := group.NewMemory(nil)
	m, err := coord.Join(context.Background(), "g", "a", 4)
	require.NoError(t, err)
	defer m.Close(context.Background())
	err = group.Run(context.Background(), coord, "g", "b", 3, func(transport.Partition, group.Fence) (*subscription.Subscription, error) {
		t.Fatal("no subscription on a mismatch")
		return nil, nil
	})
	require.ErrorIs(t, err, group.ErrPartitionCount)
}

// flaky wraps a coordinator whose Syncs fail while down is set.
type flaky struct {
	group.Coordinator
	down *atomic.Bool
}

func (f flaky) Join(ctx context.Context, g, m string, n int) (group.Membership, error) {
	ms, err := f.Coordinator.Join(ctx, g, m, n)
	return flakyMember{ms, f.down}, err
}

type flakyMember struct {
	group.Membership
	down *atomic.Bool
}

func (f flakyMember) Sync(ctx context.Context) (group.State, error) {
	if f.down.Load() {
		return group.State{}, errors.New("coordinator unreachable")
	}
	return f.Membership.Sync(ctx)
}

// A member that cannot reach its coordinator keeps its partitions for a
// while, then stops them all before the others may claim them; it starts
// them again once Sync works.
func TestRunGivesUpWhenSyncKeepsFailing(t *testing.T) {
	tr := memory.New()
	clk := newClock()
	down := &atomic.Bool{}
	coord := flaky{group.NewMemory(clk.Now), down}
	seen := newApplied()
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	assigned := make(chan []int, 100)
	result := make(chan error, 1)
	go func() {
		result <- group.Run(ctx, coord, "g", "a", 2, func(p transport.Partition, _ group.Fence) (*subscription.Subscription, error) {
			sub, err := subscription.New(tr, "g", subscription.NewMemoryCheckpoints(), subscription.Partition(p.Count, p.Number))
			if err != nil {
				return nil, err
			}
			sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error { seen.add("a", e.Sequence); return nil })
			return sub, nil
		}, group.Ticks(ticks), group.Clock(clk.Now), group.GiveUpAfter(8*time.Second), group.OnAssign(func(ps []int) { assigned <- ps }))
	}()
	m := &member{cancel: cancel, done: result, assigned: assigned}
	m.waitFor(t, []int{0, 1})

	down.Store(true)
	clk.Add(7 * time.Second)
	ticks <- clk.Now() // fails, but within the limit: keeps running
	ticks <- clk.Now() // (returns once the tick before was handled)
	select {
	case ps := <-assigned:
		t.Fatalf("partitions changed to %v within the limit", ps)
	default:
	}
	clk.Add(2 * time.Second)
	ticks <- clk.Now() // 9 s since the last good sync: stops everything
	m.waitFor(t, nil)
	down.Store(false)
	ticks <- clk.Now()
	m.waitFor(t, []int{0, 1})
	m.stop(t)
}

func TestMemberLagAndPartitions(t *testing.T) {
	tr := memory.New()
	storeSome(t, tr, 0, 10)
	gate := make(chan struct{})
	assigned := make(chan []int, 100)
	m, err := group.NewMember(group.NewMemory(nil), "lag", "a", 2, func(p transport.Partition, _ group.Fence) (*subscription.Subscription, error) {
		sub, err := subscription.New(tr, "lag", subscription.NewMemoryCheckpoints(), subscription.Partition(p.Count, p.Number))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(func(context.Context, transport.FeedEntry) error { <-gate; return nil })
		return sub, nil
	}, group.Ticks(make(chan time.Time)), group.OnAssign(func(ps []int) { assigned <- ps }))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- m.Run(ctx) }()
	(&member{assigned: assigned}).waitFor(t, []int{0, 1})
	assert.Equal(t, []int{0, 1}, m.Partitions())
	lag, err := m.Lag(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[int]int64{0: 10, 1: 10}, lag, "nothing handled yet: every partition 10 behind the head")
	close(gate)
	cancel()
	require.NoError(t, <-result)
	assert.Empty(t, m.Partitions())
	require.ErrorIs(t, m.Run(context.Background()), group.ErrClosed, "a member runs once")
	_, err = group.NewMember(nil, "g", "a", 1, nil)
	require.ErrorIs(t, err, group.ErrInvalid)
}
