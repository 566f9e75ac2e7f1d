package bolt_test

import (
	"context"

	"path/filepath"
	"testing"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/memory"
)

// stores gives each benchmark the bolt transport beside the memory one.
func stores(b *testing.B) map[string]transport.Transport {
	tr, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	return map[string]transport.Transport{"bolt": tr, "memory": memory.New()}
}

var event = []transport.Event{{EventType: "Counted", Data: []byte(`{"by":1,"note":"a small payload of a typical size"}`)}}

// BenchmarkStore appends one batch of one event (bolt: one fsynced
// transaction).
func BenchmarkStore(b *testing.B) {
	for _, name := range []string{"memory", "bolt"} {
		b.Run(name, func(b *testing.B) {
			tr := stores(b)[name]
			ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := tr.Store(ctx, ref, event, transport.Exactly(int64(i))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoad1000 loads one page of 1,000 events (1,000 batches).
func BenchmarkLoad1000(b *testing.B) {
	for _, name := range []string{"memory", "bolt"} {
		b.Run(name, func(b *testing.B) {
			tr := stores(b)[name]
			ctx := context.Background()
			ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
			for v := 0; v < 1000; v++ {
				if err := tr.Store(ctx, ref, event, transport.Exactly(int64(v))); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p, err := tr.Load(ctx, ref, 0, 0)
				if err != nil || len(p.Events) != 1000 {
					b.Fatal(err, len(p.Events))
				}
			}
		})
	}
}

type tally struct{ N int }
type Counted struct {
	By int `json:"by"`
}

var tallies = aggregate.MustNew[tally]("counter", aggregate.On(func(s *tally, e Counted) { s.N += e.By }))

// BenchmarkUpdateContended16 runs repository.Update from 16 goroutines on
// one aggregate at a time (a fresh one every 64 updates).
func BenchmarkUpdateContended16(b *testing.B) {
	for _, name := range []string{"memory", "bolt"} {
		b.Run(name, func(b *testing.B) {
			tr := stores(b)[name]
			ctx := context.Background()
			repo := repository.New(tr, tallies, repository.WithRetry(func() backoff.BackOff {
				return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1_000_000)
			}))
			ids := make([]string, b.N/64+1)
			for i := range ids {
				ids[i] = uuid.NewString()
			}
			var n atomicCounter
			b.ReportAllocs()
			b.SetParallelism(8) // 16 goroutines on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := ids[n.next()/64]
					_, err := repo.Update(ctx, id, func(r *aggregate.Root[tally]) error { return r.Record(Counted{By: 1}) })
					if err != nil && !isNotFound(err) {
						b.Error(err)
						return
					}
					if err != nil { // the first writer of a fresh aggregate creates it
						_, _ = repo.Create(ctx, id, func(r *aggregate.Root[tally]) error { return r.Record(Counted{By: 1}) })
					}
				}
			})
		})
	}
}
