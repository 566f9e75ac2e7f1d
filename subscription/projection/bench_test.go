package projection_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

const catchUpEntries = 100_000

// seedPlaced stores n batches of one OrderPlaced over 1,000 orders.
func seedPlaced(b *testing.B, n int) *memory.Transport {
	b.Helper()
	tr := memory.New()
	refs := make([]transport.Ref, 1000)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	for i := range n {
		data := []byte(fmt.Sprintf(`{"total":%d}`, i%500))
		if err := tr.Store(context.Background(), refs[i%len(refs)], []transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	return tr
}

// runUntil runs sub until it has handled the feed up to head.
func runUntil(b *testing.B, sub *subscription.Subscription, head int64) {
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

func openView(b *testing.B) (*bbolt.DB, *boltcheckpoint.Store) {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "view.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	cps, err := boltcheckpoint.New(db)
	if err != nil {
		b.Fatal(err)
	}
	return db, cps
}

// addTotal adds n to the order's total in the bucket "totals".
func addTotal(tx *bbolt.Tx, id string, n int) error {
	bk, err := tx.CreateBucketIfNotExists([]byte("totals"))
	if err != nil {
		return err
	}
	cur, _ := strconv.Atoi(string(bk.Get([]byte(id))))
	return bk.Put([]byte(id), []byte(strconv.Itoa(cur+n)))
}

// BenchmarkCatchUpBolt: 100,000 entries of the memory transport's feed
// into a bbolt read model (a total per order). exactly-once: a projection
// with a typed handler, one bbolt transaction per page of 1,000 with the
// checkpoint. Beside it: the at-least-once path (a plain subscription,
// OnEntry into a map, checkpoints in memory) and the floor, reading the
// feed alone.
func BenchmarkCatchUpBolt(b *testing.B) {
	tr := seedPlaced(b, catchUpEntries)
	ctx := context.Background()
	head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("floor=feed-read", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			for since := int64(0); since < head; {
				p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since, Limit: transport.MaxLimit})
				if err != nil {
					b.Fatal(err)
				}
				n += len(p.Entries)
				since = p.Entries[len(p.Entries)-1].Sequence
			}
			if n != catchUpEntries {
				b.Fatalf("read %d", n)
			}
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("at-least-once=OnEntry", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var mu sync.Mutex
			totals := map[string]int{}
			sub, err := subscription.New(tr, "bench", subscription.NewMemoryCheckpoints())
			if err != nil {
				b.Fatal(err)
			}
			sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error {
				mu.Lock()
				defer mu.Unlock()
				totals[e.AggregateID] += len(e.Events[0].Data)
				return nil
			})
			runUntil(b, sub, head)
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("exactly-once=projection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			db, cps := openView(b)
			b.StartTimer()
			p := projection.New(cps)
			projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
				return addTotal(tx, env.AggregateID, e.Total)
			})
			sub, err := subscription.New(tr, "bench", cps)
			if err != nil {
				b.Fatal(err)
			}
			p.Attach(sub)
			runUntil(b, sub, head)
			b.StopTimer()
			_ = db.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(catchUpEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
}

// BenchmarkTailBolt: a subscription follows the memory transport's feed
// live; each iteration stores one batch and waits until the subscription
// has handled it (Await: for the projection, its bbolt transaction has
// committed). Reported: p50 and p99 from Store's return. exactly-once is
// a projection into bbolt (one commit and fsync per batch when tailing);
// the floor is a plain subscription whose handler does nothing.
func BenchmarkTailBolt(b *testing.B) {
	b.Run("floor=subscription", func(b *testing.B) {
		tailBolt(b, func(tr *memory.Transport) *subscription.Subscription {
			sub, err := subscription.New(tr, "tail", subscription.NewMemoryCheckpoints(), subscription.Wait(30*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
			return sub
		})
	})
	b.Run("exactly-once=projection", func(b *testing.B) {
		_, cps := openView(b)
		tailBolt(b, func(tr *memory.Transport) *subscription.Subscription {
			p := projection.New(cps)
			projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
				return addTotal(tx, env.AggregateID, e.Total)
			})
			sub, err := subscription.New(tr, "tail", cps, subscription.Wait(30*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			p.Attach(sub)
			return sub
		})
	})
}

func tailBolt(b *testing.B, build func(*memory.Transport) *subscription.Subscription) {
	ctx := context.Background()
	tr := memory.New()
	sub := build(tr)
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
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50_µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99_µs")
}
