package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// feedState drives numbering runs one at a time on a schema whose
// transports run none of their own, and checks after each what the feed
// promises: no batch numbered twice, none numbered and still where runs
// look for unnumbered ones (at or past scan_from, or in scan_also), every
// committed batch without a number where they look, and counts that are
// those of the numbered batches.
type feedState struct {
	t      *testing.T
	tr     *postgres.Transport
	schema string
}

// run runs the sequencer's statement once, as the transport does, with
// chunk batches at most, and returns how many it numbered.
func (f *feedState) run(chunk int) int64 {
	f.t.Helper()
	ctx := context.Background()
	sequence, _ := postgres.FeedQueries(f.tr)
	var numbered int64
	require.NoError(f.t, pgx.BeginTxFunc(ctx, f.tr.Pool(), pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('enable_seqscan', 'off', true), pg_advisory_xact_lock($1)", postgres.SequencerLock(f.tr.Schema())); err != nil {
			return err
		}
		var seq int64
		var more bool
		var async *string
		return tx.QueryRow(ctx, sequence, f.tr.Schema()+"_feed", "test", chunk).Scan(&numbered, &seq, &more, &async)
	}))
	f.check()
	return numbered
}

// check checks the promises (see feedState).
func (f *feedState) check() {
	f.t.Helper()
	require.NoError(f.t, f.broken(context.Background()))
}

// broken tells which promise (see feedState) the feed breaks, read in one
// statement (one snapshot): every committed state must keep them all.
func (f *feedState) broken(ctx context.Context) error {
	s := f.schema
	var twice, numberedWhereLooked, lost int64
	var stats, counted string
	err := f.tr.Pool().QueryRow(ctx, `SELECT
			(SELECT count(*) FROM (SELECT batch_id FROM `+s+`feed GROUP BY batch_id HAVING count(*) > 1) d),
			(SELECT count(*) FROM `+s+`batches b JOIN `+s+`feed f ON f.tx = b.tx AND f.batch_id = b.id, `+s+`feed_counter c
				WHERE NOT (b.tx < c.scan_from AND b.tx <> ALL (c.scan_also))),
			(SELECT count(*) FROM `+s+`batches b, `+s+`feed_counter c
				WHERE NOT EXISTS (SELECT 1 FROM `+s+`feed f WHERE f.tx = b.tx AND f.batch_id = b.id)
				AND b.tx < c.scan_from AND b.tx <> ALL (c.scan_also)),
			coalesce((SELECT string_agg(format('%s/%s:%s,%s,%s', tenant, aggregate_type, aggregates, batches, events), ' ' ORDER BY tenant, aggregate_type)
				FROM `+s+`feed_stats WHERE batches > 0), ''),
			coalesce((SELECT string_agg(format('%s/%s:%s,%s,%s', tenant, aggregate_type, a, n, e), ' ' ORDER BY tenant, aggregate_type) FROM (
				SELECT b.tenant, b.aggregate_type, count(*) FILTER (WHERE b.version = 1) AS a, count(*) AS n, sum(b.event_count) AS e
				FROM `+s+`batches b JOIN `+s+`feed f ON f.tx = b.tx AND f.batch_id = b.id GROUP BY 1, 2) x), '')`).
		Scan(&twice, &numberedWhereLooked, &lost, &stats, &counted)
	switch {
	case err != nil:
		return err
	case twice > 0:
		return fmt.Errorf("%d batches numbered twice", twice)
	case numberedWhereLooked > 0:
		return fmt.Errorf("%d numbered batches where the runs look for unnumbered ones", numberedWhereLooked)
	case lost > 0:
		return fmt.Errorf("%d committed batches without a number where no run looks", lost)
	case stats != counted:
		return fmt.Errorf("counts %q, numbered batches %q", stats, counted)
	}
	return nil
}

// opened is a store held open before its commit (its batches written, its
// transaction id taken) until commit is called.
type opened struct {
	commit func()
}

// openStore stores version 1 of ids in one transaction, through a
// transport of its own on tr's schema, and holds it open before COMMIT.
func openStore(t *testing.T, tr *postgres.Transport, ids ...string) opened {
	t.Helper()
	tp := sameStore(t, tr)
	postgres.StopBackground(tp)
	entered, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	postgres.SetBeforeCommit(tp, func(ctx context.Context, tx pgx.Tx) {
		close(entered)
		<-release
	})
	batches := make([]transport.Batch, len(ids))
	for i, id := range ids {
		batches[i] = transport.Batch{AggregateID: id, Events: placed, Expected: transport.MustNotExist}
	}
	go func() { done <- tp.StoreBulk(context.Background(), transport.Scope{Type: "order"}, batches) }()
	<-entered
	return opened{commit: func() {
		close(release)
		require.NoError(t, <-done)
	}}
}

// TestRunsBelowScanFrom (issue 23): runs of one batch at most, after
// three bulk stores stayed open below scan_from (in scan_also) while a
// later store was numbered: the first run takes one of them alone (its id
// below scan_from: scan_from stays, scan_also loses it), the next stops
// at one of the others (below scan_from, not alone), the next at the
// later store; a delete between runs takes from the counts only what was
// numbered. After every run, nothing is numbered twice, nothing numbered
// is where runs look, nothing committed is lost, and the counts are exact.
func TestRunsBelowScanFrom(t *testing.T) {
	tr := fresh(t)
	postgres.StopBackground(tr)
	ctx := context.Background()
	f := &feedState{t: t, tr: tr, schema: pgx.Identifier{tr.Schema()}.Sanitize() + "."}
	name := map[string]string{}
	id := func(n string) string {
		u := uuid.NewString()
		name[u] = n
		return u
	}
	x1, x2, x3, y, z, b, c := id("x1"), id("x2"), id("x3"), id("y"), id("z"), id("b"), id("c")
	xs := []string{x1, x2, x3} // a bulk store writes in the order of the ids
	slices.Sort(xs)
	x1, x2, x3 = xs[0], xs[1], xs[2]
	name[x1], name[x2], name[x3] = "x1", "x2", "x3"
	ox := openStore(t, tr, x1, x2, x3)
	oy := openStore(t, tr, y)
	oz := openStore(t, tr, z)
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: b}, placed, transport.MustNotExist))
	require.EqualValues(t, 1, f.run(1), "b, above the open ones")
	ox.commit()
	oy.commit()
	oz.commit()
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: c}, placed, transport.MustNotExist))
	var alsoBefore []string
	require.NoError(t, tr.Pool().QueryRow(ctx, `SELECT scan_also::text[] FROM `+f.schema+`feed_counter`).Scan(&alsoBefore))
	require.GreaterOrEqual(t, len(alsoBefore), 3, "the open stores are in scan_also")

	assert.EqualValues(t, 3, f.run(1), "x's transaction alone, below scan_from")
	assert.EqualValues(t, 1, f.run(1), "y, stopping at z, below scan_from")
	del := func(target transport.DeleteTarget) {
		token, err := tr.RequestDelete(ctx, target)
		require.NoError(t, err)
		require.NoError(t, tr.ConfirmDelete(ctx, target, token))
		f.check()
	}
	del(transport.DeleteAggregate(transport.Ref{Type: "order", ID: x2})) // numbered
	del(transport.DeleteAggregate(transport.Ref{Type: "order", ID: z}))  // not yet
	assert.EqualValues(t, 1, f.run(1), "c")
	assert.EqualValues(t, 0, f.run(1))
	d := id("d")
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: d}, placed, transport.MustNotExist))
	assert.EqualValues(t, 1, f.run(1))

	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	var got []string
	for _, e := range p.Entries {
		got = append(got, fmt.Sprintf("%d:%s", e.Sequence, name[e.AggregateID]))
	}
	assert.Equal(t, []string{"1:b", "2:x1", "4:x3", "5:y", "6:c", "7:d"}, got)
	infos, err := tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 6, Batches: 6, Events: 6}}, infos)
}

// TestPromisesKeptUnderConcurrency (issue 23): three processes with
// chunked runs (their sequencers, and their readers' own runs), writers of
// single and bulk stores, one of them holding each store open while a
// store of another process commits and is numbered above it, and
// deleters of aggregates and of a type, in two tenants. A checker reads,
// over and over, in one snapshot each time, whether a committed state
// breaks a promise (numbered twice, numbered where runs look, committed
// and where no run looks, counts not those of the numbered batches), and
// at the end every batch left has exactly one number.
func TestPromisesKeptUnderConcurrency(t *testing.T) {
	tr := fresh(t)
	other, third := sameStore(t, tr), sameStore(t, tr)
	postgres.SetSequencerChunk(tr, 2)
	postgres.SetSequencerChunk(other, 3)
	postgres.SetSequencerChunk(third, 1)
	ctx := context.Background()
	f := &feedState{t: t, tr: tr, schema: pgx.Identifier{tr.Schema()}.Sanitize() + "."}
	// slow's stores stay open while a store of another type (no lock of
	// theirs in common) commits and is numbered above them: they end in
	// scan_also.
	slow := sameStore(t, tr)
	postgres.SetSequencerChunk(slow, 2)
	postgres.SetBeforeCommit(slow, func(ctx context.Context, tx pgx.Tx) {
		assert.NoError(t, third.Store(ctx, transport.Ref{Type: "audit", ID: uuid.NewString()}, placed, transport.MustNotExist))
		_, err := third.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
		assert.NoError(t, err)
	})
	tenants := []string{"", uuid.NewString()}
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	const writers, rounds = 4, 30
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := []*postgres.Transport{slow, other, third, tr}[w]
			for r := range rounds {
				tenant := tenants[(w+r)%2]
				id := ids[(w*7+r)%len(ids)]
				var err error
				if r%3 == 0 {
					err = tp.StoreBulk(ctx, transport.Scope{Tenant: tenant, Type: "order"}, []transport.Batch{
						{AggregateID: id, Events: placed}, {AggregateID: ids[(w*7+r+1)%len(ids)], Events: placed},
					})
				} else {
					err = tp.Store(ctx, transport.Ref{Tenant: tenant, Type: "order", ID: id}, placed, transport.Any)
				}
				if !assert.NoError(t, err) {
					return
				}
				if r%5 == 0 {
					_, err := tp.FeedOverview(ctx, tenant)
					assert.NoError(t, err)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the deleter
		defer wg.Done()
		for r := range rounds {
			target := transport.DeleteAggregate(transport.Ref{Tenant: tenants[r%2], Type: "order", ID: ids[r%len(ids)]})
			if r%10 == 9 {
				target = transport.DeleteAllOfType(transport.Scope{Tenant: tenants[1], Type: "order"})
			}
			tp := []*postgres.Transport{tr, other, third}[r%3]
			token, err := tp.RequestDelete(ctx, target)
			if assert.NoError(t, err) {
				assert.NoError(t, tp.ConfirmDelete(ctx, target, token))
			}
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	checks := 0
	var broken error
	for finished := false; !finished; checks++ {
		select {
		case <-done:
			finished = true
		default:
		}
		if err := f.broken(ctx); err != nil && broken == nil {
			broken = fmt.Errorf("after %d checks: %w", checks, err)
		}
	}
	require.NoError(t, broken)
	t.Logf("%d checks", checks)
	for _, tenant := range tenants {
		_, err := tr.FeedOverview(ctx, tenant) // numbers what is left
		require.NoError(t, err)
	}
	f.check()
	var unnumbered int64
	require.NoError(t, tr.Pool().QueryRow(ctx, `SELECT count(*) FROM `+f.schema+`batches b
		WHERE NOT EXISTS (SELECT 1 FROM `+f.schema+`feed f WHERE f.tx = b.tx AND f.batch_id = b.id)`).Scan(&unnumbered))
	assert.Zero(t, unnumbered, "every batch left numbered")
}
