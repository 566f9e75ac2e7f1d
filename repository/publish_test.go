package repository_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
)

// finishes fails the test when fn does not return in time: a guard
// against a hang, not a speed assertion.
func finishes(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("deadlock: %s", what)
	}
}

// versionLog records the versions a subscriber sees, per aggregate.
type versionLog struct {
	mu   sync.Mutex
	seen map[string][]int64
}

func (v *versionLog) add(e eventbus.Envelope) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = map[string][]int64{}
	}
	v.seen[e.AggregateID] = append(v.seen[e.AggregateID], e.Version)
}

func (v *versionLog) of(id string) []int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]int64(nil), v.seen[id]...)
}

// A sync subscriber that updates the aggregate whose event it handles
// (passing its ctx on) does not deadlock; every subscriber, before and
// after it, sees the versions in order.
func TestSyncSubscriberUpdatesTheSameAggregate(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	repo := newRepo(t, memory.New(), repository.WithPublisher(bus))
	var before, after, async versionLog
	_, err := eventbus.SubscribeAggregate(bus, "counter", func(_ context.Context, e eventbus.Envelope) error { before.add(e); return nil })
	require.NoError(t, err)
	_, err = eventbus.Subscribe(bus, func(ctx context.Context, env eventbus.Envelope, e Incremented) error {
		if e.By < 3 { // a reaction: two more updates of the same aggregate
			_, err := repo.Update(ctx, env.AggregateID, func(r *aggregate.Root[counter]) error {
				return r.Record(Incremented{By: e.By + 1})
			})
			return err
		}
		return nil
	})
	require.NoError(t, err)
	_, err = eventbus.SubscribeAggregate(bus, "counter", func(_ context.Context, e eventbus.Envelope) error { after.add(e); return nil })
	require.NoError(t, err)
	_, err = eventbus.SubscribeAggregate(bus, "counter", func(_ context.Context, e eventbus.Envelope) error { async.add(e); return nil }, eventbus.Async())
	require.NoError(t, err)
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, create)
	require.NoError(t, err)
	finishes(t, "a sync subscriber updating the same aggregate", func() {
		_, err := repo.Update(ctx, id, increment)
		assert.NoError(t, err)
	})
	require.NoError(t, bus.Close(ctx))
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 1+2+3, root.State().Count)
	for name, log := range map[string]*versionLog{"before": &before, "after": &after, "async": &async} {
		assert.Equal(t, []int64{1, 2, 3, 4}, log.of(id), name)
	}
}

// A sync handler that does not pass its ctx on cannot be told from another
// writer: its publish waits for the outer one, but only as long as its own
// ctx lets it.
func TestPublishWaitHonoursContext(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	defer bus.Close(ctx)
	repo := newRepo(t, memory.New(), repository.WithPublisher(bus))
	_, err := eventbus.Subscribe(bus, func(_ context.Context, env eventbus.Envelope, e Incremented) error {
		if e.By != 1 {
			return nil
		}
		own, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := repo.Update(own, env.AggregateID, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{By: 2}) })
		return err
	})
	require.NoError(t, err)
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, create)
	require.NoError(t, err)
	finishes(t, "a publish waiting for its turn past its ctx", func() {
		_, err := repo.Update(ctx, id, increment)
		assert.ErrorIs(t, err, repository.ErrPublish)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// Two repositories on one bus keep one order per aggregate: the
// sequencer is the bus's.
func TestPublishOrderAcrossRepositories(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	var log versionLog
	_, err := eventbus.SubscribeAll(bus, func(_ context.Context, e eventbus.Envelope) error { log.add(e); return nil }, eventbus.Async())
	require.NoError(t, err)
	mem := memory.New()
	repos := []*repository.Repository[counter]{
		newRepo(t, mem, repository.WithPublisher(bus), zeroWait(100_000)),
		newRepo(t, mem, repository.WithPublisher(bus), zeroWait(100_000)),
	}
	id := uuid.NewString()
	_, err = repos[0].Create(ctx, id, create)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, err := repos[g%2].Update(ctx, id, increment)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, bus.Close(ctx))
	seen := log.of(id)
	require.Len(t, seen, 401)
	for i, v := range seen {
		require.Equal(t, int64(i+1), v, "delivery %d", i)
	}
}

// signalStore tells when a Store returned.
type signalStore struct {
	transport.Transport
	stored chan struct{}
}

func (s *signalStore) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	err := s.Transport.Store(ctx, ref, events, expected)
	s.stored <- struct{}{}
	return err
}

// hookBackOff runs hook before the first retry, then retries at once.
type hookBackOff struct {
	once sync.Once
	hook func()
}

func (h *hookBackOff) NextBackOff() time.Duration { h.once.Do(h.hook); return 0 }
func (h *hookBackOff) Reset()                     {}

// A batch whose ambiguous store is found to have landed waits its turn:
// a writer that stored the next version meanwhile publishes after it.
func TestLandedBatchWaitsItsTurn(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	var log versionLog
	_, err := eventbus.SubscribeAll(bus, func(_ context.Context, e eventbus.Envelope) error { log.add(e); return nil })
	require.NoError(t, err)
	mem := memory.New()
	id := uuid.NewString()
	_, err = newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	other := &signalStore{Transport: mem, stored: make(chan struct{}, 1)}
	otherRepo := newRepo(t, other, repository.WithPublisher(bus))
	otherDone := make(chan struct{})
	hook := func() {
		// While our first store is in doubt (it landed as version 2),
		// another writer stores version 3.
		go func() {
			defer close(otherDone)
			_, err := otherRepo.Update(ctx, id, increment)
			assert.NoError(t, err)
		}()
		<-other.stored
	}
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.FailAfter(transport.ErrAmbiguous)), faultinject.OpStore))
	repo := newRepo(t, faulty, repository.WithPublisher(bus),
		repository.WithRetry(func() backoff.BackOff { return &hookBackOff{hook: hook} }))
	finishes(t, "a landed batch and the next one", func() {
		res, err := repo.Update(ctx, id, increment)
		assert.NoError(t, err)
		assert.Equal(t, int64(2), res.Version)
		<-otherDone
	})
	require.NoError(t, bus.Close(ctx))
	assert.Equal(t, []int64{2, 3}, log.of(id))
}

// A panic inside the transport's Store gives the version slot back: the
// next Update of that aggregate publishes.
func TestPanicInStoreReleasesTheSlot(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	defer bus.Close(ctx)
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	repo := newRepo(t, &panicStore{Transport: mem}, repository.WithPublisher(bus))
	assert.Panics(t, func() { _, _ = repo.Update(ctx, id, increment) })
	finishes(t, "an Update after a panic in Store", func() {
		_, err := repo.Update(ctx, id, increment)
		assert.NoError(t, err)
	})
}

// panicStore stores, then panics, the first time.
type panicStore struct {
	transport.Transport
	once sync.Once
}

func (p *panicStore) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	err := p.Transport.Store(ctx, ref, events, expected)
	p.once.Do(func() { panic("store panicked") })
	return err
}

// panicPublisher hands events to a bus, then panics after publishing
// version 2, once.
type panicPublisher struct {
	*eventbus.Bus
	once sync.Once
}

func (p *panicPublisher) Publish(ctx context.Context, events []eventbus.Envelope) error {
	err := p.Bus.Publish(ctx, events)
	if events[0].Version == 2 {
		p.once.Do(func() { panic("publisher panicked") })
	}
	return err
}

// A publisher that panics gives back the version slots of its batch and of
// the batches sync handlers wrote meanwhile (here version 3).
func TestPanicInPublishReleasesTheSlots(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	defer bus.Close(ctx)
	pub := &panicPublisher{Bus: bus}
	mem := memory.New()
	repo := newRepo(t, mem, repository.WithPublisher(pub))
	_, err := eventbus.Subscribe(bus, func(ctx context.Context, env eventbus.Envelope, e Incremented) error {
		if env.Version == 2 {
			_, err := repo.Update(ctx, env.AggregateID, increment)
			return err
		}
		return nil
	})
	require.NoError(t, err)
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, create)
	require.NoError(t, err)
	assert.Panics(t, func() { _, _ = repo.Update(ctx, id, increment) })
	finishes(t, "an Update after a panic in Publish", func() {
		_, err := repo.Update(ctx, id, increment)
		assert.NoError(t, err)
	})
}
