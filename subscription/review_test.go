package subscription_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func boltStore(t *testing.T) (*bbolt.DB, *boltcheckpoint.Store) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)
	return db, cps
}

// parkRecorder records what is parked.
type parkRecorder struct {
	mu  sync.Mutex
	got []int64
}

func (p *parkRecorder) Park(_ context.Context, _ string, e transport.FeedEntry, _ error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, e.Sequence)
	return nil
}

// Close with a deadline shorter than the handler: the handler's context
// is cancelled, and its failure is not a failure. Under Park nothing is
// parked and the checkpoint stays before the entry; under Stop Run
// returns nil.
func TestCloseDeadlineNeitherParksNorPasses(t *testing.T) {
	for _, name := range []string{"park", "stop"} {
		t.Run(name, func(t *testing.T) {
			tr := memory.New()
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 1})
			put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 2})
			cps := subscription.NewMemoryCheckpoints()
			parked := &parkRecorder{}
			opts := []subscription.Option{subscription.Retry(noRetry)}
			if name == "park" {
				opts = append(opts, subscription.OnFailure(subscription.Park(parked)))
			}
			sub, err := subscription.New(tr, "slow", cps, opts...)
			require.NoError(t, err)
			entered := make(chan struct{})
			subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, _ OrderPlaced) error {
				if env.Sequence == 2 {
					close(entered)
					<-ctx.Done() // a healthy handler, slower than Close's deadline
					return ctx.Err()
				}
				return nil
			})
			done := make(chan error, 1)
			go func() { done <- sub.Run(context.Background()) }()
			<-entered
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a deadline already passed
			assert.ErrorIs(t, sub.Close(ctx), context.Canceled)
			assert.NoError(t, <-done)
			assert.Empty(t, parked.got, "a healthy entry is not parked")
			pos, _, _ := cps.Load(context.Background(), "slow")
			assert.Equal(t, int64(1), pos, "the entry in hand will be delivered again")
		})
	}
}

// withUpcast stores an old-shaped OrderSettled (upcast to OrderPaid) and a
// current OrderPaid on an order, and a payment's MoneyIn.
func withUpcast(t *testing.T) (*memory.Transport, upcaster) {
	tr := memory.New()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: "OrderSettled", Data: []byte(`{"amt":7}`)}}, transport.Any))
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 8})
	put(t, tr, transport.Ref{Type: "payment", ID: uuid.NewString()}, "OrderSettled", map[string]int{"amt": 1})
	return tr, upcaster{"order", func(typ string, data []byte) (string, []byte, error) {
		if typ != "OrderSettled" {
			return typ, data, nil
		}
		var old struct{ Amt int }
		if err := json.Unmarshal(data, &old); err != nil {
			return "", nil, err
		}
		if old.Amt < 0 {
			return "", nil, errors.New("cannot upcast a negative amount")
		}
		b, err := json.Marshal(OrderPaid{Amount: old.Amt})
		return "OrderPaid", b, err
	}}
}

// OnEntry handlers see the events upcast, and only the order's upcasters
// apply to the order's events: the payment's OrderSettled passes as it is.
func TestUpcastForEntriesAndPerType(t *testing.T) {
	tr, up := withUpcast(t)
	sub, err := subscription.New(tr, "entries", subscription.NewMemoryCheckpoints(), subscription.Wait(time.Second), subscription.Upcast(up))
	require.NoError(t, err)
	var mu sync.Mutex
	var types []string
	got := make(chan struct{}, 10)
	sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error {
		mu.Lock()
		for _, ev := range e.Events {
			types = append(types, e.AggregateType+":"+ev.EventType)
		}
		mu.Unlock()
		got <- struct{}{}
		return nil
	})
	start(t, sub)
	for range 3 {
		<-got
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"order:OrderPaid", "order:OrderPaid", "payment:OrderSettled"}, types)

	_, err = subscription.New(tr, "twice", subscription.NewMemoryCheckpoints(), subscription.Upcast(up, up))
	assert.ErrorIs(t, err, subscription.ErrSetup)
}

// An entry that fails to upcast, under Park, is parked and reaches no
// handler.
func TestUpcastFailureParkedReachesNoHandler(t *testing.T) {
	tr, up := withUpcast(t)
	require.NoError(t, tr.Store(context.Background(), transport.Ref{Type: "order", ID: uuid.NewString()},
		[]transport.Event{{EventType: "OrderSettled", Data: []byte(`{"amt":-1}`)}}, transport.Any))
	parked := &parkRecorder{}
	sub, err := subscription.New(tr, "all", subscription.NewMemoryCheckpoints(), subscription.Wait(time.Second),
		subscription.Upcast(up), subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(parked)))
	require.NoError(t, err)
	s := newSeen()
	sub.OnAll(func(_ context.Context, env eventbus.Envelope) error { s.add(env, env.EventType); return nil })
	start(t, sub)
	require.NoError(t, sub.Await(context.Background(), 4))
	_, vals := s.snapshot()
	assert.Equal(t, []any{"OrderPaid", "OrderPaid", "OrderSettled"}, vals)
	assert.Equal(t, []int64{4}, parked.got)
}

// A partition that has read to the end of the feed is caught up, though
// none of its own entries is at the head.
func TestAwaitAndLagSettleOnAPartition(t *testing.T) {
	tr := memory.New()
	for range 20 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	}
	head, err := tr.FeedHead(context.Background(), transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)
	cps := subscription.NewMemoryCheckpoints()
	var subs []*subscription.Subscription
	for n := range 2 {
		sub, err := subscription.New(tr, "pay", cps, subscription.Partition(2, n), subscription.Wait(time.Second))
		require.NoError(t, err)
		subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPaid) error { return nil })
		subs = append(subs, sub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- subscription.RunAll(ctx, subs...) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	for _, sub := range subs {
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, sub.Await(actx, head), sub.Name())
		acancel()
		lag, err := sub.Lag(context.Background())
		require.NoError(t, err)
		assert.Zero(t, lag, sub.Name())
	}
}

// boltcheckpoint refuses what it cannot keep exact.
func TestBoltCheckpointRefusesInexactSetUps(t *testing.T) {
	tr := memory.New()
	for range 6 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	}
	apply := func(context.Context, *bbolt.Tx, transport.FeedEntry) error { return nil }

	t.Run("Apply beside another handler", func(t *testing.T) {
		_, cps := boltStore(t)
		sub, err := subscription.New(tr, "view", cps)
		require.NoError(t, err)
		sub.OnEntry(cps.Apply(sub.Name(), apply))
		subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPaid) error { return errors.New("down") })
		err = sub.Run(context.Background())
		assert.ErrorIs(t, err, subscription.ErrSetup)
		assert.ErrorContains(t, err, "only handler")
	})
	t.Run("two Apply handlers", func(t *testing.T) {
		_, cps := boltStore(t)
		sub, err := subscription.New(tr, "view", cps)
		require.NoError(t, err)
		sub.OnEntry(cps.Apply(sub.Name(), apply))
		sub.OnEntry(cps.Apply(sub.Name(), apply))
		assert.ErrorIs(t, sub.Run(context.Background()), subscription.ErrSetup)
	})
	t.Run("partition count changed", func(t *testing.T) {
		_, cps := boltStore(t)
		run := func(count int, opts ...subscription.Option) error {
			var subs []*subscription.Subscription
			for n := range count {
				sub, err := subscription.New(tr, "view", cps, append(opts, subscription.Partition(count, n), subscription.Wait(time.Second))...)
				require.NoError(t, err)
				sub.OnEntry(cps.Apply(sub.Name(), apply))
				subs = append(subs, sub)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- subscription.RunAll(ctx, subs...) }()
			for _, sub := range subs {
				if err := sub.Await(ctx, 6); err != nil {
					cancel()
					return <-done
				}
			}
			cancel()
			return <-done
		}
		require.NoError(t, run(2))
		err := run(3)
		assert.ErrorIs(t, err, subscription.ErrSetup)
		assert.ErrorContains(t, err, "partition")
		assert.ErrorIs(t, run(3, subscription.FromHead()), subscription.ErrSetup)
		assert.ErrorIs(t, run(1), subscription.ErrSetup)
		require.NoError(t, run(2), "the same count goes on")
	})
}

// Two running subscriptions of one name on one checkpoint store: the
// second is refused.
func TestSameNameRunsOnce(t *testing.T) {
	tr := memory.New()
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	for name, cps := range map[string]subscription.Checkpoints{"memory": subscription.NewMemoryCheckpoints(), "bolt": func() subscription.Checkpoints { _, c := boltStore(t); return c }()} {
		t.Run(name, func(t *testing.T) {
			first, err := subscription.New(tr, "twin", cps, subscription.Wait(time.Second))
			require.NoError(t, err)
			var calls atomic.Int64
			subscription.On(first, func(context.Context, eventbus.Envelope, OrderPaid) error { calls.Add(1); return nil })
			start(t, first)
			require.NoError(t, first.Await(context.Background(), 1))
			second, err := subscription.New(tr, "twin", cps)
			require.NoError(t, err)
			subscription.On(second, func(context.Context, eventbus.Envelope, OrderPaid) error { calls.Add(1); return nil })
			assert.ErrorIs(t, second.Run(context.Background()), subscription.ErrNameInUse)
			require.NoError(t, first.Close(context.Background()))
			third, err := subscription.New(tr, "twin", cps, subscription.Wait(time.Second))
			require.NoError(t, err)
			subscription.On(third, func(context.Context, eventbus.Envelope, OrderPaid) error { calls.Add(1); return nil })
			start(t, third)
			require.NoError(t, third.Await(context.Background(), 1))
			assert.EqualValues(t, 1, calls.Load())
		})
	}
}

// A panicking handler is a failing one: under Stop, Run returns its error;
// the process lives on.
func TestHandlerPanicFollowsThePolicy(t *testing.T) {
	tr := memory.New()
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	sub, err := subscription.New(tr, "panicky", subscription.NewMemoryCheckpoints(), subscription.Retry(noRetry))
	require.NoError(t, err)
	subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPaid) error { panic("boom") })
	err = sub.Run(context.Background())
	assert.ErrorIs(t, err, eventbus.ErrPanic)
	var he *eventbus.HandlerError
	assert.ErrorAs(t, err, &he)
}

// An Apply made for another name than the subscription's (a partitioned
// subscription's Name() has a suffix) stops it at once, under Park too.
func TestApplyUnderAnotherNameStops(t *testing.T) {
	tr := memory.New()
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 1})
	_, cps := boltStore(t)
	sub, err := subscription.New(tr, "view", cps, subscription.OnFailure(subscription.Park(cps)))
	require.NoError(t, err)
	sub.OnEntry(cps.Apply("view#0/2", func(context.Context, *bbolt.Tx, transport.FeedEntry) error { return nil }))
	err = sub.Run(context.Background())
	assert.ErrorIs(t, err, subscription.ErrSetup)
	assert.ErrorContains(t, err, "sub.Name()")
	parked, err := cps.ListParked(context.Background(), "view")
	require.NoError(t, err)
	assert.Empty(t, parked)
}
