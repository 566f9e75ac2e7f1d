package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A user's Store, as a checkpoint store through Checkpoints, can be reset
// (Reset) and rebuilt from a stale checkpoint (OnStale(Rebuild)): both
// used to fail with ErrReset, since its Save never moves a checkpoint
// back, after Rebuild had cleared the read model.
func TestUserStoreResetsAndRebuilds(t *testing.T) {
	ctx := context.Background()
	store := &memStore{state: &memTx{rows: map[string]int{}, cps: map[string]subscription.Checkpoint{}}}
	cps := projection.Checkpoints(store)
	require.NoError(t, cps.SaveCheckpoint(ctx, "list", subscription.Checkpoint{Sequence: 9, EventID: "gone"}))
	require.NoError(t, subscription.Reset(ctx, cps, "list", 4))
	c, ok, err := cps.LoadCheckpoint(ctx, "list")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, subscription.Checkpoint{Sequence: 4}, c, "moved back, the entry forgotten")

	// The feed is new: 3 entries, the checkpoint at 9 is stale.
	require.NoError(t, cps.SaveCheckpoint(ctx, "list", subscription.Checkpoint{Sequence: 9, EventID: "gone"}))
	tr := memory.New()
	for i := range 3 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i + 1})
	}
	store.state.rows["stale"] = 1
	cleared := 0
	sub, err := subscription.New(tr, "list", cps, subscription.Wait(time.Second), subscription.Retry(noRetry),
		subscription.OnStale(subscription.Rebuild(func(ctx context.Context) error {
			cleared++
			return store.Update(ctx, func(_ context.Context, tx *memTx) error { clear(tx.rows); return nil })
		})))
	require.NoError(t, err)
	p := projection.New(store)
	projection.On(p, func(_ context.Context, tx *memTx, env eventbus.Envelope, e OrderPlaced) error {
		tx.rows[env.AggregateID] = e.Total
		return nil
	})
	p.Attach(sub)
	awaitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx); cancel() }()
	if err := sub.Await(awaitCtx, 3); err != nil {
		require.NoError(t, <-done, "Run ended before it rebuilt the read model")
	}
	require.NoError(t, sub.Close(ctx))
	require.NoError(t, <-done)
	assert.Equal(t, 1, cleared)
	store.mu.Lock()
	defer store.mu.Unlock()
	assert.Len(t, store.state.rows, 3, "rebuilt from the feed: the stale row cleared, the 3 entries applied")
	assert.Equal(t, int64(3), store.state.cps["list"].Sequence)
}
