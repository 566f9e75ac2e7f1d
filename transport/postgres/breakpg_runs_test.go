package postgres_test

import (
	"context"
	"fmt"
	"slices"
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
	ctx := context.Background()
	s := f.schema
	var twice, numberedWhereLooked, lost int64
	var stats, counted string
	require.NoError(f.t, f.tr.Pool().QueryRow(ctx, `SELECT
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
		Scan(&twice, &numberedWhereLooked, &lost, &stats, &counted))
	require.Zero(f.t, twice, "batches numbered twice")
	require.Zero(f.t, numberedWhereLooked, "numbered batches where the runs look for unnumbered ones")
	require.Zero(f.t, lost, "committed batches without a number where no run looks")
	require.Equal(f.t, counted, stats, "counts are those of the numbered batches")
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
