package postgres_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/transporttest"
)

var oneEvent = []transport.Event{{EventType: "Incremented", Data: []byte(`{"by":1}`)}}

// BenchmarkStore: one batch of one event to a fresh aggregate.
func BenchmarkStore(b *testing.B) {
	tr := fresh(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := tr.Store(ctx, transport.Ref{Type: "counter", ID: uuid.NewString()}, oneEvent, transport.MustNotExist); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad1000: load an aggregate of 1,000 one-event batches.
func BenchmarkLoad1000(b *testing.B) {
	tr := fresh(b)
	ctx := context.Background()
	ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
	for i := range 1000 {
		if err := tr.Store(ctx, ref, oneEvent, transport.Exactly(int64(i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := tr.Load(ctx, ref, 0, 0)
		if err != nil || len(p.Events) != 1000 {
			b.Fatal(err, len(p.Events))
		}
	}
}

// BenchmarkUpdateContended: 8 goroutines Update one aggregate.
func BenchmarkUpdateContended(b *testing.B) {
	tr := fresh(b)
	ctx := context.Background()
	repo := repository.New(tr, counters)
	id := uuid.NewString()
	if _, err := repo.Create(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) }); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4) // 2 cores x 4 = 8 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := repo.Update(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) }); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkFeedCatchUp reads a feed of 10,000 batches in pages of 1000.
func BenchmarkFeedCatchUp(b *testing.B) {
	const batches = 10_000
	tr := fresh(b)
	ctx := context.Background()
	scope := transport.Scope{Type: "counter"}
	for i := 0; i < batches; i += 100 {
		bulk := make([]transport.Batch, 100)
		for j := range bulk {
			bulk[j] = transport.Batch{AggregateID: uuid.NewString(), Events: oneEvent}
		}
		if err := tr.StoreBulk(ctx, scope, bulk); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n, err := transporttest.CountFeed(ctx, tr, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
		if err != nil || n != batches {
			b.Fatalf("read %d: %v", n, err)
		}
	}
	b.ReportMetric(float64(batches*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkWriters32 runs, in one run on one cluster, 32 writers storing
// one-event batches to distinct aggregates for a fixed time, then pgbench
// with 32 clients running a comparable one-row insert transaction for the
// same time, and reports both rates and their ratio. Run it once:
//
//	go test -run '^$' -bench Writers32 -benchtime 1x ./transport/postgres/
func BenchmarkWriters32(b *testing.B) {
	const clients = 32
	seconds := 5
	if s, err := strconv.Atoi(os.Getenv("SOURCED_PGBENCH_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	url := database(b)
	pgbench := "pgbench"
	if dir := cluster.BinDir(); dir != "" {
		pgbench = filepath.Join(dir, "pgbench")
	}
	if _, err := exec.LookPath(pgbench); err != nil {
		b.Skip("pgbench not found")
	}
	for b.Loop() {
		// The same concurrency as pgbench's: 32 connections.
		tr := freshAt(b, url+"&pool_max_conns=32")
		ctx := context.Background()
		var stored atomic.Int64
		deadline := time.Now().Add(time.Duration(seconds) * time.Second)
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
				for v := int64(0); time.Now().Before(deadline); v++ {
					if err := tr.Store(ctx, ref, oneEvent, transport.Exactly(v)); err != nil {
						b.Error(err)
						return
					}
					stored.Add(1)
				}
			}()
		}
		start := time.Now()
		wg.Wait()
		ours := float64(stored.Load()) / time.Since(start).Seconds()

		schema := tr.Schema()
		pgbenchTPS := func(table, insert string) float64 {
			script := filepath.Join(b.TempDir(), "insert.sql")
			if err := os.WriteFile(script, []byte("\\set aid random(1, 2000000000)\n"+insert+"\n"), 0o644); err != nil {
				b.Fatal(err)
			}
			if _, err := tr.Pool().Exec(ctx, table); err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(pgbench, "-n", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(seconds), "-f", script, url)
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("pgbench: %v: %s", err, out)
			}
			m := regexp.MustCompile(`tps = ([0-9.]+)`).FindSubmatch(out)
			if m == nil {
				b.Fatalf("no tps in pgbench output: %s", out)
			}
			tps, _ := strconv.ParseFloat(string(m[1]), 64)
			return tps
		}
		// The one-row insert: the same JSON into a table with a serial key.
		theirs := pgbenchTPS("CREATE TABLE "+schema+".pgbench_rows (id bigserial PRIMARY KEY, aggregate_id bigint NOT NULL, version bigint NOT NULL, events json NOT NULL)",
			"INSERT INTO "+schema+".pgbench_rows (aggregate_id, version, events) VALUES (:aid, 1, '[{\"eventType\":\"Incremented\",\"data\":{\"by\":1}}]');")
		// For context: the same insert into a table shaped like ours, with
		// its unique version key and transaction index.
		shaped := pgbenchTPS("CREATE TABLE "+schema+".pgbench_batches (id bigserial PRIMARY KEY, tenant text NOT NULL, aggregate_type text NOT NULL, aggregate_id text NOT NULL, version bigint NOT NULL, tx xid8 NOT NULL DEFAULT pg_current_xact_id(), events json NOT NULL, UNIQUE (tenant, aggregate_type, aggregate_id, version)); CREATE INDEX ON "+schema+".pgbench_batches (tx)",
			"INSERT INTO "+schema+".pgbench_batches (tenant, aggregate_type, aggregate_id, version, events) VALUES ('', 'counter', md5(random()::text || :aid::text), 1, '[{\"eventType\":\"Incremented\",\"data\":{\"by\":1}}]');")
		b.ReportMetric(shaped, "pgbench_shaped_tx/s")
		b.ReportMetric(ours, "ours_tx/s")
		b.ReportMetric(theirs, "pgbench_tx/s")
		b.ReportMetric(ours/theirs, "ratio")
	}
}
