package subscription_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// Apply's refusals are about the subscription it runs in, not about how
// many Apply handlers were made for a name: a subscription built and
// dropped before Run (a start-up that failed) used to make the next,
// legitimate one fail with "2 entry handlers write its checkpoint"; and an
// Apply handler kept and registered again on a rebuilt subscription beside
// another handler used to go unrefused (nothing was counted for it).
func TestApplyRefusalsAreAboutTheRunningSubscription(t *testing.T) {
	tr := memory.New()
	for range 4 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	}
	_, cps := boltStore(t)
	applied := 0
	apply := func(context.Context, *bbolt.Tx, transport.FeedEntry) error { applied++; return nil }
	build := func() *subscription.Subscription {
		sub, err := subscription.New(tr, "view", cps, subscription.Wait(time.Second))
		require.NoError(t, err)
		sub.OnEntry(cps.Apply(sub.Name(), apply))
		return sub
	}
	runUntil := func(sub *subscription.Subscription, seq int64) error {
		done := make(chan error, 1)
		go func() { done <- sub.Run(context.Background()) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sub.Await(ctx, seq); err != nil {
			_ = sub.Close(context.Background())
			return <-done
		}
		require.NoError(t, sub.Close(context.Background()))
		return <-done
	}
	require.NoError(t, runUntil(build(), 4))
	// A subscription built and dropped (a start-up that failed before Run).
	_ = build()
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	err := runUntil(build(), 5)
	require.NoError(t, err, "a restart after a dropped build runs")
	assert.Equal(t, 5, applied)

	// The same Apply handler, kept, on a rebuilt subscription beside
	// another handler: refused before it applies anything.
	sub, err := subscription.New(tr, "view", cps, subscription.Wait(time.Second))
	require.NoError(t, err)
	h := cps.Apply(sub.Name(), apply)
	sub.OnEntry(h)
	require.NoError(t, runUntil(sub, 5))
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	again, err := subscription.New(tr, "view", cps, subscription.Wait(time.Second))
	require.NoError(t, err)
	again.OnEntry(h)
	subscription.On(again, func(context.Context, eventbus.Envelope, OrderPaid) error { return nil })
	err = runUntil(again, 6)
	assert.ErrorIs(t, err, subscription.ErrSetup)
	assert.ErrorContains(t, err, "only handler")
	assert.Equal(t, 5, applied, "nothing applied beside another handler")
}
