package postgres

import "github.com/jackc/pgx/v5"

// queries are the statements, with the schema written in once.
type queries struct {
	channel, lockAndMark, sequence, pendingSince, pendingNow string
	lock                                                     int64

	load, storeNew, storeExactly, storeAny string
	exists, list, overview                 string
	issueToken, redeemToken                string
	statsOne, deleteOne, deleteType        []string

	feedAll, feedType, headAll, headType string
}

// batchColumns are the columns a store writes: $1..$3 name the aggregate,
// $4 is the event count, $5 the time, $6 the event types, $7 the id hash,
// $8 the events.
const batchColumns = `(tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)`

func newQueries(schema string) queries {
	s := pgx.Identifier{schema}.Sanitize() + "."
	lock := lockKey("sourced.sequencer." + schema)
	same := `tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3`
	return queries{
		channel: schema + "_feed",
		lock:    lock,
		// The sequencers take turns under an advisory lock ($1), held to
		// the end of the transaction; the snapshot a settling reader asks
		// about ($2, or this statement's) is kept for pendingSince. The
		// numbering is a function of the settled batches alone, so its
		// commit need not wait for the flush: one lost in a crash (only one
		// that no later commit flushed can be) comes out the same when the
		// sequencer runs again.
		lockAndMark: `SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true),
			set_config('sourced.since', coalesce($2::text, pg_current_snapshot()::text), true)`,
		// The sequencer's statement, run after it took the lock, so its
		// snapshot sees what the sequencer before it committed (see the
		// package doc). $1 is the notification channel, $2 this
		// transport's origin. It returns how many batches it numbered.
		sequence: `WITH counter AS (
				SELECT seq, horizon, pg_snapshot_xmin(pg_current_snapshot()) AS high FROM ` + s + `feed_counter
			), settled AS (
				SELECT b.id, b.tx, b.tenant, b.aggregate_type, b.version, b.event_count, c.seq + row_number() OVER (ORDER BY b.tx, b.id) AS seq
				FROM ` + s + `batches b, counter c
				WHERE b.tx >= (SELECT horizon FROM counter) AND b.tx < (SELECT high FROM counter)
			), numbered AS (
				INSERT INTO ` + s + `feed (tenant, seq, aggregate_type, tx, batch_id)
				SELECT tenant, seq, aggregate_type, tx, id FROM settled
				RETURNING batch_id
			), counted AS (
				INSERT INTO ` + s + `feed_stats AS st (tenant, aggregate_type, aggregates, batches, events)
				SELECT tenant, aggregate_type, count(*) FILTER (WHERE version = 1), count(*), sum(event_count)
				FROM settled GROUP BY tenant, aggregate_type
				ON CONFLICT (tenant, aggregate_type) DO UPDATE
				SET aggregates = st.aggregates + excluded.aggregates, batches = st.batches + excluded.batches,
					events = st.events + excluded.events
			), moved AS (
				UPDATE ` + s + `feed_counter SET seq = coalesce((SELECT max(seq) FROM settled), seq), horizon = (SELECT high FROM counter)
				WHERE (SELECT high FROM counter) > horizon
				RETURNING CASE WHEN seq > (SELECT seq FROM counter) THEN pg_notify($1, $2) END
			)
			SELECT count(*) FROM numbered`,
		// Whether a batch that had committed by the marked snapshot still
		// has no number: every batch of a transaction older than the
		// horizon has one.
		pendingSince: `SELECT current_setting('sourced.since'), EXISTS (SELECT 1 FROM ` + s + `batches
			WHERE tx >= (SELECT horizon FROM ` + s + `feed_counter) AND pg_visible_in_snapshot(tx, current_setting('sourced.since')::pg_snapshot))`,
		// Whether any committed batch has no number yet (no lock taken).
		pendingNow: `SELECT EXISTS (SELECT 1 FROM ` + s + `batches WHERE tx >= (SELECT horizon FROM ` + s + `feed_counter))`,

		load: `SELECT version, events FROM ` + s + `batches WHERE ` + same + ` AND version > $4 ORDER BY version LIMIT $5`,
		// Version 1: a second writer of it breaks the unique key.
		storeNew: `INSERT INTO ` + s + `batches ` + batchColumns + ` VALUES ($1, $2, $3, 1, $5, $4, $6, $7, $8)`,
		// Version $9 + 1 (with $9 > 0), only if version $9 is there: the
		// row of version $9 is the source of the insert, so none is
		// inserted without it; a second writer of $9 + 1 breaks the unique
		// key. The source must be of an older transaction than this one
		// (always true for a store of one batch, whose transaction starts
		// with this statement): in a bulk store that began before version
		// $9 was written, the feed would otherwise order $9 + 1 before $9.
		storeExactly: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, $9 + 1, $5, $4, $6, $7, $8 FROM ` + s + `batches
			WHERE ` + same + ` AND version = $9 AND tx < pg_current_xact_id()`,
		// The next version, whatever it is; a race breaks the unique key
		// and the store tries again, as it does when the last version is
		// of a newer transaction (see storeExactly).
		storeAny: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, coalesce(last.version, 0) + 1, $5, $4, $6, $7, $8
			FROM (SELECT) one LEFT JOIN LATERAL (
				SELECT version, tx FROM ` + s + `batches WHERE ` + same + ` ORDER BY version DESC LIMIT 1
			) last ON true
			WHERE last.tx IS NULL OR last.tx < pg_current_xact_id()`,

		exists: `SELECT EXISTS (SELECT 1 FROM ` + s + `batches WHERE ` + same + `)`,
		list: `SELECT aggregate_id, max(version), max(stored_at) FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2
			GROUP BY aggregate_id ORDER BY aggregate_id COLLATE "C" OFFSET $3 LIMIT $4`,
		overview: `SELECT aggregate_type, aggregates, batches, events FROM ` + s + `feed_stats
			WHERE tenant = $1 AND batches > 0 ORDER BY aggregate_type COLLATE "C"`,
		issueToken: `INSERT INTO ` + s + `delete_tokens (token, tenant, aggregate_type, aggregate_id, all_of_type, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
		redeemToken: `DELETE FROM ` + s + `delete_tokens WHERE token = $1 AND tenant = $2 AND aggregate_type = $3
			AND aggregate_id = $4 AND all_of_type = $5 AND expires_at > $6 RETURNING token`,
		// A delete runs under the sequencers' lock, so no numbering runs
		// beside it, and takes off the counts what was numbered: the
		// batches older than the horizon. Feed rows of deleted batches stay
		// behind, never joined again.
		deleteOne: []string{
			`UPDATE ` + s + `feed_stats st SET aggregates = st.aggregates - d.aggregates, batches = st.batches - d.batches, events = st.events - d.events
				FROM (SELECT count(*) FILTER (WHERE version = 1) AS aggregates, count(*) AS batches, coalesce(sum(event_count), 0) AS events
					FROM ` + s + `batches WHERE ` + same + ` AND tx < (SELECT horizon FROM ` + s + `feed_counter)) d
				WHERE st.tenant = $1 AND st.aggregate_type = $2 AND d.batches > 0`,
			`DELETE FROM ` + s + `batches WHERE ` + same,
		},
		deleteType: []string{
			`DELETE FROM ` + s + `feed_stats WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `feed WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2`,
		},

		feedAll: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.tx = f.tx AND b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		feedType: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.tx = f.tx AND b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2 AND f.aggregate_type = $7
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		headAll:  `SELECT coalesce(max(seq), 0) FROM ` + s + `feed WHERE tenant = $1`,
		headType: `SELECT coalesce(max(seq), 0) FROM ` + s + `feed WHERE tenant = $1 AND aggregate_type = $2`,
	}
}
