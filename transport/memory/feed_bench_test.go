package memory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/transporttest"
)

// BenchmarkFeedCatchUp reads a feed of 100,000 one-event batches from the
// start, in pages of 1000, before any decoding: the transport's share of a
// subscription's catch-up.
func BenchmarkFeedCatchUp(b *testing.B) {
	const batches = 100_000
	tr := memory.New()
	ctx := context.Background()
	refs := make([]transport.Ref, 1000)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	for i := range batches {
		data := []byte(fmt.Sprintf(`{"orderId":"o-%d","amount":%d,"currency":"EUR"}`, i, i%500))
		if err := tr.Store(ctx, refs[i%len(refs)], []transport.Event{{EventType: "OrderPaid", Data: data}}, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n, err := transporttest.CountFeed(ctx, tr, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Limit: 1000})
		if err != nil || n != batches {
			b.Fatalf("read %d entries: %v", n, err)
		}
	}
	b.ReportMetric(float64(batches*b.N)/b.Elapsed().Seconds(), "entries/s")
}
