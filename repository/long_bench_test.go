package repository_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// tenItems records ten events: one batch of a long history.
func tenItems(r *aggregate.Root[basket]) error {
	for i := range 10 {
		if err := r.Record(ItemAdded{SKU: "sku", Name: "Blue widget, large", Quantity: i%5 + 1, Price: 19.95}); err != nil {
			return err
		}
	}
	return nil
}

// grown returns an aggregate of events events (10 a batch; 1 when events
// is 1) written through repo.
func grown(b *testing.B, repo *repository.Repository[basket], events int) string {
	b.Helper()
	ctx := context.Background()
	id := uuid.NewString()
	if events == 1 {
		if _, err := repo.Create(ctx, id, addItem); err != nil {
			b.Fatal(err)
		}
		return id
	}
	if _, err := repo.Create(ctx, id, tenItems); err != nil {
		b.Fatal(err)
	}
	for i := 10; i < events; i += 10 {
		if _, err := repo.Update(ctx, id, tenItems); err != nil {
			b.Fatal(err)
		}
	}
	return id
}

// BenchmarkLongHistoryUpdate: Update on a 1-event and on a 10,000-event
// aggregate with the cache on, on memory and over HTTP to the local server
// on loopback. Target: the long one within 1.5x of the short one.
func BenchmarkLongHistoryUpdate(b *testing.B) {
	for _, where := range []string{"memory", "http"} {
		for _, events := range []int{1, 10_000} {
			b.Run(where+"/events="+itoa(events), func(b *testing.B) {
				var tr transport.Transport = memory.New()
				if where == "http" {
					srv := localserver.NewServer(tr.(*memory.Transport), localserver.WithRateLimit(1<<30, time.Minute))
					b.Cleanup(srv.Close)
					c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("k", "s"))
					if err != nil {
						b.Fatal(err)
					}
					tr = c
				}
				repo := repository.New(tr, baskets, repository.WithCache(16))
				id := grown(b, repo, events)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := repo.Update(ctx, id, addItem); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLongHistoryLoad: a cold Load (no cache) of a 1-event aggregate,
// beside a 10,000-event one with a snapshot at most 100 batches old, and
// the same without snapshots. Target: the snapshotted one within 2x of the
// 1-event one.
func BenchmarkLongHistoryLoad(b *testing.B) {
	for _, c := range []struct {
		name      string
		events    int
		snapshots bool
	}{{"events=1", 1, false}, {"events=10000/snapshot", 10_000, true}, {"events=10000/no-snapshot", 10_000, false}} {
		b.Run(c.name, func(b *testing.B) {
			tr := memory.New()
			var opts []repository.Option
			if c.snapshots {
				opts = append(opts, repository.WithSnapshots(snapshot.NewMemory(), 1, 100))
			}
			repo := repository.New(tr, baskets, opts...)
			id := grown(b, repo, c.events)
			// One more batch after the snapshot, as in life.
			if _, err := repo.Update(context.Background(), id, addItem); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := repo.Load(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func itoa(n int) string {
	if n == 1 {
		return "1"
	}
	return "10000"
}
