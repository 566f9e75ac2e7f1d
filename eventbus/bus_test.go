package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/eventbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type OrderPlaced struct {
	Amount int `json:"amount"`
}
type OrderShipped struct{}

func env(id string, version int64, typ string, data string) eventbus.Envelope {
	return eventbus.Envelope{AggregateType: "order", AggregateID: id, Version: version,
		EventID: fmt.Sprintf("%s-%d", id, version), EventType: typ, Data: []byte(data)}
}

func closeBus(t *testing.T, b *eventbus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Close(ctx))
}

func zeroRetry(n uint64) eventbus.SubscribeOption {
	return eventbus.Retry(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, n) })
}

func TestTypedSyncDelivery(t *testing.T) {
	b := eventbus.New()
	defer closeBus(t, b)
	var got []int
	_, err := eventbus.Subscribe(b, func(_ context.Context, e eventbus.Envelope, p OrderPlaced) error {
		assert.Equal(t, "order", e.AggregateType)
		got = append(got, p.Amount)
		return nil
	})
	require.NoError(t, err)
	ctx := context.Background()
	// Decoded from Data when there is no Go value ...
	require.NoError(t, b.Publish(ctx, []eventbus.Envelope{env("a", 1, "OrderPlaced", `{"amount":5}`), env("a", 2, "OrderShipped", `{}`)}))
	// ... and the recorded value used as it is when there is one.
	withValue := env("a", 3, "OrderPlaced", `{"amount":999}`)
	withValue.Value = OrderPlaced{Amount: 7}
	require.NoError(t, b.Publish(ctx, []eventbus.Envelope{withValue}))
	assert.Equal(t, []int{5, 7}, got)
}

func TestNamedAggregateAndAll(t *testing.T) {
	b := eventbus.New()
	defer closeBus(t, b)
	var named, agg, all atomic.Int64
	_, err := eventbus.Subscribe(b, func(context.Context, eventbus.Envelope, struct{ Method string }) error { named.Add(1); return nil },
		eventbus.Named("PaymentProcessed"))
	require.NoError(t, err)
	_, err = eventbus.SubscribeAggregate(b, "payment", func(context.Context, eventbus.Envelope) error { agg.Add(1); return nil })
	require.NoError(t, err)
	_, err = eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { all.Add(1); return nil })
	require.NoError(t, err)
	p := eventbus.Envelope{AggregateType: "payment", AggregateID: "p", Version: 1, EventType: "PaymentProcessed", Data: []byte(`{"Method":"CARD"}`)}
	r := eventbus.Envelope{AggregateType: "payment", AggregateID: "p", Version: 2, EventType: "PaymentRefunded"}
	o := env("o", 1, "OrderPlaced", `{}`)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{p, r, o}))
	assert.Equal(t, int64(1), named.Load())
	assert.Equal(t, int64(2), agg.Load())
	assert.Equal(t, int64(3), all.Load())
}

func TestSyncErrorsAreReported(t *testing.T) {
	b := eventbus.New()
	defer closeBus(t, b)
	boom := errors.New("boom")
	var after atomic.Int64
	_, err := eventbus.Subscribe(b, func(context.Context, eventbus.Envelope, OrderPlaced) error { return boom }, eventbus.Label("mailer"))
	require.NoError(t, err)
	_, err = eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { after.Add(1); return nil })
	require.NoError(t, err)
	err = b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "OrderPlaced", `{}`)})
	require.ErrorIs(t, err, eventbus.ErrHandler)
	require.ErrorIs(t, err, boom)
	var he *eventbus.HandlerError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, "mailer", he.Subscription)
	assert.Contains(t, err.Error(), "order/a")
	assert.Equal(t, int64(1), after.Load(), "one failing handler does not stop the others")

	_, err = eventbus.Subscribe(b, func(context.Context, eventbus.Envelope, OrderPlaced) error { return nil })
	require.NoError(t, err)
	err = b.Publish(context.Background(), []eventbus.Envelope{env("a", 2, "OrderPlaced", `{"amount":"x"}`)})
	assert.ErrorContains(t, err, "decode OrderPlaced", "bad data is a handler failure, with a clear message")
}

func TestAsyncOrderPerAggregateUnderConcurrentPublishers(t *testing.T) {
	b := eventbus.New()
	var mu sync.Mutex
	last := map[string]int64{}
	var outOfOrder, delivered atomic.Int64
	_, err := eventbus.SubscribeAll(b, func(_ context.Context, e eventbus.Envelope) error {
		mu.Lock()
		if e.Version != last[e.AggregateID]+1 {
			outOfOrder.Add(1)
		}
		last[e.AggregateID] = e.Version
		mu.Unlock()
		delivered.Add(1)
		return nil
	}, eventbus.Async(), eventbus.Workers(4), eventbus.QueueSize(16))
	require.NoError(t, err)

	const publishers, aggregates, versions = 8, 4, 100
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for v := int64(1); v <= versions; v++ {
				for a := 0; a < aggregates; a++ {
					id := fmt.Sprintf("p%d-a%d", p, a)
					assert.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env(id, v, "Tick", `{}`)}))
				}
			}
		}(p)
	}
	wg.Wait()
	closeBus(t, b)
	assert.Equal(t, int64(publishers*aggregates*versions), delivered.Load(), "every event delivered")
	assert.Zero(t, outOfOrder.Load(), "each aggregate's events in version order")
}

func TestAsyncRetryThenDeadLetter(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	b := eventbus.New(eventbus.WithLogger(zap.New(core)))
	var attempts atomic.Int64
	dead := make(chan eventbus.Envelope, 1)
	var deadErr error
	_, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error {
		attempts.Add(1)
		return errors.New("smtp down")
	}, eventbus.Async(), zeroRetry(3), eventbus.Label("mailer"), eventbus.DeadLetter(func(e eventbus.Envelope, err error) {
		deadErr = err
		dead <- e
	}))
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "OrderPlaced", `{}`)}))
	e := <-dead
	assert.Equal(t, "a", e.AggregateID)
	assert.ErrorContains(t, deadErr, "smtp down")
	assert.Equal(t, int64(4), attempts.Load(), "one try and three retries")
	closeBus(t, b)
	entries := logs.FilterMessage("event not delivered, dead-lettered").All()
	require.Len(t, entries, 1)
	assert.Equal(t, "mailer", entries[0].ContextMap()["subscription"])
	assert.Equal(t, int64(4), entries[0].ContextMap()["attempts"])
}

func TestAsyncRetrySucceeds(t *testing.T) {
	b := eventbus.New()
	var attempts atomic.Int64
	done := make(chan struct{})
	_, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error {
		if attempts.Add(1) < 3 {
			return errors.New("flaky")
		}
		close(done)
		return nil
	}, eventbus.Async(), zeroRetry(5), eventbus.DeadLetter(func(eventbus.Envelope, error) { t.Error("dead-lettered") }))
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	<-done
	closeBus(t, b)
}

// blockedSubscriber returns a subscription whose handler waits for release.
func blockedSubscriber(t *testing.T, b *eventbus.Bus, policy eventbus.FullPolicy, release chan struct{}, started chan struct{}) {
	t.Helper()
	var once sync.Once
	_, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error {
		once.Do(func() { close(started) })
		<-release
		return nil
	}, eventbus.Async(), eventbus.QueueSize(2), eventbus.OnFull(policy))
	require.NoError(t, err)
}

func TestBackPressureFail(t *testing.T) {
	b := eventbus.New()
	release, started := make(chan struct{}), make(chan struct{})
	blockedSubscriber(t, b, eventbus.Fail, release, started)
	ctx := context.Background()
	require.NoError(t, b.Publish(ctx, []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	<-started // the worker holds event 1; the queue (2) is empty
	require.NoError(t, b.Publish(ctx, []eventbus.Envelope{env("a", 2, "X01", `{}`), env("a", 3, "X01", `{}`)}))
	err := b.Publish(ctx, []eventbus.Envelope{env("a", 4, "X01", `{}`)})
	assert.ErrorIs(t, err, eventbus.ErrQueueFull, "a full queue fails the publish, never drops silently")
	close(release)
	closeBus(t, b)
}

func TestBackPressureBlockHonoursContext(t *testing.T) {
	b := eventbus.New()
	release, started := make(chan struct{}), make(chan struct{})
	blockedSubscriber(t, b, eventbus.Block, release, started)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	<-started
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 2, "X01", `{}`), env("a", 3, "X01", `{}`)}))
	ctx, cancel := context.WithCancel(context.Background())
	blocked := make(chan error)
	go func() { blocked <- b.Publish(ctx, []eventbus.Envelope{env("a", 4, "X01", `{}`)}) }()
	cancel()
	assert.ErrorIs(t, <-blocked, context.Canceled)

	// With room made, a blocked publisher goes through.
	go func() { blocked <- b.Publish(context.Background(), []eventbus.Envelope{env("a", 4, "X01", `{}`)}) }()
	close(release)
	assert.NoError(t, <-blocked)
	closeBus(t, b)
}

func TestCloseDrains(t *testing.T) {
	b := eventbus.New()
	var n atomic.Int64
	_, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { n.Add(1); return nil }, eventbus.Async(), eventbus.Workers(3))
	require.NoError(t, err)
	for v := int64(1); v <= 500; v++ {
		require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env(fmt.Sprint(v%7), v, "X01", `{}`)}))
	}
	closeBus(t, b)
	assert.Equal(t, int64(500), n.Load(), "Close delivers what was queued")
	assert.ErrorIs(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}), eventbus.ErrClosed)
	_, err = eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { return nil })
	assert.ErrorIs(t, err, eventbus.ErrClosed)
	assert.NoError(t, b.Close(context.Background()), "closing twice is fine")
}

func TestCloseWithExpiredContextDeadLetters(t *testing.T) {
	b := eventbus.New()
	release := make(chan struct{})
	var dead atomic.Int64
	_, err := eventbus.SubscribeAll(b, func(ctx context.Context, _ eventbus.Envelope) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, eventbus.Async(), zeroRetry(0), eventbus.DeadLetter(func(eventbus.Envelope, error) { dead.Add(1) }))
	require.NoError(t, err)
	for v := int64(1); v <= 5; v++ {
		require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", v, "X01", `{}`)}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, b.Close(ctx), context.Canceled)
	assert.Equal(t, int64(5), dead.Load(), "what could not be delivered is dead-lettered, not dropped")
	close(release)
}

func TestUnsubscribe(t *testing.T) {
	b := eventbus.New()
	defer closeBus(t, b)
	var n atomic.Int64
	s, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { n.Add(1); return nil }, eventbus.Async())
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	require.NoError(t, s.Unsubscribe(context.Background()))
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 2, "X01", `{}`)}))
	assert.Equal(t, int64(1), n.Load())
	_, err = eventbus.Subscribe[OrderPlaced](b, nil)
	assert.Error(t, err)
}

func ExampleSubscribe() {
	type PaymentProcessed struct {
		Amount   int    `json:"amount"`
		Currency string `json:"currency"`
	}
	bus := eventbus.New()
	defer bus.Close(context.Background())

	_, _ = eventbus.Subscribe(bus, func(ctx context.Context, env eventbus.Envelope, p PaymentProcessed) error {
		fmt.Printf("%s %s v%d: %d %s\n", env.AggregateType, env.EventType, env.Version, p.Amount, p.Currency)
		return nil
	})

	_ = bus.Publish(context.Background(), []eventbus.Envelope{{
		AggregateType: "payment", AggregateID: "2c3cf88c-ee88-427e-818a-ab0267511c84", Version: 1,
		EventType: "PaymentProcessed", Data: []byte(`{"amount":1000,"currency":"SEK"}`),
	}})
	// Output:
	// payment PaymentProcessed v1: 1000 SEK
}
