package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

type account struct{ Balance int64 }

// Opened is the event each created account records.
type Opened struct {
	Owner   string `json:"owner"`
	Deposit int64  `json:"deposit"`
}

var accounts = aggregate.MustNew[account]("account", aggregate.On(func(s *account, e Opened) { s.Balance = e.Deposit }))

// BenchmarkCreateMillion creates 1,000,000 aggregates of one event each
// through repository.Create on one memory transport, and reports the cost
// per Create of the first and of the last 100,000: the store must not get
// slower as it grows (issue 20: last/first within 1.2). Run it with
// -benchtime 1x; one run takes a few seconds.
func BenchmarkCreateMillion(b *testing.B) {
	const total, chunk = 1_000_000, 100_000
	ids := make([]string, total)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	ctx := context.Background()
	b.ReportAllocs()
	var first, last time.Duration
	for b.Loop() {
		repo := repository.New(memory.New(), accounts)
		began := time.Now()
		for i, id := range ids {
			if _, err := repo.Create(ctx, id, func(r *aggregate.Root[account]) error {
				return r.Record(Opened{Owner: "someone", Deposit: 100})
			}); err != nil {
				b.Fatal(err)
			}
			switch i + 1 {
			case chunk:
				first += time.Since(began)
			case total - chunk:
				began = time.Now()
			case total:
				last += time.Since(began)
			}
		}
	}
	n := float64(b.N * chunk)
	b.ReportMetric(float64(first.Nanoseconds())/n, "first100k-ns/create")
	b.ReportMetric(float64(last.Nanoseconds())/n, "last100k-ns/create")
	b.ReportMetric(float64(last)/float64(first), "last/first")
}
