package repository_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
)

// Two repositories on one bus, both behind stores that are often
// ambiguous and land later; a sync subscriber mirrors every source
// increment into a mirror aggregate through the other repository, with the
// ctx it was given. Every write is counted exactly, and every subscriber
// (sync before, sync after, async) sees each aggregate's versions once and
// in order.
func TestTwoRepositoriesAmbiguousAndAWritingSyncSubscriber(t *testing.T) {
	for sname, store := range stores(t) {
		for oname, opts := range setups {
			t.Run(sname+"/"+oname, func(t *testing.T) {
				ctx := context.Background()
				base := store()
				sources := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
				mirrors := map[string]string{}
				for _, id := range sources {
					mirrors[id] = uuid.NewString()
				}
				bus := eventbus.New()
				fault := func(seed uint64) *faultinject.Transport {
					return faultinject.Wrap(base, faultinject.Only(faultinject.Random(seed, 0.3,
						faultinject.LandLater(transport.ErrAmbiguous, 1), faultinject.LandLater(transport.ErrAmbiguous, 3),
						faultinject.Fail(transport.ErrAmbiguous)), faultinject.OpStore))
				}
				lateA, lateB := fault(1), fault(2)
				ropts := func() []repository.Option {
					return append(append([]repository.Option{}, opts...), repository.WithPublisher(bus), zeroWait(100_000))
				}
				repoA, repoB := newRepo(t, lateA, ropts()...), newRepo(t, lateB, ropts()...)
				for _, id := range sources {
					_, err := repoA.Create(ctx, id, create)
					require.NoError(t, err)
					_, err = repoB.Create(ctx, mirrors[id], create)
					require.NoError(t, err)
				}
				var mu sync.Mutex
				seen := map[string]map[string][]int64{}
				record := func(who string) func(context.Context, eventbus.Envelope) error {
					return func(_ context.Context, e eventbus.Envelope) error {
						mu.Lock()
						defer mu.Unlock()
						if seen[who] == nil {
							seen[who] = map[string][]int64{}
						}
						seen[who][e.AggregateID] = append(seen[who][e.AggregateID], e.Version)
						return nil
					}
				}
				_, err := eventbus.SubscribeAll(bus, record("sync before"))
				require.NoError(t, err)
				var mirrorErrs atomic.Int64
				_, err = eventbus.SubscribeAll(bus, func(hctx context.Context, e eventbus.Envelope) error {
					m, ok := mirrors[e.AggregateID]
					if !ok || e.EventType != "Incremented" {
						return nil
					}
					if _, err := repoB.Update(hctx, m, increment); err != nil {
						mirrorErrs.Add(1)
						return err
					}
					return nil
				})
				require.NoError(t, err)
				_, err = eventbus.SubscribeAll(bus, record("sync after"))
				require.NoError(t, err)
				_, err = eventbus.SubscribeAll(bus, record("async"), eventbus.Async(), eventbus.Workers(3))
				require.NoError(t, err)

				const writers, each = 6, 40
				var wg sync.WaitGroup
				for g := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range each {
							_, err := repoA.Update(ctx, sources[(g+i)%len(sources)], increment)
							assert.NoError(t, err)
						}
					}()
				}
				wg.Wait()
				lateA.Land()
				lateB.Land()
				require.NoError(t, bus.Close(ctx))
				require.Zero(t, mirrorErrs.Load())
				total := 0
				for _, id := range sources {
					src, err := newRepo(t, base).Load(ctx, id)
					require.NoError(t, err)
					mir, err := newRepo(t, base).Load(ctx, mirrors[id])
					require.NoError(t, err)
					total += src.State().Count
					assert.Equal(t, src.State().Count, mir.State().Count, "one mirror write per source write")
					assert.Equal(t, src.Version(), int64(src.State().Count+1))
					assert.Equal(t, mir.Version(), int64(mir.State().Count+1))
					for _, who := range []string{"sync before", "sync after", "async"} {
						for _, agg := range []*aggregate.Root[counter]{src, mir} {
							v := seen[who][agg.ID()]
							// Subscribed after the creates: versions 2 on.
							want := make([]int64, agg.Version()-1)
							for i := range want {
								want[i] = int64(i + 2)
							}
							assert.Equal(t, want, v, fmt.Sprintf("%s sees %s once and in order", who, agg.ID()))
						}
					}
				}
				assert.Equal(t, writers*each, total)
				t.Logf("A %+v B %+v", lateA.Stats(), lateB.Stats())
			})
		}
	}
}

// bus.Close in the middle of writes whose stores are often ambiguous and
// land later, with a full async queue and a sync subscriber that writes:
// every Update stores exactly once (success, or ErrPublish once the bus is
// closed), Close returns, and no goroutine is left behind.
func TestBusCloseDuringAmbiguousWrites(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	mem := memory.New()
	ids := []string{uuid.NewString(), uuid.NewString()}
	mirror := uuid.NewString()
	for _, id := range append(ids, mirror) {
		_, err := newRepo(t, mem).Create(ctx, id, create)
		require.NoError(t, err)
	}
	late := faultinject.Wrap(mem, faultinject.Only(faultinject.Random(7, 0.3,
		faultinject.LandLater(transport.ErrAmbiguous, 1), faultinject.LandLater(transport.ErrAmbiguous, 2)), faultinject.OpStore))
	bus := eventbus.New()
	repo := newRepo(t, late, repository.WithPublisher(bus), zeroWait(100_000))
	var published atomic.Int64
	closed := make(chan error, 1)
	release := make(chan struct{})
	_, err := eventbus.SubscribeAll(bus, func(hctx context.Context, e eventbus.Envelope) error {
		if e.AggregateID == mirror {
			return nil
		}
		if published.Add(1) == 1 {
			go func() {
				cctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				closed <- bus.Close(cctx)
				close(release)
			}()
		}
		_, err := repo.Update(hctx, mirror, increment)
		return err
	})
	require.NoError(t, err)
	_, err = eventbus.SubscribeAll(bus, func(hctx context.Context, _ eventbus.Envelope) error {
		select {
		case <-release:
		case <-hctx.Done(): // Close's deadline
		}
		return nil
	}, eventbus.Async(), eventbus.QueueSize(1))
	require.NoError(t, err)
	var stored atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				_, err := repo.Update(ctx, ids[(g+i)%2], increment)
				if err == nil || errors.Is(err, repository.ErrPublish) {
					stored.Add(1)
				} else {
					t.Errorf("update: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	late.Land()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	total := 0
	for _, id := range ids {
		root, err := newRepo(t, mem).Load(ctx, id)
		require.NoError(t, err)
		total += root.State().Count
		assert.Equal(t, int64(root.State().Count+1), root.Version(), "one batch per Update")
	}
	assert.EqualValues(t, 160, stored.Load())
	assert.Equal(t, 160, total)
}
