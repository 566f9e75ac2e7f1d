package bolt_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// BenchmarkStoreWithWaitersElsewhere stores batches of one type while 2,000
// feed readers wait on another type (issue 28: every commit used to wake
// every waiter, which then read again and went back to sleep).
func BenchmarkStoreWithWaitersElsewhere(b *testing.B) {
	for _, name := range []string{"memory", "bolt"} {
		b.Run(name, func(b *testing.B) {
			tr := stores(b)[name]
			f := tr.(transport.Feeder)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i := 0; i < 2000; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						_, _ = f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "idle"}, Wait: transport.MaxFeedWait})
					}
				}()
			}
			time.Sleep(200 * time.Millisecond) // let the readers park before timing
			ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := tr.Store(ctx, ref, event, transport.Exactly(int64(i))); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

// BenchmarkDeleteInBigFeed stores and deletes one aggregate in a tenant
// whose feed holds 200,000 entries (issue 28: a delete used to look through
// the whole feed for the aggregate's entries).
func BenchmarkDeleteInBigFeed(b *testing.B) {
	for _, name := range []string{"memory", "bolt"} {
		b.Run(name, func(b *testing.B) {
			tr := stores(b)[name]
			ctx := context.Background()
			for i := 0; i < 200; i++ {
				batches := make([]transport.Batch, 1000)
				for j := range batches {
					batches[j] = transport.Batch{AggregateID: uuid.NewString(), Events: event}
				}
				if err := tr.StoreBulk(ctx, transport.Scope{Type: "noise"}, batches); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
				if err := tr.Store(ctx, ref, event, transport.MustNotExist); err != nil {
					b.Fatal(err)
				}
				target := transport.DeleteAggregate(ref)
				token, err := tr.RequestDelete(ctx, target)
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.ConfirmDelete(ctx, target, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTypeFeedPastOtherTypes reads the feed of one aggregate type whose
// only entry sits after 200,000 entries of another type.
func BenchmarkTypeFeedPastOtherTypes(b *testing.B) {
	tr := stores(b)["bolt"]
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		batches := make([]transport.Batch, 1000)
		for j := range batches {
			batches[j] = transport.Batch{AggregateID: uuid.NewString(), Events: event}
		}
		if err := tr.StoreBulk(ctx, transport.Scope{Type: "noise"}, batches); err != nil {
			b.Fatal(err)
		}
	}
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	if err := tr.Store(ctx, ref, event, transport.MustNotExist); err != nil {
		b.Fatal(err)
	}
	f := tr.(transport.Feeder)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: ref.Scope()})
		if err != nil || len(p.Entries) != 1 {
			b.Fatal(err, len(p.Entries))
		}
	}
}
