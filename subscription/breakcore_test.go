package subscription_test

import (
	"context"
	"sync/atomic"
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

// An Apply whose function panics inside its bbolt transaction: the
// transaction is rolled back (the file is not left locked), the panic is a
// handler failure, and the policy decides: under Park the entry is parked
// and the rest applied once; under Stop Run returns ErrPanic and a restart
// applies the entry then, once.
func TestApplyPanicFollowsThePolicy(t *testing.T) {
	for _, policy := range []string{"park", "stop"} {
		t.Run(policy, func(t *testing.T) {
			tr := memory.New()
			for range 3 {
				put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
			}
			db, cps := boltStore(t)
			var boom atomic.Bool
			boom.Store(true)
			apply := func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
				b, err := tx.CreateBucketIfNotExists([]byte("model"))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(e.AggregateID), []byte{1}); err != nil {
					return err
				}
				if e.Sequence == 2 && boom.Load() {
					panic("boom")
				}
				return nil
			}
			run := func() error {
				opts := []subscription.Option{subscription.Retry(noRetry), subscription.Wait(time.Second)}
				if policy == "park" {
					opts = append(opts, subscription.OnFailure(subscription.Park(cps)))
				}
				sub, err := subscription.New(tr, "view", cps, opts...)
				require.NoError(t, err)
				sub.OnEntry(cps.Apply(sub.Name(), apply))
				done := make(chan error, 1)
				go func() { done <- sub.Run(context.Background()) }()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				select {
				case err := <-done:
					return err
				case <-func() chan struct{} {
					ch := make(chan struct{})
					go func() { _ = sub.Await(ctx, 3); close(ch) }()
					return ch
				}():
				}
				require.NoError(t, sub.Close(context.Background()))
				return <-done
			}
			err := run()
			if policy == "stop" {
				require.ErrorIs(t, err, eventbus.ErrPanic)
				boom.Store(false)
				require.NoError(t, run())
			} else {
				require.NoError(t, err)
				parked, err := cps.ListParked(context.Background(), "view")
				require.NoError(t, err)
				require.Len(t, parked, 1)
				assert.EqualValues(t, 2, parked[0].Entry.Sequence)
			}
			n := 0
			require.NoError(t, db.View(func(tx *bbolt.Tx) error {
				if b := tx.Bucket([]byte("model")); b != nil {
					n = b.Stats().KeyN
				}
				return nil
			}))
			want := 3
			if policy == "park" {
				want = 2 // the parked entry's writes were rolled back
			}
			assert.Equal(t, want, n)
		})
	}
}
