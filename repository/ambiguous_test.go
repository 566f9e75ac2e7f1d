package repository_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// stores returns the real transports the ambiguity tests run on.
func stores(t *testing.T) map[string]func() transport.Transport {
	return map[string]func() transport.Transport{
		"memory": func() transport.Transport { return memory.New() },
		"bolt": func() transport.Transport {
			b, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
			require.NoError(t, err)
			t.Cleanup(func() { _ = b.Close() })
			return b
		},
	}
}

// setups are the repository set-ups the ambiguity tests run with.
var setups = map[string][]repository.Option{
	"plain":               nil,
	"cache and snapshots": {repository.WithCache(16), repository.WithSnapshots(snapshot.NewMemory(), 1, 2)},
}

// A store answers ErrAmbiguous and lands two calls later: after the
// repository looked at version N+1 and found nothing there. The command
// runs once, its batch is stored once, and Update reports the version it
// landed at.
func TestAmbiguousStoreThatLandsLaterIsStoredOnce(t *testing.T) {
	for sname, store := range stores(t) {
		for oname, opts := range setups {
			for _, calls := range []int{1, 2, 3, 5} {
				t.Run(fmt.Sprintf("%s/%s/lands %d calls later", sname, oname, calls), func(t *testing.T) {
					ctx := context.Background()
					base := store()
					id := uuid.NewString()
					repo := newRepo(t, base, opts...)
					_, err := repo.Create(ctx, id, create)
					require.NoError(t, err)
					grow(t, repo, id, 2)
					late := faultinject.Wrap(base, faultinject.Only(faultinject.Sequence(
						faultinject.LandLater(transport.ErrAmbiguous, calls)), faultinject.OpStore))
					runs := 0
					res, err := newRepo(t, late, opts...).Update(ctx, id, func(r *aggregate.Root[counter]) error {
						runs++
						return r.Record(Incremented{By: 10})
					})
					late.Land()
					require.NoError(t, err)
					assert.Equal(t, 1, runs, "the command ran once")
					assert.Equal(t, repository.Result{Version: 4, Events: 1}, res)
					root, err := newRepo(t, base).Load(ctx, id)
					require.NoError(t, err)
					assert.Equal(t, int64(4), root.Version(), "stored once")
					assert.Equal(t, 12, root.State().Count)
				})
			}
		}
	}
}

// Over HTTP: a POST that times out and lands later (here just before the
// second request after it) is stored once, and the command ran once.
func TestAmbiguousPostThatLandsLaterIsStoredOnce(t *testing.T) {
	for _, calls := range []int{1, 2, 3, 4} {
		t.Run(fmt.Sprintf("lands %d requests later", calls), func(t *testing.T) {
			ctx := context.Background()
			mem := memory.New()
			srv := localserver.NewServer(mem, localserver.WithRateLimit(1<<30, time.Minute))
			t.Cleanup(srv.Close)
			rt := faultinject.NewRoundTripper(nil, faultinject.Only(faultinject.Sequence(
				faultinject.LandLater(transport.ErrAmbiguous, calls)), "POST"))
			client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("k", "s"),
				serialized.WithHTTPClient(&http.Client{Transport: rt}))
			require.NoError(t, err)
			id := uuid.NewString()
			_, err = newRepo(t, mem).Create(ctx, id, create)
			require.NoError(t, err)
			runs := 0
			res, err := newRepo(t, client).Update(ctx, id, func(r *aggregate.Root[counter]) error {
				runs++
				return r.Record(Incremented{By: 10})
			})
			rt.Land()
			require.NoError(t, err)
			assert.Equal(t, 1, runs)
			assert.Equal(t, int64(2), res.Version)
			assert.EqualValues(t, 1, rt.Stats().Later)
			root, err := newRepo(t, mem).Load(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, int64(2), root.Version(), "stored once")
			assert.Equal(t, 10, root.State().Count)
		})
	}
}

// A resend that conflicts with someone else's batch reruns the command on
// the fresh state, and only then.
func TestAmbiguousStoreBeatenBySomeoneElseReruns(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	other := newRepo(t, mem)
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.Fail(transport.ErrAmbiguous)), faultinject.OpStore))
	runs := 0
	res, err := newRepo(t, faulty).Update(ctx, id, func(r *aggregate.Root[counter]) error {
		runs++
		if runs == 1 {
			// Someone else takes version 2 while our first request is in
			// doubt (it never landed).
			_, err := other.Update(ctx, id, increment)
			require.NoError(t, err)
		}
		return r.Record(Incremented{By: 10})
	})
	require.NoError(t, err)
	assert.Equal(t, 2, runs)
	assert.Equal(t, int64(3), res.Version)
	root, err := newRepo(t, mem).Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 11, root.State().Count)
}

// 400 Updates from 8 writers, 30% of stores ambiguous and landing 1 to 4
// calls later (or never, when the resend wins): the count is exact, the
// subscriber sees every batch once and in version order.
func TestAmbiguousStoresRandomisedCountExactly(t *testing.T) {
	for sname, store := range stores(t) {
		for oname, opts := range setups {
			t.Run(sname+"/"+oname, func(t *testing.T) {
				ctx := context.Background()
				base := store()
				ids := []string{uuid.NewString(), uuid.NewString()}
				for _, id := range ids {
					_, err := newRepo(t, base).Create(ctx, id, create)
					require.NoError(t, err)
				}
				late := faultinject.Wrap(base, faultinject.Only(faultinject.Random(29, 0.3,
					faultinject.LandLater(transport.ErrAmbiguous, 1), faultinject.LandLater(transport.ErrAmbiguous, 2),
					faultinject.LandLater(transport.ErrAmbiguous, 3), faultinject.LandLater(transport.ErrAmbiguous, 4),
				), faultinject.OpStore))
				bus := eventbus.New()
				var mu sync.Mutex
				seen := map[string][]int64{}
				_, err := eventbus.SubscribeAll(bus, func(_ context.Context, e eventbus.Envelope) error {
					mu.Lock()
					seen[e.AggregateID] = append(seen[e.AggregateID], e.Version)
					mu.Unlock()
					return nil
				})
				require.NoError(t, err)
				repo := newRepo(t, late, append(append([]repository.Option{}, opts...),
					repository.WithPublisher(bus), zeroWait(100_000))...)
				var runs, oks atomic.Int64
				var wg sync.WaitGroup
				for g := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range 50 {
							_, err := repo.Update(ctx, ids[(g+i)%2], func(r *aggregate.Root[counter]) error {
								runs.Add(1)
								return increment(r)
							})
							if assert.NoError(t, err) {
								oks.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				late.Land()
				require.NoError(t, bus.Close(ctx))
				require.EqualValues(t, 400, oks.Load())
				total := 0
				for _, id := range ids {
					root, err := newRepo(t, base).Load(ctx, id)
					require.NoError(t, err)
					total += root.State().Count
					assert.Equal(t, int64(root.State().Count+1), root.Version(), "one batch per Update")
					v := seen[id]
					require.Len(t, v, root.State().Count, "every batch published once")
					for i := range v {
						require.Equal(t, int64(i+2), v[i], "published in version order")
					}
				}
				assert.Equal(t, 400, total, "exactly once: %d ambiguous stores, %d landed late, %d command runs",
					late.Stats().Later, late.Stats().Landed, runs.Load())
				assert.Positive(t, late.Stats().Later)
			})
		}
	}
}
