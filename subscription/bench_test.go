package subscription_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/memory"
)

const catchUpEvents = 100_000

type paidEvent struct {
	OrderID  string `json:"orderId"`
	Amount   int    `json:"amount"`
	Currency string `json:"currency"`
}

func seedPaid(b *testing.B, n int) *memory.Transport {
	b.Helper()
	tr := memory.New()
	refs := make([]transport.Ref, 1000)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	for i := range n {
		data := []byte(fmt.Sprintf(`{"orderId":"o-%d","amount":%d,"currency":"EUR"}`, i, i%500))
		if err := tr.Store(context.Background(), refs[i%len(refs)], []transport.Event{{EventType: "paidEvent", Data: data}}, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	return tr
}

// BenchmarkCatchUp: a subscription with one typed handler catches up on
// 100,000 stored events (read, dispatch, decode, checkpoints), beside the
// floor: decoding the same events with encoding/json alone.
func BenchmarkCatchUp(b *testing.B) {
	tr := seedPaid(b, catchUpEvents)
	ctx := context.Background()
	var data [][]byte
	for since := int64(0); ; {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since})
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range p.Entries {
			data = append(data, e.Events[0].Data)
		}
		if !p.HasMore {
			break
		}
		since = p.Entries[len(p.Entries)-1].Sequence
	}

	b.Run("floor=json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		sum := 0
		for b.Loop() {
			for _, d := range data {
				var e paidEvent
				if err := json.Unmarshal(d, &e); err != nil {
					b.Fatal(err)
				}
				sum += e.Amount
			}
		}
		b.ReportMetric(float64(catchUpEvents*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("subscription", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sub, err := subscription.New(tr, "bench", subscription.NewMemoryCheckpoints())
			if err != nil {
				b.Fatal(err)
			}
			n, sum := 0, 0
			subscription.On(sub, func(_ context.Context, _ eventbus.Envelope, e paidEvent) error {
				sum += e.Amount
				if n++; n == catchUpEvents {
					go func() { _ = sub.Close(context.Background()) }()
				}
				return nil
			})
			if err := sub.Run(ctx); err != nil {
				b.Fatal(err)
			}
			if n != catchUpEvents {
				b.Fatalf("handled %d", n)
			}
		}
		b.ReportMetric(float64(catchUpEvents*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkTailLatency: a subscription follows the feed live; each
// iteration stores one batch and waits for the handler. Reported: the
// time from just before Store to the handler (store_p50/p99, which holds
// bolt's fsync), and from Store's return to the handler (ack_p50/p99, 0
// when the handler ran before Store returned).
func BenchmarkTailLatency(b *testing.B) {
	b.Run("memory", func(b *testing.B) { tailLatency(b, memory.New()) })
	b.Run("bolt", func(b *testing.B) {
		tr, err := bolt.Open(filepath.Join(b.TempDir(), "events.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer tr.Close()
		tailLatency(b, tr)
	})
}

type feedStore interface {
	transport.Transport
	transport.Feeder
}

func tailLatency(b *testing.B, tr feedStore) {
	ctx := context.Background()
	sub, err := subscription.New(tr, "tail", subscription.NewMemoryCheckpoints(), subscription.Wait(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 1)
	subscription.On(sub, func(context.Context, eventbus.Envelope, OrderPaid) error {
		got <- time.Now()
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	events := []transport.Event{{EventType: "OrderPaid", Data: []byte(`{"amount":1}`)}}
	var fromStore, fromAck []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := tr.Store(ctx, ref, events, transport.Any); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		h := <-got
		fromStore = append(fromStore, h.Sub(t0))
		fromAck = append(fromAck, max(h.Sub(t1), 0))
	}
	b.StopTimer()
	if err := sub.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	report := func(ds []time.Duration, name string) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), name+"_p50_µs")
		b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), name+"_p99_µs")
	}
	report(fromStore, "store")
	report(fromAck, "ack")
}
