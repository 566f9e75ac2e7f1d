package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/serialized"
)

type benchTally struct{ N int }

// BenchTicked is the event of the server benchmark's aggregates.
type BenchTicked struct {
	By int `json:"by"`
}

var benchTallies = aggregate.MustNew[benchTally]("tally", aggregate.On(func(s *benchTally, e BenchTicked) { s.N += e.By }))

// BenchmarkServerUpdates runs repository.Update (a GET, then a POST
// expecting the loaded version) from 64 workers through the HTTP transport
// to sourced-server on loopback, on 256 aggregates picked at random, with
// events in memory, in a bbolt file (-data) and in PostgreSQL (a throwaway
// cluster of internal/pgtest: skipped without the server binaries, unless
// SOURCED_REQUIRE_POSTGRES=1). A conflict is retried at
// once (the repository reloads and runs the command again); each Update is
// timed from its call to its return, retries included. Reported: updates/s,
// the p50 and p99 of an Update in milliseconds, and attempts per Update (1
// plus the conflicts retried). b.N is the number of successful Updates,
// for example -benchtime 20000x (issue 22).
func BenchmarkServerUpdates(b *testing.B) {
	for _, backend := range []string{"memory", "bolt", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			args := []string{"-addr", "127.0.0.1:0", "-rate-limit", "1000000000", "-log-level", "error", "-console", "off"}
			vars := map[string]string{}
			switch backend {
			case "bolt":
				args = append(args, "-data", filepath.Join(b.TempDir(), "events.db"))
			case "postgres":
				ctx := context.Background()
				cluster, err := pgtest.Start(ctx)
				cluster = pgtest.Need(b, cluster, err)
				defer cluster.Stop()
				dbURL, err := cluster.NewDatabase(ctx)
				if err != nil {
					b.Fatal(err)
				}
				// SOURCED_BENCH_PG_PARAMS adds connection parameters, to
				// see where the time goes: for example pool_max_conns=64,
				// or synchronous_commit=off (no WAL flush per commit).
				if p := os.Getenv("SOURCED_BENCH_PG_PARAMS"); p != "" {
					sep := "?"
					if strings.Contains(dbURL, "?") {
						sep = "&"
					}
					dbURL += sep + p
				}
				vars["SOURCED_POSTGRES_URL"] = dbURL
			}
			benchServerUpdates(b, args, vars, 64, 256)
		})
	}
}

func benchServerUpdates(b *testing.B, args []string, vars map[string]string, workers, aggregates int) {
	const access, secret = "bench-access", "bench-secret"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	vars["SERIALIZED_ACCESS_KEY"], vars["SERIALIZED_SECRET_ACCESS_KEY"] = access, secret
	go func() { done <- run(ctx, args, env(vars), &syncBuffer{}, ready) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		b.Fatalf("server did not start: %v", err)
	}
	client, err := serialized.New(serialized.WithBaseURL("http://"+addr), serialized.WithKeys(access, secret))
	if err != nil {
		b.Fatal(err)
	}
	repo := repository.New(client, benchTallies, repository.WithRetry(func() backoff.BackOff {
		return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1_000_000)
	}))
	var attempts atomic.Int64 // the command runs once per attempt: a conflict runs it again
	tick := func(r *aggregate.Root[benchTally]) error {
		attempts.Add(1)
		return r.Record(BenchTicked{By: 1})
	}
	ids := make([]string, aggregates)
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := repo.Create(ctx, ids[i], tick); err != nil {
			b.Fatal(err)
		}
	}
	attempts.Store(0)
	var next atomic.Int64
	took := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	b.ResetTimer()
	began := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 22))
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := repo.Update(ctx, ids[rng.IntN(len(ids))], tick); err != nil {
					b.Error(err)
					return
				}
				took[w] = append(took[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	all := slices.Concat(took...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	ms := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "updates/s")
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(attempts.Load())/float64(len(all)), "attempts/update")
	b.Logf("%d workers, %d aggregates: %d updates in %s", workers, aggregates, len(all), fmt.Sprint(elapsed.Round(time.Millisecond)))
}
