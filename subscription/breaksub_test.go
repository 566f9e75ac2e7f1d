package subscription_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A handler whose commit was fenced (the member lost its partition) did
// not fail on a bad entry: under Park nothing is parked, the checkpoint
// does not move, and Run returns the error (errors.Is group.ErrFenced),
// so that group.Run drops the partition and the new owner applies the
// entries. This holds for a page handler (whose fenced page falls back
// to one entry at a time) and for an entry handler, with the error marked
// permanent (as pgcheckpoint's fenced Update does) or not (a user's store
// fenced with group.Memory.Check).
func TestFencedHandlerIsNotParked(t *testing.T) {
	for _, permanent := range []bool{true, false} {
		for _, kind := range []string{"page", "entry"} {
			t.Run(fmt.Sprintf("%s/permanent=%v", kind, permanent), func(t *testing.T) {
				tr := memory.New()
				storeN(t, tr, 3)
				cps := subscription.NewMemoryCheckpoints()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				parked := &cancelParker{cancel: cancel}
				sub, err := subscription.New(tr, "fenced", cps, subscription.Wait(time.Second), subscription.Retry(noRetry),
					subscription.OnFailure(subscription.Park(parked)))
				require.NoError(t, err)
				fenced := func() error {
					err := fmt.Errorf("commit: %w", group.ErrFenced)
					if permanent {
						return backoff.Permanent(err)
					}
					return err
				}
				if kind == "page" {
					sub.OnPage(func(context.Context, []transport.FeedEntry) error { return fenced() }, subscription.WritesCheckpoint())
				} else {
					sub.OnEntry(func(context.Context, transport.FeedEntry) error { return fenced() })
				}
				err = sub.Run(ctx)
				require.ErrorIs(t, err, group.ErrFenced, "Run stops with the fence error")
				parked.mu.Lock()
				assert.Empty(t, parked.got, "a fenced entry is not a bad entry: nothing parked")
				parked.mu.Unlock()
				_, ok, err := cps.Load(context.Background(), "fenced")
				require.NoError(t, err)
				assert.False(t, ok, "the checkpoint did not move past entries never applied")
			})
		}
	}
}

// cancelParker records what is parked and ends Run (cancel): a test whose
// entries are wrongly parked fails rather than waiting for new entries.
type cancelParker struct {
	parkRecorder
	cancel func()
}

func (p *cancelParker) Park(ctx context.Context, name string, e transport.FeedEntry, cause error) error {
	p.cancel()
	return p.parkRecorder.Park(ctx, name, e, cause)
}

// Reset to a sequence number of the tenant's feed (the numbers are the
// tenant's, whatever the type) beyond the last entry of a type feed's
// type is no stale checkpoint: the subscription of the type feed starts
// there and handles what follows, rather than failing with
// ErrStaleCheckpoint (or, with Rebuild, clearing a healthy read model).
func TestResetPastTheTypesHeadIsNotStale(t *testing.T) {
	tr := memory.New()
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: 1})       // 1
	put(t, tr, transport.Ref{Type: "customer", ID: uuid.NewString()}, "CustomerJoined", OrderPlaced{Total: 2}) // 2
	put(t, tr, transport.Ref{Type: "customer", ID: uuid.NewString()}, "CustomerJoined", OrderPlaced{Total: 3}) // 3
	cps := subscription.NewMemoryCheckpoints()
	require.NoError(t, subscription.Reset(context.Background(), cps, "orders", 3))
	sub, err := subscription.New(tr, "orders", cps, subscription.Feed("order"), subscription.Wait(time.Second), subscription.Retry(noRetry))
	require.NoError(t, err)
	got := make(chan int64, 10)
	sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error { got <- e.Sequence; return nil })
	awaitCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Run(context.Background()); cancel() }()
	if err := sub.Await(awaitCtx, 3); err != nil {
		require.NoError(t, <-done, "Run ended before it reached the reset position")
	}
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: 4}) // 4
	require.NoError(t, sub.Await(awaitCtx, 4))
	require.NoError(t, sub.Close(context.Background()))
	require.NoError(t, <-done)
	close(got)
	var seqs []int64
	for s := range got {
		seqs = append(seqs, s)
	}
	assert.Equal(t, []int64{4}, seqs, "only what follows the reset position")
}

// A subscription whose Run fails at its start (here a stale checkpoint)
// or never runs leaves no series behind: a lag of 0 for it would say it
// is up to date.
func TestMetricsNoSeriesLeftByAFailedStart(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	require.NoError(t, cps.Save(context.Background(), "stale", 5)) // the feed is empty: stale
	reg := prometheus.NewRegistry()
	sub, err := subscription.New(tr, "stale", cps, subscription.Metrics(reg), subscription.Retry(noRetry))
	require.NoError(t, err)
	sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
	require.ErrorIs(t, sub.Run(context.Background()), subscription.ErrStaleCheckpoint)
	n, err := testutil.GatherAndCount(reg, "sourced_subscription_lag", "sourced_subscription_position", "sourced_subscription_head")
	require.NoError(t, err)
	assert.Zero(t, n, "no series for a subscription that failed at its start")
}

// ResetGroup with a partition count other than the one the group's bolt
// checkpoints were kept with is refused and changes nothing: it used to
// write checkpoints under the other count, after which the group itself
// could no longer start (its Load refused the mixed counts with ErrSetup).
func TestBoltResetGroupOtherPartitionCountRefused(t *testing.T) {
	ctx := context.Background()
	_, cps := boltStore(t)
	for i := range 4 {
		require.NoError(t, cps.SaveCheckpoint(ctx, subscription.PartitionName("orders", 4, i), subscription.Checkpoint{Sequence: 5}))
	}
	err := subscription.ResetGroup(ctx, cps, "orders", 2, 0)
	require.ErrorIs(t, err, subscription.ErrReset)
	for i := range 4 {
		c, ok, err := cps.LoadCheckpoint(ctx, subscription.PartitionName("orders", 4, i))
		require.NoError(t, err, "the group with its own count still starts")
		require.True(t, ok)
		assert.Equal(t, int64(5), c.Sequence, "nothing changed")
	}
	require.NoError(t, subscription.ResetGroup(ctx, cps, "orders", 4, 0), "the group's own count resets")
}
