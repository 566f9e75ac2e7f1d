package repository_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/aggregate/gojson"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A realistic event payload: a few fields of several kinds.
type ItemAdded struct {
	SKU      string  `json:"sku"`
	Name     string  `json:"name"`
	Quantity int     `json:"quantity"`
	Price    float64 `json:"price"`
	Gift     bool    `json:"gift"`
}

type basket struct {
	Items int
	Total float64
}

var baskets = aggregate.MustNew[basket]("basket",
	aggregate.On(func(b *basket, e ItemAdded) { b.Items += e.Quantity; b.Total += e.Price * float64(e.Quantity) }),
)

// fastBaskets is baskets with the gojson codec.
var fastBaskets = aggregate.MustNew[basket]("basket",
	aggregate.WithCodec[basket](gojson.Codec{}),
	aggregate.On(func(b *basket, e ItemAdded) { b.Items += e.Quantity; b.Total += e.Price * float64(e.Quantity) }),
)

func payload(i int) []byte {
	b, _ := json.Marshal(ItemAdded{SKU: fmt.Sprintf("sku-%06d", i), Name: "Blue widget, large", Quantity: i%5 + 1, Price: 19.95, Gift: i%2 == 0})
	return b
}

// seed stores n events, ten a batch, and returns the transport and id.
func seed(b *testing.B, n int) (*memory.Transport, string) {
	b.Helper()
	tr := memory.New()
	id := uuid.NewString()
	ref := transport.Ref{Type: "basket", ID: id}
	for i := 0; i < n; {
		batch := make([]transport.Event, 0, 10)
		for j := 0; j < 10 && i < n; j++ {
			batch = append(batch, transport.Event{EventType: "ItemAdded", Data: payload(i)})
			i++
		}
		if err := tr.Store(context.Background(), ref, batch, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	return tr, id
}

// BenchmarkHydrate loads and replays aggregates of 1, 100 and 10,000
// events. Each size has a floor beside it: json.Unmarshal of the same
// payloads into their Go type, applied to the same state. Hydration should
// cost at most about 1.3x the floor.
func BenchmarkHydrate(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		tr, id := seed(b, n)
		repo := repository.New(tr, baskets)
		ctx := context.Background()
		b.Run(fmt.Sprintf("events=%d/repository", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				root, err := repo.Load(ctx, id)
				if err != nil || root.State().Items == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
		fast := repository.New(tr, fastBaskets)
		b.Run(fmt.Sprintf("events=%d/repository-gojson", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				root, err := fast.Load(ctx, id)
				if err != nil || root.State().Items == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
		payloads := make([][]byte, n)
		for i := range payloads {
			payloads[i] = payload(i)
		}
		b.Run(fmt.Sprintf("events=%d/floor-json-unmarshal", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var s basket
				for _, p := range payloads {
					var e ItemAdded
					if err := json.Unmarshal(p, &e); err != nil {
						b.Fatal(err)
					}
					s.Items += e.Quantity
					s.Total += e.Price * float64(e.Quantity)
				}
				if s.Items == 0 {
					b.Fatal("nothing applied")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

func addItem(r *aggregate.Root[basket]) error {
	return r.Record(ItemAdded{SKU: "sku-1", Name: "Blue widget, large", Quantity: 1, Price: 19.95})
}

// seedSmall stores n aggregates of 5 events each and returns their ids.
func seedSmall(b *testing.B, tr transport.Transport, n int) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		batch := make([]transport.Event, 5)
		for j := range batch {
			batch[j] = transport.Event{EventType: "ItemAdded", Data: payload(j)}
		}
		if err := tr.Store(context.Background(), transport.Ref{Type: "basket", ID: ids[i]}, batch, transport.MustNotExist); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

// BenchmarkUpdate is one Update (load, command, store) on a small
// aggregate: every iteration updates its own aggregate of 5 events.
func BenchmarkUpdate(b *testing.B) {
	ctx := context.Background()
	tr := memory.New()
	repo := repository.New(tr, baskets)
	ids := seedSmall(b, tr, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := repo.Update(ctx, ids[i], addItem); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateContended runs Update from 4 goroutines per CPU on ONE
// aggregate at a time: every conflict costs a reload and a re-run. The
// target moves to a fresh aggregate every 64 updates, so history stays
// small and the figure measures contention, not replay length.
func BenchmarkUpdateContended(b *testing.B) {
	ctx := context.Background()
	tr := memory.New()
	repo := repository.New(tr, baskets, zeroWait(1_000_000))
	ids := make([]string, b.N/64+1)
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := repo.Create(ctx, ids[i], addItem); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := ids[(n.Add(1)-1)/64]
			if _, err := repo.Update(ctx, id, addItem); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUpdatePublish is BenchmarkUpdate with a bus and one sync
// subscriber: the difference is what publishing adds to a write.
func BenchmarkUpdatePublish(b *testing.B) {
	ctx := context.Background()
	tr := memory.New()
	bus := eventbus.New()
	defer bus.Close(ctx)
	if _, err := eventbus.Subscribe(bus, func(context.Context, eventbus.Envelope, ItemAdded) error { return nil }); err != nil {
		b.Fatal(err)
	}
	repo := repository.New(tr, baskets, repository.WithPublisher(bus))
	ids := seedSmall(b, tr, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := repo.Update(ctx, ids[i], addItem); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateTracing is BenchmarkUpdate without a tracer provider (the
// default: no span is made) and with an SDK provider that records.
func BenchmarkUpdateTracing(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	for _, c := range []struct {
		name string
		opts []repository.Option
	}{{"tracing=off", nil}, {"tracing=sdk", []repository.Option{repository.WithTracerProvider(tp)}}} {
		b.Run(c.name, func(b *testing.B) {
			tr := memory.New()
			repo := repository.New(tr, baskets, c.opts...)
			ids := seedSmall(b, tr, b.N)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := repo.Update(ctx, ids[i], addItem); err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 {
					rec.Reset()
				}
			}
		})
	}
}
