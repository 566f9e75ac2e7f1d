package eventbus_test

import (
	"context"
	"sync"
	"testing"

	"github.com/sourced-go/sourced/eventbus"
)

// BenchmarkAsyncFanOut publishes to 10 asynchronous subscribers and reports
// deliveries per second (events x subscribers).
func BenchmarkAsyncFanOut(b *testing.B) {
	bus := eventbus.New()
	const subs = 10
	var wg sync.WaitGroup
	for i := 0; i < subs; i++ {
		if _, err := eventbus.SubscribeAll(bus, func(context.Context, eventbus.Envelope) error { wg.Done(); return nil },
			eventbus.Async(), eventbus.QueueSize(4096)); err != nil {
			b.Fatal(err)
		}
	}
	events := []eventbus.Envelope{{AggregateType: "order", AggregateID: "a", Version: 1, EventType: "OrderPlaced", Data: []byte(`{}`)}}
	b.ReportAllocs()
	b.ResetTimer()
	wg.Add(b.N * subs)
	for i := 0; i < b.N; i++ {
		if err := bus.Publish(context.Background(), events); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
	_ = bus.Close(context.Background())
}

// BenchmarkPublish is the cost Publish adds to a write, with no subscriber
// and with one sync subscriber.
func BenchmarkPublish(b *testing.B) {
	events := []eventbus.Envelope{{AggregateType: "order", AggregateID: "a", Version: 1, EventType: "OrderPlaced", Data: []byte(`{}`)}}
	b.Run("subscribers=0", func(b *testing.B) {
		bus := eventbus.New()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = bus.Publish(context.Background(), events)
		}
	})
	b.Run("subscribers=1-sync", func(b *testing.B) {
		bus := eventbus.New()
		_, _ = eventbus.SubscribeAll(bus, func(context.Context, eventbus.Envelope) error { return nil })
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = bus.Publish(context.Background(), events)
		}
	})
}
