package subscription_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// onlyCheckpoints hides every optional interface of the store it wraps.
type onlyCheckpoints struct{ subscription.Checkpoints }

// forwardOnly is a store whose Save never moves back, and no Resetter.
type forwardOnly struct{ subscription.Checkpoints }

func (f forwardOnly) Save(ctx context.Context, name string, seq int64) error {
	if cur, ok, _ := f.Checkpoints.Load(ctx, name); ok && cur >= seq {
		return nil
	}
	return f.Checkpoints.Save(ctx, name, seq)
}

func TestResetReplays(t *testing.T) {
	ctx := context.Background()
	for _, store := range []string{"memory", "bolt", "bolt Apply", "not a Resetter"} {
		t.Run(store, func(t *testing.T) {
			tr := memory.New()
			orders(t, tr, "", 5)
			var cps subscription.Checkpoints = subscription.NewMemoryCheckpoints()
			var opts []subscription.Option
			switch store {
			case "bolt", "bolt Apply":
				_, cps = boltStore(t)
			case "not a Resetter":
				cps = onlyCheckpoints{cps}
			}
			run := func() []int64 {
				sub, err := subscription.New(tr, "list", cps, append(opts, subscription.Retry(noRetry))...)
				require.NoError(t, err)
				h := &handled{}
				if store == "bolt Apply" {
					sub.OnEntry(cps.(interface {
						Apply(string, func(context.Context, *bbolt.Tx, transport.FeedEntry) error) func(context.Context, transport.FeedEntry) error
					}).Apply(sub.Name(), func(ctx context.Context, _ *bbolt.Tx, e transport.FeedEntry) error { return h.add(ctx, e) }))
				} else {
					sub.OnEntry(h.add)
				}
				require.NoError(t, runToHead(t, sub, tr, transport.Scope{Type: transport.AllTypes}))
				return h.get()
			}
			require.Equal(t, []int64{1, 2, 3, 4, 5}, run())
			require.NoError(t, subscription.Reset(ctx, cps, "list", 2))
			assert.Equal(t, []int64{3, 4, 5}, run(), "replays what follows the position")
			require.NoError(t, subscription.Reset(ctx, cps, "list", 0))
			assert.Equal(t, []int64{1, 2, 3, 4, 5}, run(), "replays from the start")
			require.ErrorIs(t, subscription.Reset(ctx, cps, "list", -1), subscription.ErrReset)
			seq, _, err := cps.Load(ctx, "list")
			require.NoError(t, err)
			assert.Equal(t, int64(5), seq, "a refused reset changes nothing")
		})
	}
}

func TestResetFromHeadReplaysFromTheStart(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	orders(t, tr, "", 3)
	cps := subscription.NewMemoryCheckpoints()
	got, err := follow(t, tr, cps, subscription.FromHead())
	require.NoError(t, err)
	assert.Empty(t, got)
	require.NoError(t, subscription.Reset(ctx, cps, "list", 0))
	got, err = follow(t, tr, cps, subscription.FromHead())
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2, 3}, got, "reset to 0 is the start, not the head")
}

func TestResetRefused(t *testing.T) {
	ctx := context.Background()
	_, bolt := boltStore(t)
	for name, cps := range map[string]subscription.Checkpoints{
		"memory": subscription.NewMemoryCheckpoints(),
		"bolt":   bolt,
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, cps.Save(ctx, "list#0/3", 7))
			require.NoError(t, cps.Save(ctx, "list#1/3", 7))
			require.NoError(t, cps.Save(ctx, "list#2/3", 7))
			tr := memory.New()
			orders(t, tr, "", 10) // the checkpoints are not stale
			sub, err := subscription.New(tr, "list", cps, subscription.Partition(3, 2), subscription.Wait(10*time.Millisecond))
			require.NoError(t, err)
			sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
			done := start(t, sub)
			// Run has claimed its name once it stands at its checkpoint.
			// (Probing with Claim would race Run's own claim and make it
			// fail with ErrNameInUse.)
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, sub.Await(actx, 7), "Run has started from its checkpoint")

			err = subscription.ResetGroup(ctx, cps, "list", 3, 0)
			require.ErrorIs(t, err, subscription.ErrNameInUse)
			assert.Contains(t, err.Error(), "list#2/3")
			for i := range 2 { // (partition 2 runs, and may move on)
				seq, _, err := cps.Load(ctx, subscription.PartitionName("list", 3, i))
				require.NoError(t, err)
				assert.Equal(t, int64(7), seq, "nothing reset while one partition runs")
			}
			require.ErrorIs(t, subscription.ResetGroup(ctx, cps, "list", 0, 0), subscription.ErrReset)
			require.ErrorIs(t, subscription.ResetGroup(ctx, cps, "list", 3, -5), subscription.ErrReset)

			require.NoError(t, sub.Close(ctx))
			require.NoError(t, <-done)
			require.NoError(t, subscription.ResetGroup(ctx, cps, "list", 3, 4))
			for i := range 3 {
				seq, _, err := cps.Load(ctx, subscription.PartitionName("list", 3, i))
				require.NoError(t, err)
				assert.Equal(t, int64(4), seq)
			}
		})
	}
}

func TestResetNeedsAStoreThatMovesBack(t *testing.T) {
	ctx := context.Background()
	cps := forwardOnly{subscription.NewMemoryCheckpoints()}
	require.NoError(t, cps.Save(ctx, "list", 9))
	err := subscription.Reset(ctx, cps, "list", 0)
	require.ErrorIs(t, err, subscription.ErrReset)
	assert.Contains(t, err.Error(), "kept 9")
}

func TestPartitionName(t *testing.T) {
	assert.Equal(t, "list", subscription.PartitionName("list", 1, 0))
	assert.Equal(t, "list#2/4", subscription.PartitionName("list", 4, 2))
	sub, err := subscription.New(memory.New(), "list", subscription.NewMemoryCheckpoints(), subscription.Partition(4, 2))
	require.NoError(t, err)
	assert.Equal(t, subscription.PartitionName("list", 4, 2), sub.Name())
}
