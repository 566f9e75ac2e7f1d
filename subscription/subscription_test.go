package subscription_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func TestMain(m *testing.M) {
	if runCrashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

type OrderPlaced struct {
	Total int `json:"total"`
}

type OrderPaid struct {
	Amount int `json:"amount"`
}

func put(t testing.TB, tr transport.Transport, ref transport.Ref, typ string, data any) {
	t.Helper()
	b, err := json.Marshal(data)
	require.NoError(t, err)
	require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: typ, Data: b}}, transport.Any))
}

func noRetry() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) }

// seen collects what handlers receive and lets a test wait for a count.
type seen struct {
	mu   sync.Mutex
	envs []eventbus.Envelope
	vals []any
	more chan struct{}
}

func newSeen() *seen { return &seen{more: make(chan struct{}, 1000)} }

func (s *seen) add(env eventbus.Envelope, v any) {
	s.mu.Lock()
	s.envs = append(s.envs, env)
	s.vals = append(s.vals, v)
	s.mu.Unlock()
	s.more <- struct{}{}
}

func (s *seen) waitFor(t *testing.T, n int) {
	t.Helper()
	for {
		s.mu.Lock()
		got := len(s.envs)
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-s.more:
		case <-time.After(10 * time.Second):
			t.Fatalf("waited for %d deliveries, got %d", n, got)
		}
	}
}

func (s *seen) snapshot() ([]eventbus.Envelope, []any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]eventbus.Envelope(nil), s.envs...), append([]any(nil), s.vals...)
}

func start(t *testing.T, sub *subscription.Subscription) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sub.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sub.Close(ctx)
	})
	return done
}

func typed(s *seen, sub *subscription.Subscription) {
	subscription.On(sub, func(_ context.Context, env eventbus.Envelope, e OrderPlaced) error { s.add(env, e); return nil })
	subscription.On(sub, func(_ context.Context, env eventbus.Envelope, e OrderPaid) error { s.add(env, e); return nil })
}

func TestCatchUpThenLive(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	a, b := transport.Ref{Type: "order", ID: uuid.NewString()}, transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, a, "OrderPlaced", OrderPlaced{Total: 10})
	put(t, tr, b, "OrderPlaced", OrderPlaced{Total: 20})
	put(t, tr, transport.Ref{Type: "payment", ID: uuid.NewString()}, "PaymentProcessed", map[string]int{"amount": 1})
	put(t, tr, a, "OrderPaid", OrderPaid{Amount: 10})

	s := newSeen()
	sub, err := subscription.New(tr, "orders", cps, subscription.Wait(time.Second))
	require.NoError(t, err)
	typed(s, sub)
	done := start(t, sub)
	s.waitFor(t, 3)

	put(t, tr, b, "OrderPaid", OrderPaid{Amount: 20})
	s.waitFor(t, 4)
	require.NoError(t, sub.Close(context.Background()))
	require.NoError(t, <-done)

	envs, vals := s.snapshot()
	require.Len(t, envs, 4)
	assert.Equal(t, []any{OrderPlaced{10}, OrderPlaced{20}, OrderPaid{10}, OrderPaid{20}}, vals)
	assert.Equal(t, []int64{1, 2, 4, 5}, []int64{envs[0].Sequence, envs[1].Sequence, envs[2].Sequence, envs[3].Sequence})
	assert.Equal(t, a.ID, envs[2].AggregateID)
	assert.Equal(t, int64(2), envs[2].Version)
	assert.False(t, envs[0].Stored.IsZero())
	assert.NotEmpty(t, envs[0].EventID)
	pos, ok, err := cps.Load(context.Background(), "orders")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(5), pos)

	// A restart resumes at the checkpoint.
	put(t, tr, a, "OrderPaid", OrderPaid{Amount: 1})
	s2 := newSeen()
	sub2, err := subscription.New(tr, "orders", cps, subscription.Wait(time.Second))
	require.NoError(t, err)
	typed(s2, sub2)
	done = start(t, sub2)
	s2.waitFor(t, 1)
	require.NoError(t, sub2.Close(context.Background()))
	require.NoError(t, <-done)
	envs, _ = s2.snapshot()
	require.Len(t, envs, 1)
	assert.Equal(t, int64(6), envs[0].Sequence)
}

func TestFromHead(t *testing.T) {
	tr := memory.New()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 1})
	s := newSeen()
	cps := subscription.NewMemoryCheckpoints()
	sub, err := subscription.New(tr, "new-only", cps, subscription.FromHead(), subscription.Feed("order"))
	require.NoError(t, err)
	typed(s, sub)
	start(t, sub)
	// The head is taken (and saved) when Run starts.
	require.Eventually(t, func() bool { _, ok, _ := cps.Load(context.Background(), "new-only"); return ok }, 10*time.Second, time.Millisecond)
	lag := func() int64 {
		n, err := sub.Lag(context.Background())
		require.NoError(t, err)
		return n
	}
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 1})
	s.waitFor(t, 1)
	envs, _ := s.snapshot()
	require.Len(t, envs, 1)
	assert.Equal(t, "OrderPaid", envs[0].EventType)
	require.Eventually(t, func() bool { return lag() == 0 }, 10*time.Second, time.Millisecond)
}

func TestLagBeforeRun(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	for range 5 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{})
	}
	require.NoError(t, cps.Save(context.Background(), "late", 2))
	sub, err := subscription.New(tr, "late", cps)
	require.NoError(t, err)
	lag, err := sub.Lag(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(3), lag)
}

func TestPartitionsShareTheFeed(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	refs := make([]transport.Ref, 20)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	total := 0
	for round := range 3 {
		for _, r := range refs {
			put(t, tr, r, "OrderPaid", OrderPaid{Amount: round})
			total++
		}
	}
	s := newSeen()
	var subs []*subscription.Subscription
	for n := range 3 {
		sub, err := subscription.New(tr, "pay", cps, subscription.Partition(3, n), subscription.Wait(time.Second))
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("pay#%d/3", n), sub.Name())
		subscription.On(sub, func(_ context.Context, env eventbus.Envelope, e OrderPaid) error { s.add(env, e); return nil })
		subs = append(subs, sub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- subscription.RunAll(ctx, subs...) }()
	s.waitFor(t, total)
	cancel()
	require.NoError(t, <-done)

	envs, vals := s.snapshot()
	require.Len(t, envs, total, "each batch exactly once across the partitions")
	seq := map[int64]bool{}
	last := map[string]int{}
	for i, env := range envs {
		assert.False(t, seq[env.Sequence])
		seq[env.Sequence] = true
		amount := vals[i].(OrderPaid).Amount
		if prev, ok := last[env.AggregateID]; ok {
			assert.Equal(t, prev+1, amount, "an aggregate's batches in order")
		}
		last[env.AggregateID] = amount
	}
}

func TestFailingHandlerStops(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 1})
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 1})
	put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 2})
	boom := errors.New("mail server down")
	attempts := 0
	sub, err := subscription.New(tr, "mailer", cps, subscription.Retry(noRetry))
	require.NoError(t, err)
	var handled []int64
	subscription.On(sub, func(_ context.Context, env eventbus.Envelope, e OrderPlaced) error {
		handled = append(handled, env.Sequence)
		return nil
	})
	subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPaid) error {
		attempts++
		return boom
	})
	err = sub.Run(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, boom)
	assert.ErrorIs(t, err, eventbus.ErrHandler)
	var he *eventbus.HandlerError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, int64(2), he.Event.Sequence)
	assert.Contains(t, err.Error(), `subscription "mailer"`)
	assert.Contains(t, err.Error(), "sequence number 2")
	assert.Contains(t, err.Error(), ref.ID)
	assert.Equal(t, 3, attempts, "the first try and two retries")
	assert.Equal(t, []int64{1}, handled, "nothing after the failing entry")
	pos, _, _ := cps.Load(context.Background(), "mailer")
	assert.Equal(t, int64(1), pos, "the checkpoint stays before the failing entry")
	assert.ErrorIs(t, sub.Run(context.Background()), subscription.ErrRunning)
}

func TestFailingHandlerParks(t *testing.T) {
	tr := memory.New()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 1})
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: -1})
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 5})
	s := newSeen()
	sub, err := subscription.New(tr, "payer", cps, subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(cps)), subscription.Wait(time.Second))
	require.NoError(t, err)
	subscription.On(sub, func(_ context.Context, env eventbus.Envelope, e OrderPaid) error {
		if e.Amount < 0 {
			return errors.New("negative amount")
		}
		s.add(env, e)
		return nil
	})
	start(t, sub)
	s.waitFor(t, 1)
	_, vals := s.snapshot()
	assert.Equal(t, []any{OrderPaid{5}}, vals)
	parked, err := cps.ListParked(context.Background(), "payer")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, int64(2), parked[0].Entry.Sequence)
	assert.Contains(t, parked[0].Error, "negative amount")
	require.NoError(t, cps.Unpark(context.Background(), "payer", 2))
	parked, err = cps.ListParked(context.Background(), "payer")
	require.NoError(t, err)
	assert.Empty(t, parked)
}

func TestCloseFinishesTheEntryInHand(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, ref, "OrderPlaced", OrderPlaced{Total: 1})
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 1})
	entered, release := make(chan struct{}), make(chan struct{})
	var finished []int64
	sub, err := subscription.New(tr, "slow", cps)
	require.NoError(t, err)
	sub.OnEntry(func(ctx context.Context, e transport.FeedEntry) error {
		if e.Sequence == 1 {
			close(entered)
			<-release
		}
		finished = append(finished, e.Sequence)
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	<-entered
	cancel() // ending Run's context stops it as Close does
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, sub.Close(context.Background()))
	assert.Equal(t, []int64{1}, finished, "the entry in hand finished; no new one started")
	pos, _, _ := cps.Load(context.Background(), "slow")
	assert.Equal(t, int64(1), pos)
}

func TestApplyInTheReadModelsTransaction(t *testing.T) {
	tr := memory.New()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)
	for range 4 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: 5})
	}
	sub, err := subscription.New(tr, "totals", cps, subscription.Feed("order"), subscription.Wait(time.Second))
	require.NoError(t, err)
	applied := make(chan int64, 10)
	apply := cps.Apply(sub.Name(), func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		b, err := tx.CreateBucketIfNotExists([]byte("totals"))
		if err != nil {
			return err
		}
		n := 0
		if v := b.Get([]byte("sum")); v != nil {
			_, _ = fmt.Sscan(string(v), &n)
		}
		applied <- e.Sequence
		return b.Put([]byte("sum"), []byte(fmt.Sprint(n+5)))
	})
	sub.OnEntry(apply)
	start(t, sub)
	for range 4 {
		<-applied
	}
	require.NoError(t, sub.Close(context.Background()))

	// Redelivery after a crash (the subscription's own save lost) changes
	// nothing: the checkpoint went with the read model's write.
	p, err := tr.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	for _, e := range p.Entries {
		require.NoError(t, apply(context.Background(), e))
	}
	assert.Empty(t, applied)
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		assert.Equal(t, "20", string(tx.Bucket([]byte("totals")).Get([]byte("sum"))))
		seq, ok := boltcheckpoint.Get(tx, "totals")
		assert.True(t, ok)
		assert.Equal(t, int64(4), seq)
		return nil
	}))
}

func TestBadInput(t *testing.T) {
	tr := memory.New()
	cps := subscription.NewMemoryCheckpoints()
	_, err := subscription.New(nil, "x", cps)
	assert.Error(t, err)
	_, err = subscription.New(tr, "x", nil)
	assert.Error(t, err)
	_, err = subscription.New(tr, "", cps)
	assert.Error(t, err)
	_, err = subscription.New(tr, "x", cps, subscription.Feed("Bad!"))
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = subscription.New(tr, "x", cps, subscription.Partition(2, 5))
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = subscription.New(tr, "x", cps, subscription.Wait(2*time.Minute))
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = subscription.New(tr, "x", cps, subscription.Tenant("acme"))
	assert.ErrorIs(t, err, transport.ErrInvalid)
	sub, err := subscription.New(tr, "x", cps)
	require.NoError(t, err)
	assert.ErrorIs(t, sub.Run(context.Background()), subscription.ErrNoHandlers)
}

func TestUndecodableEventStops(t *testing.T) {
	tr := memory.New()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: "OrderPlaced", Data: json.RawMessage(`{"total":"many"}`)}}, transport.Any))
	sub, err := subscription.New(tr, "strict", subscription.NewMemoryCheckpoints(), subscription.Retry(noRetry))
	require.NoError(t, err)
	subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPlaced) error { return nil })
	err = sub.Run(context.Background())
	assert.ErrorContains(t, err, "decode OrderPlaced")
}

func TestUpcastBeforeHandlers(t *testing.T) {
	tr := memory.New()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: "OrderSettled", Data: []byte(`{"amt":7}`)}}, transport.Any))
	put(t, tr, ref, "OrderPaid", OrderPaid{Amount: 8})
	s := newSeen()
	sub, err := subscription.New(tr, "upcast", subscription.NewMemoryCheckpoints(), subscription.Wait(time.Second),
		subscription.Upcast(upcaster{"order", func(typ string, data []byte) (string, []byte, error) {
			if typ != "OrderSettled" {
				return typ, data, nil
			}
			var old struct{ Amt int }
			if err := json.Unmarshal(data, &old); err != nil {
				return "", nil, err
			}
			b, err := json.Marshal(OrderPaid{Amount: old.Amt})
			return "OrderPaid", b, err
		}}))
	require.NoError(t, err)
	typed(s, sub)
	start(t, sub)
	s.waitFor(t, 2)
	_, vals := s.snapshot()
	assert.Equal(t, []any{OrderPaid{7}, OrderPaid{8}}, vals, "the old event arrives in the current shape")
}

// upcaster is a subscription.Upcaster made of a function.
type upcaster struct {
	typ string
	fn  func(typ string, data []byte) (string, []byte, error)
}

func (u upcaster) Type() string { return u.typ }
func (u upcaster) Upcast(typ string, data []byte) (string, []byte, error) {
	return u.fn(typ, data)
}
