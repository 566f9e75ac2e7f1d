package memory_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// BenchmarkListPage lists one page of one aggregate among 500,000, with a
// store between calls (issue 27: List sorted every id on each call).
func BenchmarkListPage(b *testing.B) {
	tr := memory.New()
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	for i := 0; i < 500; i++ {
		batches := make([]transport.Batch, 1000)
		for j := range batches {
			batches[j] = transport.Batch{AggregateID: uuid.NewString(), Events: []transport.Event{{EventType: "OrderPlaced"}}}
		}
		if err := tr.StoreBulk(ctx, scope, batches); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tr.List(ctx, scope, 0, 1); err != nil { // the first List sorts the new ids in
		b.Fatal(err)
	}
	b.Run("quiet", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, err := tr.List(ctx, scope, 250_000, 1); err != nil || len(p.Aggregates) != 1 {
				b.Fatal(err)
			}
		}
	})
	b.Run("after-a-create", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist); err != nil {
				b.Fatal(err)
			}
			if p, err := tr.List(ctx, scope, 250_000, 1); err != nil || len(p.Aggregates) != 1 {
				b.Fatal(err)
			}
		}
	})
}
