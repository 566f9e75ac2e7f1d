package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestUpgradeFromTheFirstSchema: a schema that the first release made and
// used (batches numbered by its sequence_feed function, one batch left
// without a number by a writer that went away) is migrated in place when
// a Transport opens it: the numbers given stay, the batch left over gets
// the next one, and storing, numbering, counting and deleting go on.
func TestUpgradeFromTheFirstSchema(t *testing.T) {
	url, pool, schema := olderSchema(t, "up", 1)
	ctx := context.Background()

	s := pgx.Identifier{schema}.Sanitize()
	a, b := uuid.NewString(), uuid.NewString()
	insert := func(id string, version int64) {
		_, err := pool.Exec(ctx, `INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)
			VALUES ('', 'order', $1, $2, now(), 1, '{OrderPlaced}', 0, '[{"eventId":"`+uuid.NewString()+`","eventType":"OrderPlaced"}]')`, id, version)
		require.NoError(t, err)
	}
	insert(a, 1)
	insert(b, 1)
	insert(a, 2)
	var numbered int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+s+`.sequence_feed(1, 'x')`).Scan(&numbered))
	require.Equal(t, 3, numbered, "the first schema's sequencer numbered three")
	insert(b, 2) // left without a number

	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema))
	require.NoError(t, err)
	defer tr.Close()
	var version int
	require.NoError(t, pool.QueryRow(ctx, `SELECT max(version) FROM `+s+`.schema_migrations`).Scan(&version))
	assert.Equal(t, postgres.SchemaVersion, version)

	feed := transport.Scope{Type: "order"}
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: feed})
	require.NoError(t, err)
	require.Len(t, p.Entries, 4)
	for i, want := range []struct {
		id      string
		version int64
	}{{a, 1}, {b, 1}, {a, 2}, {b, 2}} {
		assert.Equal(t, int64(i+1), p.Entries[i].Sequence)
		assert.Equal(t, want.id, p.Entries[i].AggregateID)
		assert.Equal(t, want.version, p.Entries[i].Version)
	}

	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: a}, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(2)))
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: feed, Since: 4})
	require.NoError(t, err)
	require.Len(t, p.Entries, 1)
	assert.Equal(t, int64(5), p.Entries[0].Sequence)

	target := transport.DeleteAggregate(transport.Ref{Type: "order", ID: b})
	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	infos, err := tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 3, Events: 3}}, infos)
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: feed})
	require.NoError(t, err)
	var seqs []int64
	for _, e := range p.Entries {
		seqs = append(seqs, e.Sequence)
	}
	assert.Equal(t, []int64{1, 3, 5}, seqs, "b's entries leave the feed; the others keep their numbers")
}

// TestUpgradeFromSchema3 (issue 23): a schema at version 3, with batches
// numbered below its horizon and one stored at or past it (committed, not
// numbered yet), is migrated to version 4: the numbered keep their
// numbers, the other becomes pending and is numbered next, once.
func TestUpgradeFromSchema3(t *testing.T) {
	url, pool, schema := olderSchema(t, "up", 3)
	ctx := context.Background()

	s := pgx.Identifier{schema}.Sanitize()
	a, b := uuid.NewString(), uuid.NewString()
	insert := func(id string, version int64) {
		_, err := pool.Exec(ctx, `INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)
			VALUES ('', 'order', $1, $2, now(), 1, '{OrderPlaced}', 0, '[{"eventId":"`+uuid.NewString()+`","eventType":"OrderPlaced"}]')`, id, version)
		require.NoError(t, err)
	}
	insert(a, 1)
	insert(b, 1)
	// What the version 3 sequencer left: these two numbered, the horizon
	// past them.
	for _, q := range []string{
		`INSERT INTO ` + s + `.feed (tenant, seq, aggregate_type, tx, batch_id)
			SELECT tenant, row_number() OVER (ORDER BY tx, id), aggregate_type, tx, id FROM ` + s + `.batches`,
		`INSERT INTO ` + s + `.feed_stats (tenant, aggregate_type, aggregates, batches, events, head) VALUES ('', 'order', 2, 2, 2, 2)`,
		`UPDATE ` + s + `.feed_counter SET seq = 2, horizon = (SELECT (max(tx)::text::bigint + 1)::text::xid8 FROM ` + s + `.batches)`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	insert(a, 2) // left without a number

	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema))
	require.NoError(t, err)
	defer tr.Close()
	feed := transport.Scope{Type: "order"}
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: feed})
	require.NoError(t, err)
	require.Len(t, p.Entries, 3)
	for i, want := range []struct {
		id      string
		version int64
	}{{a, 1}, {b, 1}, {a, 2}} {
		assert.Equal(t, int64(i+1), p.Entries[i].Sequence)
		assert.Equal(t, want.id, p.Entries[i].AggregateID)
		assert.Equal(t, want.version, p.Entries[i].Version)
	}
	infos, err := tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 2, Batches: 3, Events: 3}}, infos)
	var feedRows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+s+`.feed`).Scan(&feedRows))
	assert.Equal(t, 3, feedRows, "nothing numbered twice")
}

// TestUpgradeFromSchema4 (issue 23): a schema at version 4 with batches
// numbered, one committed and pending (at or past scan_from), and one of
// a transaction that was open below scan_from when the last run took its
// snapshot (in scan_also), is migrated to version 5, which drops pending:
// the numbered keep their numbers, the other two are numbered next, once
// each, and nothing below scan_from is numbered again.
func TestUpgradeFromSchema4(t *testing.T) {
	url, pool, schema := olderSchema(t, "up", 4)
	ctx := context.Background()

	s := pgx.Identifier{schema}.Sanitize()
	// insert stores a batch as the version 4 release did, batch and
	// pending row in one statement, and returns its transaction id.
	insert := func(id string, version int64) string {
		var tx string
		require.NoError(t, pool.QueryRow(ctx, `WITH b AS (INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx)
			VALUES ('', 'order', $1, $2, now(), 1, '{OrderPlaced}', 0, '\x01'::bytea, pg_current_xact_id()) RETURNING tx, id)
			INSERT INTO `+s+`.pending (tx, id) SELECT tx, id FROM b RETURNING tx::text`, id, version).Scan(&tx))
		return tx
	}
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	insert(a, 1)
	open := insert(c, 1) // the one that was open below scan_from
	insert(b, 1)
	// What the version 4 sequencer left: a and b numbered (their pending
	// rows taken), scan_from past them, c's transaction in scan_also.
	for _, q := range []string{
		`INSERT INTO ` + s + `.feed (tenant, seq, aggregate_type, tx, batch_id)
			SELECT tenant, row_number() OVER (ORDER BY tx, id), aggregate_type, tx, id FROM ` + s + `.batches WHERE aggregate_id <> '` + c + `'`,
		`DELETE FROM ` + s + `.pending p USING ` + s + `.batches b WHERE (p.tx, p.id) = (b.tx, b.id) AND b.aggregate_id <> '` + c + `'`,
		`INSERT INTO ` + s + `.feed_stats (tenant, aggregate_type, aggregates, batches, events, head) VALUES ('', 'order', 2, 2, 2, 2)`,
		`UPDATE ` + s + `.feed_counter SET seq = 2, scan_from = (SELECT (max(tx)::text::bigint + 1)::text::xid8 FROM ` + s + `.batches),
			scan_also = ARRAY['` + open + `'::xid8]`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	insert(a, 2) // committed after that run: pending, past scan_from

	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema))
	require.NoError(t, err)
	defer tr.Close()
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	type entry struct {
		id      string
		version int64
	}
	var got []entry
	for _, e := range p.Entries {
		got = append(got, entry{e.AggregateID, e.Version})
	}
	assert.Equal(t, []entry{{a, 1}, {b, 1}, {c, 1}, {a, 2}}, got)
	infos, err := tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 3, Batches: 4, Events: 4}}, infos)
	var feedRows int
	var pendingLeft bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+s+`.feed), to_regclass($1) IS NOT NULL`, schema+".pending").Scan(&feedRows, &pendingLeft))
	assert.Equal(t, 4, feedRows, "nothing numbered twice")
	assert.False(t, pendingLeft, "migration 5 drops pending")
}

// TestMigration2BlocksStores measures how long migration 2 keeps stores
// waiting on a store of SOURCED_PG_MIGRATION_ROWS batches (skipped
// without it): a writer inserts one batch at a time, as a store of the
// first release did, while the migration runs; the longest insert is how
// long stores were blocked (docs/operations.md).
func TestMigration2BlocksStores(t *testing.T) {
	rows := envInt("SOURCED_PG_MIGRATION_ROWS", 0)
	if rows == 0 {
		t.Skip("set SOURCED_PG_MIGRATION_ROWS to measure")
	}
	_, pool, schema := olderSchema(t, "mig", 1)
	ctx := context.Background()
	s := pgx.Identifier{schema}.Sanitize()
	start := time.Now()
	_, err := pool.Exec(ctx, `INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)
		SELECT '', 'order', md5(i::text), 1, now(), 1, '{OrderPlaced}', 0, '[{"eventId":"0b8f5f2e-6a0c-4d8e-9f5e-3a7c2d1b4e6f","eventType":"OrderPlaced","data":{"by":1}}]'
		FROM generate_series(1, $1) i`, rows)
	require.NoError(t, err)
	var numbered int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+s+`.sequence_feed(1, 'x')`).Scan(&numbered))
	_, err = pool.Exec(ctx, "VACUUM ANALYZE "+s+".batches")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "VACUUM ANALYZE "+s+".feed")
	require.NoError(t, err)
	t.Logf("%d batches, numbered, in %v", numbered, time.Since(start))

	stop := make(chan struct{})
	var longest time.Duration
	var inserts int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			began := time.Now()
			_, err := pool.Exec(ctx, `INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)
				VALUES ('', 'order', $1, 1, now(), 1, '{OrderPlaced}', 0, '[]')`, uuid.NewString())
			if err != nil {
				// After the migration the first release's insert no longer
				// fits: the store waited until then.
				longest = max(longest, time.Since(began))
				return
			}
			longest = max(longest, time.Since(began))
			inserts++
		}
	}()
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	require.NoError(t, postgres.MigrateTo(ctx, pool, schema, 2))
	took := time.Since(began)
	close(stop)
	<-done
	t.Logf("migration 2 over %d batches took %v; the longest store beside it waited %v (%d stores went through)", rows, took, longest, inserts)
}

// olderSchema makes a schema named after prefix with the migrations up to
// version only, as an older release left it, and returns the database's
// URL, a pool on it (closed when the test ends) and the schema's name.
func olderSchema(t *testing.T, prefix string, version int) (url string, pool *pgxpool.Pool, schema string) {
	t.Helper()
	url = database(t)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	schema = fmt.Sprintf("%s%d_%d", prefix, os.Getpid(), schemas.Add(1))
	require.NoError(t, postgres.MigrateTo(context.Background(), pool, schema, version))
	return url, pool, schema
}

// TestMigrationsIgnoreAShortStatementTimeout: a role whose sessions have
// a short statement_timeout (100 ms here) still migrates, however long the
// migration takes or waits: each start would otherwise fail the same way,
// and migration 2 or 5 on a large store never finish. Here the migration
// waits for another process's migration lock (held by the test) until it
// has waited twice the timeout.
func TestMigrationsIgnoreAShortStatementTimeout(t *testing.T) {
	_, pool, schema := olderSchema(t, "short", 3)
	ctx := context.Background()
	holder, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	_, err = holder.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", postgres.MigrationLock(schema))
	require.NoError(t, err)

	opened := make(chan error, 1)
	go func() {
		tr, err := postgres.Open(ctx, database(t)+"&statement_timeout=100", postgres.WithSchema(schema))
		if err == nil {
			err = tr.Close()
		}
		opened <- err
	}()
	// Until the migration has waited for the lock twice the timeout.
	require.Eventually(t, func() bool {
		var waited bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND NOT l.granted AND now() - a.query_start > interval '200 milliseconds')`).Scan(&waited)
		return err == nil && waited
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, holder.Rollback(ctx))
	require.NoError(t, <-opened, "the migration went on after the wait")
}
