package postgres

import "github.com/jackc/pgx/v5"

// queries are the statements, with the schema written in once.
type queries struct {
	channel, lockAndMark, sequence, pendingNow string
	lock                                       int64

	load, storeNew, storeExactly, storeAny string
	lockOne, lockAnyOne, lockMany          string
	lockDeleteOne, lockDeleteType          string
	exists, list, overview                 string
	issueToken, redeemToken                string
	deleteOne, deleteType                  []string

	feedAll, feedType, headAll, headType string
}

// batchColumns are the columns a store writes: $1..$3 name the aggregate,
// $4 is the event count, $5 the time, $6 the event types, $7 the id hash,
// $8 the payload (see encodePayload); then the writing transaction,
// pg_current_xact_id(), given by every store (the column has no default
// since migration 4, so that a store of an older release, which writes
// no pending row, fails rather than leave its batch without a number).
const batchColumns = `(tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx)`

// sequencerChunk is how many batches one numbering run numbers at most
// (more when one transaction alone stored more): a backlog is numbered in
// runs of bounded length, each well within any statement timeout.
const sequencerChunk = 10000

func newQueries(schema string) queries {
	s := pgx.Identifier{schema}.Sanitize() + "."
	lock := lockKey("sourced.sequencer." + schema)
	same := `tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3`
	return queries{
		channel: schema + channelSuffix,
		lock:    lock,
		// The sequencers take turns under an advisory lock ($1), held to
		// the end of the transaction.
		lockAndMark: `SELECT pg_advisory_xact_lock($1)`,
		// The sequencer's statement, run after it took the lock, so its
		// snapshot sees what the sequencer before it committed and every
		// store committed by then (see the package doc). It numbers the
		// committed batches without a number in (tx, id) order, at most $3
		// of them (more when one transaction alone stored more: a
		// transaction's batches are never split), in this one statement,
		// and moves scan_from and scan_also past them. $1 is the
		// notification channel, $2 this transport's origin. It returns how
		// many batches it numbered, the last number, and whether more
		// wait.
		//
		// Its commit waits for the flush (synchronous_commit as the
		// session has it) unless the numbering is a function of settled
		// batches alone: when every transaction below the highest one
		// numbered has ended (pg_snapshot_xmin), a numbering lost in a
		// crash (only one that no later commit flushed can be) comes out
		// the same when the sequencer runs again, so it need not wait.
		// Otherwise a store still open below it could commit before the
		// crash and be numbered first the second time round, and a reader
		// that saw the lost numbers would then miss it.
		sequence: `WITH counter AS (
				SELECT seq, scan_from, scan_also FROM ` + s + `feed_counter
			), head AS MATERIALIZED (
				-- The first $3 + 1 batches without a number.
				` + unnumbered(s, "$3 + 1") + `
			), kth AS (
				SELECT tx FROM head ORDER BY tx, id OFFSET $3 LIMIT 1
			), bound AS (
				-- The run takes the transactions before the $3+1-th
				-- batch's (all of them when there are no more), or the
				-- first transaction alone when it holds more.
				SELECT k.tx AS kth, k.tx = (SELECT tx FROM head ORDER BY tx, id LIMIT 1) AS alone FROM (SELECT) one LEFT JOIN kth k ON true
			), chosen AS (
				SELECT h.tx, h.id, h.tenant, h.aggregate_type, h.version, h.event_count FROM head h, bound
				WHERE bound.kth IS NULL OR h.tx < bound.kth
				UNION ALL
				SELECT b.tx, b.id, b.tenant, b.aggregate_type, b.version, b.event_count FROM ` + s + `batches b, bound
				WHERE bound.alone AND b.tx = bound.kth
			), settled AS (
				SELECT b.id, b.tx, b.tenant, b.aggregate_type, b.version, b.event_count, c.seq + row_number() OVER (ORDER BY b.tx, b.id) AS seq
				FROM chosen b, counter c
			` + recordSettled(s) + `
			), next AS (
				-- Where the next run looks. low: past this snapshot's
				-- transactions; with more to come, from the first
				-- transaction not taken (past it when it was taken alone).
				-- scan_from never goes back (a run that stopped in
				-- scan_also's transactions leaves it where it was), and
				-- scan_also keeps, below it, the transactions still open
				-- and those at or past low, where this run did not look.
				SELECT greatest(c.scan_from, f.low) AS scan_from, f.low FROM counter c, (
					SELECT CASE WHEN kth IS NULL THEN pg_snapshot_xmax(pg_current_snapshot())
						WHEN alone THEN ((kth::text::numeric + 1)::text)::xid8
						ELSE kth END AS low FROM bound) f
			), open AS (
				SELECT pg_snapshot_xip(pg_current_snapshot()) AS x
			), moved AS (
				UPDATE ` + s + `feed_counter SET seq = coalesce((SELECT max(seq) FROM settled), seq),
					scan_from = (SELECT scan_from FROM next),
					scan_also = ARRAY(
						SELECT u.x FROM (SELECT unnest(scan_also) AS x FROM counter UNION SELECT x FROM open) u, next n
						WHERE u.x < n.scan_from AND (u.x >= n.low OR u.x IN (SELECT x FROM open))
						ORDER BY u.x)
				WHERE EXISTS (SELECT 1 FROM chosen)
				RETURNING CASE WHEN seq > (SELECT seq FROM counter) THEN pg_notify($1, $2) END
			)
			SELECT count(*), (SELECT seq FROM counter) + count(*), EXISTS (SELECT 1 FROM kth),
				CASE WHEN (SELECT max(tx) FROM chosen) < pg_snapshot_xmin(pg_current_snapshot())
					THEN set_config('synchronous_commit', 'off', true) END
			FROM numbered`,
		// Whether any committed batch has no number yet (no lock taken).
		pendingNow: `WITH counter AS (
				SELECT scan_from, scan_also FROM ` + s + `feed_counter
			) SELECT EXISTS (` + unnumbered(s, "1") + `)`,

		load: `SELECT version, payload, events FROM ` + s + `batches WHERE ` + same + ` AND version > $4 ORDER BY version LIMIT $5`,
		// Version 1: a second writer of it breaks the unique key.
		storeNew: `INSERT INTO ` + s + `batches ` + batchColumns + ` VALUES ($1, $2, $3, 1, $5, $4, $6, $7, $8, pg_current_xact_id())`,
		// Version $9 + 1 (with $9 > 0), only if version $9 is there: the
		// row of version $9 is the source of the insert, so none is
		// inserted without it; a second writer of $9 + 1 breaks the unique
		// key. The source must be of an older transaction than this one
		// (always true for a store of one batch, whose transaction starts
		// with this statement): in a bulk store that began before version
		// $9 was written, the feed would otherwise order $9 + 1 before $9.
		// The time is never before the source's (clocks of processes
		// differ): an aggregate's batches are dated in order.
		storeExactly: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, $9 + 1, greatest($5, stored_at), $4, $6, $7, $8, pg_current_xact_id() FROM ` + s + `batches
			WHERE ` + same + ` AND version = $9 AND tx < pg_current_xact_id()`,
		// The next version, whatever it is. Under the aggregate's lock
		// taken exclusively (see lockAnyOne) no other store of it is in
		// flight, so it cannot lose a race; the last version must be of an
		// older transaction, as for storeExactly.
		storeAny: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, coalesce(last.version, 0) + 1, greatest($5, last.stored_at), $4, $6, $7, $8, pg_current_xact_id()
			FROM (SELECT) one LEFT JOIN LATERAL (
				SELECT version, tx, stored_at FROM ` + s + `batches WHERE ` + same + ` ORDER BY version DESC LIMIT 1
			) last ON true
			WHERE last.tx IS NULL OR last.tx < pg_current_xact_id()`,
		// The locks a store takes before it writes, each statement in
		// its own: shared on its type ($1) and on its aggregate ($2),
		// exclusive on the aggregate for an Any store. A delete takes the
		// aggregate's (or a type delete the type's) exclusively, so it
		// waits for every store in flight, and stores that come after it
		// wait for it and then, in a new snapshot, find it done. Keys are
		// taken in ascending order after the type's (lockMany: $1 the
		// keys, $2 whether each is exclusive).
		lockOne:    `SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock_shared($2)`,
		lockAnyOne: `SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2)`,
		lockMany: `SELECT CASE WHEN x THEN pg_advisory_xact_lock(k) ELSE pg_advisory_xact_lock_shared(k) END
			FROM unnest($1::bigint[], $2::boolean[]) AS u(k, x)`,
		lockDeleteOne:  `SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2)`,
		lockDeleteType: `SELECT pg_advisory_xact_lock($1)`,

		exists: `SELECT EXISTS (SELECT 1 FROM ` + s + `batches WHERE ` + same + `)`,
		list: `SELECT aggregate_id, max(version), max(stored_at) FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2
			GROUP BY aggregate_id ORDER BY aggregate_id COLLATE "C" OFFSET $3 LIMIT $4`,
		overview: `SELECT aggregate_type, aggregates, batches, events FROM ` + s + `feed_stats
			WHERE tenant = $1 AND batches > 0 ORDER BY aggregate_type COLLATE "C"`,
		// Tokens expire by the database's clock ($6 is the offset, in
		// microseconds, of a clock given with WithClock: 0 otherwise; $7 the
		// time to live); issuing one purges the expired.
		issueToken: `WITH purged AS (
				DELETE FROM ` + s + `delete_tokens WHERE expires_at <= now() + $6 * interval '1 microsecond'
			)
			INSERT INTO ` + s + `delete_tokens (token, tenant, aggregate_type, aggregate_id, all_of_type, expires_at)
			VALUES ($1, $2, $3, $4, $5, now() + ($6 + $7) * interval '1 microsecond')`,
		redeemToken: `DELETE FROM ` + s + `delete_tokens WHERE token = $1 AND tenant = $2 AND aggregate_type = $3
			AND aggregate_id = $4 AND all_of_type = $5 AND expires_at > now() + $6 * interval '1 microsecond' RETURNING token`,
		// A delete runs under its target's lock (so no store of it is in
		// flight, see lockOne) and the sequencers' lock, so no numbering runs
		// beside it, and takes off the counts what was numbered: the
		// batches that are not where a run looks for unnumbered ones (see
		// numberedWhere). Feed rows of deleted batches stay behind, never
		// joined again.
		deleteOne: []string{
			`UPDATE ` + s + `feed_stats st SET aggregates = st.aggregates - d.aggregates, batches = st.batches - d.batches, events = st.events - d.events
				FROM (SELECT count(*) FILTER (WHERE version = 1) AS aggregates, count(*) AS batches, coalesce(sum(event_count), 0) AS events
					FROM ` + s + `batches b, ` + s + `feed_counter c WHERE ` + same + ` AND ` + numberedWhere + `) d
				WHERE st.tenant = $1 AND st.aggregate_type = $2 AND d.batches > 0`,
			`DELETE FROM ` + s + `batches WHERE ` + same,
		},
		deleteType: []string{
			// The head stays: numbers are never reused.
			`UPDATE ` + s + `feed_stats SET aggregates = 0, batches = 0, events = 0 WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `feed WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2`,
		},

		feedAll: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.payload, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.tx = f.tx AND b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		feedType: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.payload, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.tx = f.tx AND b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2 AND f.aggregate_type = $7
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		// A feed's head is the highest number it ever held (kept by the
		// sequencer in feed_stats): it never falls, not even when a type
		// delete takes the type's feed rows.
		headAll:  `SELECT coalesce(max(head), 0) FROM ` + s + `feed_stats WHERE tenant = $1`,
		headType: `SELECT coalesce((SELECT head FROM ` + s + `feed_stats WHERE tenant = $1 AND aggregate_type = $2), 0)`,
	}
}

// unnumbered selects, in (tx, id) order, the first limit batches (tx, id,
// tenant, aggregate_type, version, event_count) that a numbering run may
// find committed without a number, given a CTE "counter" with
// feed_counter's scan_from and scan_also: every batch not numbered yet is
// of a transaction at or past scan_from, or of one in scan_also (open
// below scan_from when the last run that numbered took its snapshot; see
// the package doc). Each part is an ordered, limited range of the (tx, id)
// index, so the planner walks the index from scan_from, whatever it
// guesses of the range: no run and no check reads the numbered batches
// below. s is the schema's quoted name with its dot.
func unnumbered(s, limit string) string {
	cols := `tx, id, tenant, aggregate_type, version, event_count`
	return `SELECT ` + cols + ` FROM (
					(SELECT ` + cols + ` FROM ` + s + `batches WHERE tx >= (SELECT scan_from FROM counter) ORDER BY tx, id LIMIT ` + limit + `)
					UNION ALL
					(SELECT ` + cols + ` FROM ` + s + `batches WHERE tx = ANY ((SELECT scan_also FROM counter)::xid8[]) AND tx < (SELECT scan_from FROM counter)
						ORDER BY tx, id LIMIT ` + limit + `)
				) u ORDER BY tx, id LIMIT ` + limit
}

// numberedWhere holds for a batch b that has its number, given
// feed_counter as c (read under the sequencers' lock): the complement of
// where unnumbered looks.
const numberedWhere = `b.tx < c.scan_from AND b.tx <> ALL (c.scan_also)`

// recordSettled is the part of a numbering statement that the sequencer and
// the restore repair share: given a CTE "settled" of batches with their new
// sequence numbers, it adds their feed rows ("numbered", returning each
// batch id) and their counts and heads in feed_stats ("counted"). s is the
// schema's quoted name with its dot.
func recordSettled(s string) string {
	return `), numbered AS (
				INSERT INTO ` + s + `feed (tenant, seq, aggregate_type, tx, batch_id)
				SELECT tenant, seq, aggregate_type, tx, id FROM settled
				RETURNING batch_id
			), counted AS (
				INSERT INTO ` + s + `feed_stats AS st (tenant, aggregate_type, aggregates, batches, events, head)
				SELECT tenant, aggregate_type, count(*) FILTER (WHERE version = 1), count(*), sum(event_count), max(seq)
				FROM settled GROUP BY tenant, aggregate_type
				ON CONFLICT (tenant, aggregate_type) DO UPDATE
				SET aggregates = st.aggregates + excluded.aggregates, batches = st.batches + excluded.batches,
					events = st.events + excluded.events, head = greatest(st.head, excluded.head)`
}
