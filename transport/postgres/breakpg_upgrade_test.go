package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// schema4Sequencer is the numbering statement of the release with schema
// version 4 (pending), word for word, for schema s (quoted, with its dot):
// $1 the channel, $2 the origin, $3 the chunk.
func schema4Sequencer(s string) string {
	return `WITH counter AS (
				SELECT seq, scan_from, scan_also FROM ` + s + `feed_counter
			), waiting AS NOT MATERIALIZED (
				SELECT ctid, tx, id FROM ` + s + `pending WHERE tx >= (SELECT scan_from FROM counter)
				UNION ALL
				SELECT ctid, tx, id FROM ` + s + `pending WHERE tx = ANY ((SELECT scan_also FROM counter)::xid8[]) AND tx < (SELECT scan_from FROM counter)
				ORDER BY tx, id
			), kth AS (
				SELECT tx FROM waiting OFFSET $3 LIMIT 1
			), bound AS (
				-- The run takes the transactions before the $3+1-th
				-- pending batch's (all of them when there are no more), or
				-- the first pending transaction alone when it holds more.
				SELECT k.tx AS kth, k.tx = (SELECT tx FROM waiting LIMIT 1) AS alone FROM (SELECT) one LEFT JOIN kth k ON true
			), chosen AS (
				SELECT w.ctid FROM waiting w, bound
				WHERE bound.kth IS NULL OR w.tx < bound.kth OR (bound.alone AND w.tx = bound.kth)
			), taken AS (
				-- By their row addresses: never a scan of pending, whose
				-- deleted rows a long transaction keeps.
				DELETE FROM ` + s + `pending WHERE ctid = ANY (ARRAY(SELECT ctid FROM chosen))
				RETURNING tx, id
			), settled AS (
				-- Each batch by its key (LIMIT 1 keeps the planner from
				-- joining otherwise, which could scan every batch).
				SELECT b.id, b.tx, b.tenant, b.aggregate_type, b.version, b.event_count, c.seq + row_number() OVER (ORDER BY b.tx, b.id) AS seq
				FROM taken t CROSS JOIN LATERAL (
					SELECT id, tx, tenant, aggregate_type, version, event_count FROM ` + s + `batches
					WHERE tx = t.tx AND id = t.id LIMIT 1
				) b, counter c
			), numbered AS (
				INSERT INTO ` + s + `feed (tenant, seq, aggregate_type, tx, batch_id)
				SELECT tenant, seq, aggregate_type, tx, id FROM settled
				RETURNING batch_id
			), counted AS (
				INSERT INTO ` + s + `feed_stats AS st (tenant, aggregate_type, aggregates, batches, events, head)
				SELECT tenant, aggregate_type, count(*) FILTER (WHERE version = 1), count(*), sum(event_count), max(seq)
				FROM settled GROUP BY tenant, aggregate_type
				ON CONFLICT (tenant, aggregate_type) DO UPDATE
				SET aggregates = st.aggregates + excluded.aggregates, batches = st.batches + excluded.batches,
					events = st.events + excluded.events, head = greatest(st.head, excluded.head)
			), next AS (
				-- Where the next run looks: past this snapshot's
				-- transactions, but also at those still open below it; with
				-- more to come, from the first transaction not taken.
				SELECT coalesce(kth, pg_snapshot_xmax(pg_current_snapshot())) AS scan_from FROM bound
			), moved AS (
				UPDATE ` + s + `feed_counter SET seq = coalesce((SELECT max(seq) FROM settled), seq),
					scan_from = (SELECT scan_from FROM next),
					scan_also = ARRAY(SELECT x FROM pg_snapshot_xip(pg_current_snapshot()) x WHERE x < (SELECT scan_from FROM next) ORDER BY x)
				WHERE EXISTS (SELECT 1 FROM taken)
				RETURNING CASE WHEN seq > (SELECT seq FROM counter) THEN pg_notify($1, $2) END
			)
			SELECT count(*), (SELECT seq FROM counter) + count(*), EXISTS (SELECT 1 FROM kth),
				CASE WHEN (SELECT max(tx) FROM taken) < pg_snapshot_xmin(pg_current_snapshot())
					THEN set_config('synchronous_commit', 'off', true) END
			FROM numbered`
}

// schema4 is a schema at version 4 driven as that release drove it.
type schema4 struct {
	t      *testing.T
	pool   *pgxpool.Pool
	name   string
	quoted string
}

func newSchema4(t *testing.T) *schema4 {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	name := fmt.Sprintf("up%d_%d", os.Getpid(), schemas.Add(1))
	require.NoError(t, postgres.MigrateTo(ctx, pool, name, 4))
	return &schema4{t: t, pool: pool, name: name, quoted: pgx.Identifier{name}.Sanitize() + "."}
}

// store stores version 1 of each id in one transaction, batch and pending
// row in one statement each, as that release's bulk store did.
func (s *schema4) store(ids ...string) {
	ctx := context.Background()
	require.NoError(s.t, pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, id := range ids {
			if _, err := tx.Exec(ctx, `WITH b AS (INSERT INTO `+s.quoted+`batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx)
				VALUES ('', 'order', $1, 1, now(), 1, '{OrderPlaced}', 0, '\x01'::bytea, pg_current_xact_id()) RETURNING tx, id)
				INSERT INTO `+s.quoted+`pending (tx, id) SELECT tx, id FROM b`, id); err != nil {
				return err
			}
		}
		return nil
	}))
}

// open stores version 1 of each id in a transaction it leaves open, as
// that release's bulk store did, and returns the commit.
func (s *schema4) open(ids ...string) (commit func()) {
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	require.NoError(s.t, err)
	for _, id := range ids {
		_, err := tx.Exec(ctx, `WITH b AS (INSERT INTO `+s.quoted+`batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx)
			VALUES ('', 'order', $1, 1, now(), 1, '{OrderPlaced}', 0, '\x01'::bytea, pg_current_xact_id()) RETURNING tx, id)
			INSERT INTO `+s.quoted+`pending (tx, id) SELECT tx, id FROM b`, id)
		require.NoError(s.t, err)
	}
	return func() { require.NoError(s.t, tx.Commit(ctx)) }
}

// sequence runs that release's sequencer once, numbering chunk batches at
// most, and returns how many it numbered and whether more waited.
func (s *schema4) sequence(chunk int) (numbered int64, more bool) {
	ctx := context.Background()
	require.NoError(s.t, pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, postgres.SequencerLock(s.name)); err != nil {
			return err
		}
		var seq int64
		var async *string
		return tx.QueryRow(ctx, schema4Sequencer(s.quoted), s.name+"_feed", "old", chunk).Scan(&numbered, &seq, &more, &async)
	}))
	return numbered, more
}

// feedOf opens a transport of this release on the schema (which migrates
// it) and returns the aggregate ids in its feed, in order, and its counts.
func (s *schema4) feedOf() ([]string, []transport.FeedInfo) {
	ctx := context.Background()
	tr, err := postgres.Open(ctx, database(s.t), postgres.WithSchema(s.name))
	require.NoError(s.t, err)
	defer tr.Close()
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(s.t, err)
	var ids []string
	for _, e := range p.Entries {
		ids = append(ids, e.AggregateID)
	}
	infos, err := tr.FeedOverview(ctx, "")
	require.NoError(s.t, err)
	return ids, infos
}

// TestUpgradeAfterABigTransactionNumberedAlone: the version 4 sequencer,
// when one transaction alone held more batches than a run numbers, took
// it whole and left scan_from at that transaction's id (not past it), and
// the next run, with nothing to number, left it there. Pending rows told
// numbered from unnumbered; without them, scan_from must not point at
// numbered batches: each is numbered once after migration 5.
func TestUpgradeAfterABigTransactionNumberedAlone(t *testing.T) {
	s := newSchema4(t)
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	s.store(ids...)
	n, more := s.sequence(2)
	require.EqualValues(t, 3, n, "the transaction is taken alone, whole")
	require.True(t, more)
	n, _ = s.sequence(2)
	require.EqualValues(t, 0, n)

	got, infos := s.feedOf()
	assert.Len(t, got, 3, "each batch numbered once")
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 3, Batches: 3, Events: 3}}, infos)
}

// TestUpgradeOfARestoredSchema4: a schema at version 4, restored into
// another cluster (every stored transaction id a billion ahead of the
// new cluster's) with batches numbered and one pending, is opened by this
// release, which migrates it to version 5 and then repairs the restore:
// each batch is numbered once, the pending one after the others.
func TestUpgradeOfARestoredSchema4(t *testing.T) {
	s := newSchema4(t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	s.store(a)
	s.store(b)
	n, _ := s.sequence(10)
	require.EqualValues(t, 2, n)
	s.store(c)
	ctx := context.Background()
	for _, q := range []string{
		`UPDATE ` + s.quoted + `batches SET tx = (tx::text::bigint + 1000000000)::text::xid8`,
		`UPDATE ` + s.quoted + `feed SET tx = (tx::text::bigint + 1000000000)::text::xid8`,
		`UPDATE ` + s.quoted + `pending SET tx = (tx::text::bigint + 1000000000)::text::xid8`,
		`UPDATE ` + s.quoted + `feed_counter SET scan_from = (scan_from::text::bigint + 1000000000)::text::xid8,
			scan_also = ARRAY(SELECT (x::text::bigint + 1000000000)::text::xid8 FROM unnest(scan_also) x)`,
	} {
		_, err := s.pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	got, infos := s.feedOf()
	assert.Equal(t, []string{a, b, c}, got, "each batch numbered once, in order")
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 3, Batches: 3, Events: 3}}, infos)
}

// TestUpgradeAfterARunWentBack: the version 4 sequencer, when a chunked
// run stopped in a transaction of scan_also, set scan_from back to it,
// below batches numbered before; the process stopped before the next run.
// After migration 5, each batch is numbered once.
func TestUpgradeAfterARunWentBack(t *testing.T) {
	s := newSchema4(t)
	x1, x2, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	commit := s.open(x1, x2) // below b, open while b is numbered
	s.store(b)
	n, _ := s.sequence(10)
	require.EqualValues(t, 1, n)
	s.store(c)
	commit()
	n, more := s.sequence(1) // x1 and x2's transaction alone: scan_from goes back to it
	require.EqualValues(t, 2, n)
	require.True(t, more)

	got, infos := s.feedOf()
	assert.Equal(t, []string{b, x1, x2, c}, got, "each batch numbered once")
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 4, Batches: 4, Events: 4}}, infos)
}
