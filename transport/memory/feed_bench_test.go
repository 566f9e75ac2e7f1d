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

// BenchmarkTypeFeedPastOtherTypes reads the feed of one aggregate type whose
// only entry sits after 1,000,000 entries of another type (issue 28: a type
// read must not look at other types' entries).
func BenchmarkTypeFeedPastOtherTypes(b *testing.B) {
	tr := memory.New()
	ctx := context.Background()
	other := transport.Scope{Type: "noise"}
	for i := 0; i < 1000; i++ {
		batches := make([]transport.Batch, 1000)
		for j := range batches {
			batches[j] = transport.Batch{AggregateID: uuid.NewString(), Events: []transport.Event{{EventType: "Noise"}}}
		}
		if err := tr.StoreBulk(ctx, other, batches); err != nil {
			b.Fatal(err)
		}
	}
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	if err := tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: ref.Scope()})
		if err != nil || len(p.Entries) != 1 {
			b.Fatal(err, len(p.Entries))
		}
	}
}
