package postgres_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
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
// one-event batches to distinct aggregates, beside pgbench with 32 clients
// running one-row insert transactions: the same JSON into a table with a
// serial key (the bare insert); the very row our store writes into a table
// with the one key an event store needs (tenant, type, id, version); and
// that row into a table defined like ours (its keys and indexes, the
// feed's among them). The three take turns in
// short rounds, so that the machine's drift hits them alike. It reports
// each rate and ours as a ratio of each. Beside the rates, which follow
// whatever else the machine is doing, it reports what each transaction
// cost in CPU time (the server's processes, and the client's: this
// process for ours, pgbench for pgbench; ours includes numbering the
// batches for the feed, drain included), and the ratio of pgbench's cost
// to ours (cpu_ratio_*, 1 when ours costs what a bare insert does): a
// steadier figure on a busy machine. Run it once:
//
//	go test -run '^$' -bench Writers32 -benchtime 1x ./transport/postgres/
//
// SOURCED_PGBENCH_SECONDS sets a round's length (default 2 s),
// SOURCED_PGBENCH_ROUNDS their number (default 3).
func BenchmarkWriters32(b *testing.B) {
	const clients = 32
	seconds, rounds := envInt("SOURCED_PGBENCH_SECONDS", 2), envInt("SOURCED_PGBENCH_ROUNDS", 3)
	url := database(b)
	pgbench := "pgbench"
	if dir := cluster.BinDir(); dir != "" {
		pgbench = filepath.Join(dir, "pgbench")
	}
	if _, err := exec.LookPath(pgbench); err != nil {
		b.Skip("pgbench not found")
	}
	for b.Loop() {
		// 32 connections for the writers, as pgbench has, and two more:
		// the transport keeps one for its feed listener (LISTEN) and its
		// sequencer takes one while it numbers; with 32 in all, one or
		// two writers would always wait for a connection. No periodic
		// runs: between the writers' rounds the sequencer has nothing to
		// do but would still poll, in pgbench's time (an earlier
		// release's run cost pgbench's rounds 20 to 40% of their rate);
		// commits still wake it.
		tr := freshAt(b, url+"&pool_max_conns=34", postgres.WithSequencerInterval(time.Hour))
		ctx := context.Background()
		schema := tr.Schema()
		refs := make([]transport.Ref, clients)
		versions := make([]int64, clients)
		for i := range refs {
			refs[i] = transport.Ref{Type: "counter", ID: uuid.NewString()}
		}
		writers := func() (int64, time.Duration) {
			var stored atomic.Int64
			start := time.Now()
			deadline := start.Add(time.Duration(seconds) * time.Second)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(deadline) {
						if err := tr.Store(ctx, refs[i], oneEvent, transport.Exactly(versions[i])); err != nil {
							b.Error(err)
							return
						}
						versions[i]++
						stored.Add(1)
					}
				}()
			}
			wg.Wait()
			return stored.Load(), time.Since(start)
		}
		dir := b.TempDir()
		pgbenchTPS := func(name, insert string) float64 {
			script := filepath.Join(dir, name+".sql")
			if err := os.WriteFile(script, []byte("\\set aid random(1, 2000000000)\n"+insert+"\n"), 0o644); err != nil {
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
		// The bare insert: the same JSON into a table with a serial key.
		bare := "INSERT INTO " + schema + ".pgbench_rows (aggregate_id, version, events) VALUES (:aid, 1, '" + benchJSON + "');"
		// The same row as ours, into a table with the event store's key,
		// and into a table defined like ours.
		sameRow := func(table string) string {
			return "INSERT INTO " + schema + "." + table + " (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events, tx)" +
				" VALUES ('', 'counter', md5(random()::text || :aid::text), 1, now(), 1, '{Incremented}', :aid, '" + benchJSON + "', pg_current_xact_id());"
		}
		keyed, same := sameRow("pgbench_keyed"), sameRow("pgbench_batches")
		for _, ddl := range []string{
			"CREATE TABLE " + schema + ".pgbench_rows (id bigserial PRIMARY KEY, aggregate_id bigint NOT NULL, version bigint NOT NULL, events json NOT NULL)",
			"CREATE TABLE " + schema + ".pgbench_keyed (LIKE " + schema + ".batches INCLUDING DEFAULTS, UNIQUE (tenant, aggregate_type, aggregate_id, version))",
			"CREATE TABLE " + schema + ".pgbench_batches (LIKE " + schema + ".batches INCLUDING ALL)",
		} {
			if _, err := tr.Pool().Exec(ctx, ddl); err != nil {
				b.Fatal(err)
			}
		}
		var ours, elapsed, drain, bareTPS, keyedTPS, sameTPS float64
		var total int64 // batches stored so far: the feed's head once all are numbered
		// CPU time spent, and transactions done, by ours and each pgbench
		// script.
		cpu, done := map[string]time.Duration{}, map[string]float64{}
		measure := func(name string, f func() float64) {
			server, ok := cluster.ServerCPU()
			self, children := processCPU()
			n := f()
			if !ok {
				return
			}
			server2, _ := cluster.ServerCPU()
			self2, children2 := processCPU()
			cpu[name] += server2 - server + self2 - self + children2 - children
			done[name] += n
		}
		tps := func(name, insert string) float64 {
			var r float64
			measure(name, func() float64 {
				r = pgbenchTPS(name, insert)
				return r * float64(seconds)
			})
			return r
		}
		for range rounds {
			measure("ours", func() float64 {
				n, d := writers()
				ours += float64(n)
				elapsed += d.Seconds()
				// Number what the writers left before pgbench runs
				// (FeedHead numbers every committed batch first), so that
				// our sequencing does not run into pgbench's round and
				// slow it down.
				// Wait for all of it: a sequencer still busy with this
				// round's batches would spend its time in pgbench's.
				total += n
				start := time.Now()
				for {
					head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
					if err != nil {
						b.Fatal(err)
					}
					if head >= total {
						break
					}
					time.Sleep(time.Millisecond)
				}
				drain += time.Since(start).Seconds() * 1000 / float64(rounds)
				return float64(n)
			})
			bareTPS += tps("bare", bare) / float64(rounds)
			keyedTPS += tps("keyed", keyed) / float64(rounds)
			sameTPS += tps("same", same) / float64(rounds)
		}
		perTx := func(name string) float64 { return float64(cpu[name].Microseconds()) / done[name] }
		if done["ours"] > 0 {
			b.ReportMetric(perTx("ours"), "ours_cpu_us/tx")
			b.ReportMetric(perTx("bare"), "pgbench_cpu_us/tx")
			b.ReportMetric(perTx("bare")/perTx("ours"), "cpu_ratio_bare")
			b.ReportMetric(perTx("keyed")/perTx("ours"), "cpu_ratio_keyed")
			b.ReportMetric(perTx("same")/perTx("ours"), "cpu_ratio_same_table")
		}
		ours /= elapsed
		b.ReportMetric(ours, "ours_tx/s")
		b.ReportMetric(bareTPS, "pgbench_tx/s")
		b.ReportMetric(keyedTPS, "pgbench_keyed_tx/s")
		b.ReportMetric(sameTPS, "pgbench_same_table_tx/s")
		b.ReportMetric(drain, "drain_ms")
		b.ReportMetric(ours/bareTPS, "ratio_bare")
		b.ReportMetric(ours/keyedTPS, "ratio_keyed")
		b.ReportMetric(ours/sameTPS, "ratio_same_table")
	}
}

// benchJSON is one event as our store writes it.
const benchJSON = `[{"eventId":"0b8f5f2e-6a0c-4d8e-9f5e-3a7c2d1b4e6f","eventType":"Incremented","data":{"by":1}}]`

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkFeedHeadUnderWrites: a feed reader asks for the head while 16
// writers store one-event batches; each answer includes every batch whose
// Store had returned when the call began, so under writes a read usually
// numbers batches itself and waits for older transactions still open.
func BenchmarkFeedHeadUnderWrites(b *testing.B) {
	tr := fresh(b)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
			for v := int64(0); ctx.Err() == nil; v++ {
				if err := tr.Store(ctx, ref, oneEvent, transport.Exactly(v)); err != nil && ctx.Err() == nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := tr.FeedHead(context.Background(), transport.Scope{Type: "counter"}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stop()
	wg.Wait()
}

// BenchmarkFeedLatency: how long a batch takes from the start of its Store
// to a feed reader of another Transport (another process, say) that waits
// on the feed: p50 and p99 over the iterations, with the database quiet
// and with an unrelated transaction open the whole time (it wrote a row
// and sits idle in its transaction, as a forgotten session or a long
// batch job would):
//
//	go test -run '^$' -bench FeedLatency -benchtime 200x ./transport/postgres/
//
// With SOURCED_PG_STORED_WHILE_OPEN=n, a third case first stores (and
// numbers) n batches while the unrelated transaction is open: VACUUM
// cannot remove the rows the numbering deleted or updated meanwhile, and
// every run reads past them.
func BenchmarkFeedLatency(b *testing.B) {
	cases := []struct {
		name   string
		open   bool
		stored int
	}{{"quiet", false, 0}, {"unrelated_tx_open", true, 0}}
	if n := envInt("SOURCED_PG_STORED_WHILE_OPEN", 0); n > 0 {
		cases = append(cases, struct {
			name   string
			open   bool
			stored int
		}{fmt.Sprintf("unrelated_tx_open_%d_stored", n), true, n})
	}
	for _, c := range cases {
		open := c.open
		b.Run(c.name, func(b *testing.B) {
			writer := fresh(b)
			reader := sameStore(b, writer)
			ctx := context.Background()
			if open {
				conn, err := pgx.Connect(ctx, database(b))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close(ctx)
				if _, err := conn.Exec(ctx, "BEGIN; CREATE TEMP TABLE nightly (n int); INSERT INTO nightly VALUES (1)"); err != nil {
					b.Fatal(err)
				}
				defer func() { _, _ = conn.Exec(ctx, "ROLLBACK") }()
			}
			scope := transport.Scope{Type: "counter"}
			for i := 0; i < c.stored; i += 1000 {
				bulk := make([]transport.Batch, min(1000, c.stored-i))
				for j := range bulk {
					bulk[j] = transport.Batch{AggregateID: uuid.NewString(), Events: oneEvent}
				}
				if err := writer.StoreBulk(ctx, scope, bulk); err != nil {
					b.Fatal(err)
				}
				if _, err := writer.FeedHead(ctx, scope); err != nil { // numbered as it goes
					b.Fatal(err)
				}
			}
			since, err := reader.FeedHead(ctx, scope)
			if err != nil {
				b.Fatal(err)
			}
			waiting := make(chan struct{}, 1)
			postgres.SetAfterRead(reader, func() {
				select {
				case waiting <- struct{}{}:
				default:
				}
			})
			var latencies []time.Duration
			for b.Loop() {
				got := make(chan transport.FeedPage, 1)
				go func() {
					p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: scope, Since: since, Wait: 10 * time.Second})
					if err != nil {
						b.Error(err)
					}
					got <- p
				}()
				<-waiting // its first read found nothing: it waits
				start := time.Now()
				if err := writer.Store(ctx, transport.Ref{Type: "counter", ID: uuid.NewString()}, oneEvent, transport.MustNotExist); err != nil {
					b.Fatal(err)
				}
				p := <-got
				latencies = append(latencies, time.Since(start))
				if len(p.Entries) != 1 {
					b.Fatalf("the waiting reader did not get the batch (%d entries)", len(p.Entries))
				}
				since = p.Entries[0].Sequence
				select {
				case <-waiting: // the wake-up's read
				default:
				}
			}
			slices.Sort(latencies)
			at := func(q float64) float64 {
				return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(at(0.50), "p50_ms")
			b.ReportMetric(at(0.99), "p99_ms")
		})
	}
}
