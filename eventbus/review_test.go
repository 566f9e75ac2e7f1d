package eventbus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/eventbus"
)

// deadlock fails the test when done does not close in time: the time is a
// guard against a hang, not a speed assertion.
func deadlock(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("deadlock: %s", what)
	}
}

// A sync handler that publishes another aggregate's event while Close runs
// finishes: the nested publish is refused, Close returns.
func TestCloseWhileASyncHandlerPublishes(t *testing.T) {
	for range 3 {
		b := eventbus.New()
		inHandler, closing := make(chan struct{}), make(chan struct{})
		nested := make(chan error, 1)
		_, err := eventbus.SubscribeAggregate(b, "order", func(ctx context.Context, e eventbus.Envelope) error {
			close(inHandler)
			<-closing
			// Let Close reach its wait for the publishes under way (the
			// test passes whatever the timing; the pause only makes the
			// old deadlock show every time).
			time.Sleep(20 * time.Millisecond)
			nested <- b.Publish(ctx, []eventbus.Envelope{{AggregateType: "invoice", AggregateID: "i", Version: 1, EventType: "X01"}})
			return nil
		})
		require.NoError(t, err)
		published, closed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(published)
			assert.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
		}()
		<-inHandler
		go func() {
			defer close(closed)
			assert.NoError(t, b.Close(context.Background()))
		}()
		close(closing)
		deadlock(t, published, "publish under Close")
		deadlock(t, closed, "Close under a publishing handler")
		err = <-nested
		if err != nil {
			assert.ErrorIs(t, err, eventbus.ErrClosed)
		}
	}
}

// Close honours its context while a publisher is blocked on a full queue;
// the publisher is let go with an error.
func TestCloseHonoursContextWhileAPublisherIsBlocked(t *testing.T) {
	b := eventbus.New()
	release, started := make(chan struct{}), make(chan struct{})
	var once sync.Once
	_, err := eventbus.SubscribeAll(b, func(ctx context.Context, _ eventbus.Envelope) error {
		once.Do(func() { close(started) })
		select { // a slow handler that stops when the bus cancels it
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, eventbus.Async(), eventbus.QueueSize(2), zeroRetry(0))
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	<-started
	blocked := make(chan error, 1)
	go func() {
		blocked <- b.Publish(context.Background(), []eventbus.Envelope{env("a", 2, "X01", `{}`), env("a", 3, "X01", `{}`), env("a", 4, "X01", `{}`)})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- b.Close(ctx) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.ErrorIs(t, <-closed, context.DeadlineExceeded)
		assert.ErrorIs(t, <-blocked, eventbus.ErrClosed)
	}()
	deadlock(t, done, "Close waits for a blocked publisher past its deadline")
	close(release)
}

// After a full queue, the rest of the batch is not queued: a subscriber
// never gets a later event of an aggregate without an earlier one.
func TestPublishStopsAfterAFullQueue(t *testing.T) {
	b := eventbus.New()
	release, started := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var got []int64
	var once sync.Once
	_, err := eventbus.SubscribeAll(b, func(_ context.Context, e eventbus.Envelope) error {
		once.Do(func() { close(started) })
		<-release
		mu.Lock()
		got = append(got, e.Version)
		mu.Unlock()
		return nil
	}, eventbus.Async(), eventbus.QueueSize(1), eventbus.OnFull(eventbus.Fail))
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)}))
	<-started
	err = b.Publish(context.Background(), []eventbus.Envelope{env("a", 2, "X01", `{}`), env("a", 3, "X01", `{}`), env("a", 4, "X01", `{}`)})
	require.ErrorIs(t, err, eventbus.ErrQueueFull)
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	assert.Len(t, joined.Unwrap(), 1, "one failure, then the rest of the batch is left alone")
	close(release)
	closeBus(t, b)
	assert.Equal(t, []int64{1, 2}, got)
}

// A panicking handler is a failing handler: sync, its error; async,
// retried then dead-lettered. The process lives on.
func TestHandlerPanicsAreRecovered(t *testing.T) {
	b := eventbus.New()
	_, err := eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { panic("boom") }, eventbus.Label("sync"))
	require.NoError(t, err)
	var dead atomic.Int64
	var calls atomic.Int64
	_, err = eventbus.SubscribeAll(b, func(context.Context, eventbus.Envelope) error { calls.Add(1); panic("boom") },
		eventbus.Async(), zeroRetry(2), eventbus.DeadLetter(func(_ eventbus.Envelope, err error) {
			assert.ErrorIs(t, err, eventbus.ErrPanic)
			dead.Add(1)
		}))
	require.NoError(t, err)
	err = b.Publish(context.Background(), []eventbus.Envelope{env("a", 1, "X01", `{}`)})
	assert.ErrorIs(t, err, eventbus.ErrPanic)
	assert.ErrorIs(t, err, eventbus.ErrHandler)
	closeBus(t, b)
	assert.EqualValues(t, 1, dead.Load())
	assert.EqualValues(t, 3, calls.Load(), "retried like any failure")
}
