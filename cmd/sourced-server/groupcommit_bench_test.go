package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
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
// events in memory and in a bbolt file (-data). A conflict is retried at
// once (the repository reloads and runs the command again); each Update is
// timed from its call to its return, retries included. Reported: updates/s,
// and the p50 and p99 of an Update in milliseconds. b.N is the number of
// successful Updates, for example -benchtime 20000x (issue 22).
func BenchmarkServerUpdates(b *testing.B) {
	for _, backend := range []string{"memory", "bolt"} {
		b.Run(backend, func(b *testing.B) {
			args := []string{"-addr", "127.0.0.1:0", "-rate-limit", "1000000000", "-log-level", "error", "-console", "off"}
			if backend == "bolt" {
				args = append(args, "-data", filepath.Join(b.TempDir(), "events.db"))
			}
			benchServerUpdates(b, args, 64, 256)
		})
	}
}

func benchServerUpdates(b *testing.B, args []string, workers, aggregates int) {
	const access, secret = "bench-access", "bench-secret"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	vars := map[string]string{"SERIALIZED_ACCESS_KEY": access, "SERIALIZED_SECRET_ACCESS_KEY": secret}
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
	tick := func(r *aggregate.Root[benchTally]) error { return r.Record(BenchTicked{By: 1}) }
	ids := make([]string, aggregates)
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := repo.Create(ctx, ids[i], tick); err != nil {
			b.Fatal(err)
		}
	}
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
	b.Logf("%d workers, %d aggregates: %d updates in %s", workers, aggregates, len(all), fmt.Sprint(elapsed.Round(time.Millisecond)))
}
