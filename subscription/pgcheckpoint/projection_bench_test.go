package pgcheckpoint_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

const (
	catchUpEntries = 100_000
	// atLeastOnceEntries bounds the at-least-once run: one commit per
	// entry, a few hundred a second, would take minutes over 100,000.
	atLeastOnceEntries = 3_000
)

func awaitRun(b *testing.B, sub *subscription.Subscription, head int64) {
	b.Helper()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	if err := sub.Await(ctx, head); err != nil {
		b.Fatal(err)
	}
	if err := sub.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCatchUpPostgres: 100,000 entries of the memory transport's feed
// into a read model in PostgreSQL (a total per order, one upsert per
// event). exactly-once: a projection with a typed handler, one
// transaction per page of 1,000 with the checkpoint. Beside it: the
// at-least-once path (a plain subscription, OnEntry, each upsert its own
// commit; over the first 3,000 entries) and the floor, reading the feed
// alone.
func BenchmarkCatchUpPostgres(b *testing.B) {
	ctx := context.Background()
	s, p := fresh(b)
	model := s.Schema() + ".totals"
	_, err := p.Exec(ctx, "CREATE TABLE "+model+" (id text PRIMARY KEY, total bigint NOT NULL)")
	if err != nil {
		b.Fatal(err)
	}
	upsert := "INSERT INTO " + model + " (id, total) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET total = totals.total + excluded.total"
	tr := memory.New()
	refs := make([]transport.Ref, 1000)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	for i := range catchUpEntries {
		data := []byte(fmt.Sprintf(`{"total":%d}`, i%500))
		if err := tr.Store(ctx, refs[i%len(refs)], []transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
	if err != nil {
		b.Fatal(err)
	}
	run := 0
	b.Run("floor=feed-read", func(b *testing.B) {
		for b.Loop() {
			for since := int64(0); since < head; {
				pg, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since, Limit: transport.MaxLimit})
				if err != nil {
					b.Fatal(err)
				}
				since = pg.Entries[len(pg.Entries)-1].Sequence
			}
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("floor=upserts-batched", func(b *testing.B) {
		// The read model's own cost: the same upserts, 1,000 to a
		// transaction, sent as one batch, without a feed.
		for b.Loop() {
			for i := 0; i < catchUpEntries; i += 1000 {
				var batch pgx.Batch
				for j := i; j < i+1000; j++ {
					batch.Queue(upsert, refs[j%len(refs)].ID, j%500)
				}
				if err := pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &batch).Close() }); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("at-least-once=OnEntry", func(b *testing.B) {
		for b.Loop() {
			sub, err := subscription.New(tr, "bench", subscription.NewMemoryCheckpoints())
			if err != nil {
				b.Fatal(err)
			}
			subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, e OrderPlaced) error {
				_, err := p.Exec(ctx, upsert, env.AggregateID, e.Total)
				return err
			})
			awaitRun(b, sub, atLeastOnceEntries)
		}
		b.ReportMetric(float64(atLeastOnceEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("exactly-once=projection", func(b *testing.B) {
		for b.Loop() {
			run++
			pr := projection.New(s)
			projection.On(pr, func(ctx context.Context, tx pgx.Tx, env eventbus.Envelope, e OrderPlaced) error {
				_, err := tx.Exec(ctx, upsert, env.AggregateID, e.Total)
				return err
			})
			sub, err := subscription.New(tr, "bench-"+strconv.Itoa(run), s)
			if err != nil {
				b.Fatal(err)
			}
			pr.Attach(sub)
			awaitRun(b, sub, head)
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("exactly-once=projection-batched", func(b *testing.B) {
		for b.Loop() {
			run++
			pr := projection.New(s.Batched())
			projection.On(pr, func(_ context.Context, tx *pgcheckpoint.Batch, env eventbus.Envelope, e OrderPlaced) error {
				tx.Queue(upsert, env.AggregateID, e.Total)
				return nil
			})
			sub, err := subscription.New(tr, "bench-"+strconv.Itoa(run), s)
			if err != nil {
				b.Fatal(err)
			}
			pr.Attach(sub)
			awaitRun(b, sub, head)
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
}

// BenchmarkTailPostgres: a subscription follows the memory transport's
// feed live; each iteration stores one batch and waits until the
// subscription has handled it (for the projection: its PostgreSQL
// transaction has committed). p50 and p99 from Store's return; the floor
// is a plain subscription whose handler does nothing.
func BenchmarkTailPostgres(b *testing.B) {
	ctx := context.Background()
	s, p := fresh(b)
	model := s.Schema() + ".totals"
	if _, err := p.Exec(ctx, "CREATE TABLE "+model+" (id text PRIMARY KEY, total bigint NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	upsert := "INSERT INTO " + model + " (id, total) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET total = totals.total + excluded.total"
	for _, name := range []string{"floor=subscription", "exactly-once=projection"} {
		b.Run(name, func(b *testing.B) {
			tr := memory.New()
			var sub *subscription.Subscription
			var err error
			if name == "floor=subscription" {
				sub, err = subscription.New(tr, "tail-floor", subscription.NewMemoryCheckpoints(), subscription.Wait(30*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
			} else {
				sub, err = subscription.New(tr, "tail-"+uuid.NewString(), s, subscription.Wait(30*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				pr := projection.New(s)
				projection.On(pr, func(ctx context.Context, tx pgx.Tx, env eventbus.Envelope, e OrderPlaced) error {
					_, err := tx.Exec(ctx, upsert, env.AggregateID, e.Total)
					return err
				})
				pr.Attach(sub)
			}
			done := make(chan error, 1)
			go func() { done <- sub.Run(ctx) }()
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			events := []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"total":1}`)}}
			var lat []time.Duration
			var seq int64
			for b.Loop() {
				if err := tr.Store(ctx, ref, events, transport.Any); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				seq++
				if err := sub.Await(ctx, seq); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			if err := sub.Close(ctx); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_µs")
		})
	}
}
