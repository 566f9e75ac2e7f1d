package postgres

import "github.com/jackc/pgx/v5"

// queries are the statements, with the schema written in once.
type queries struct {
	channel, sequence, numbered string
	lock                        int64

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
	same := `tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3`
	return queries{
		channel:  schema + "_feed",
		lock:     lockKey("sourced.sequencer." + schema),
		sequence: `SELECT * FROM ` + s + `sequence_feed($1, $2)`,
		numbered: `SELECT batch_id FROM ` + s + `feed WHERE batch_id = ANY($1)`,

		load: `SELECT version, events FROM ` + s + `batches WHERE ` + same + ` AND version > $4 ORDER BY version LIMIT $5`,
		// Version 1: a second writer of it breaks the unique key.
		storeNew: `INSERT INTO ` + s + `batches ` + batchColumns + ` VALUES ($1, $2, $3, 1, $5, $4, $6, $7, $8) RETURNING id`,
		// Version $9 + 1, only if version $9 is there; a second writer of
		// it breaks the unique key.
		storeExactly: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, $9 + 1, $5, $4, $6, $7, $8
			WHERE $9 = 0 OR EXISTS (SELECT 1 FROM ` + s + `batches WHERE ` + same + ` AND version = $9) RETURNING id`,
		// The next version, whatever it is; a race breaks the unique key
		// and the store tries again.
		storeAny: `INSERT INTO ` + s + `batches ` + batchColumns + `
			SELECT $1, $2, $3, coalesce((SELECT max(version) FROM ` + s + `batches WHERE ` + same + `), 0) + 1, $5, $4, $6, $7, $8 RETURNING id`,

		exists: `SELECT EXISTS (SELECT 1 FROM ` + s + `batches WHERE ` + same + `)`,
		list: `SELECT aggregate_id, max(version), max(stored_at) FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2
			GROUP BY aggregate_id ORDER BY aggregate_id COLLATE "C" OFFSET $3 LIMIT $4`,
		overview: `SELECT aggregate_type, aggregates, batches, events FROM ` + s + `feed_stats
			WHERE tenant = $1 AND batches > 0 ORDER BY aggregate_type COLLATE "C"`,
		issueToken: `INSERT INTO ` + s + `delete_tokens (token, tenant, aggregate_type, aggregate_id, all_of_type, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
		redeemToken: `DELETE FROM ` + s + `delete_tokens WHERE token = $1 AND tenant = $2 AND aggregate_type = $3
			AND aggregate_id = $4 AND all_of_type = $5 AND expires_at > $6 RETURNING token`,
		deleteOne: []string{
			`UPDATE ` + s + `feed_stats st SET aggregates = st.aggregates - 1, batches = st.batches - d.batches, events = st.events - d.events
				FROM (SELECT count(*) AS batches, coalesce(sum(b.event_count), 0) AS events FROM ` + s + `batches b JOIN ` + s + `feed f ON f.batch_id = b.id
				WHERE b.tenant = $1 AND b.aggregate_type = $2 AND b.aggregate_id = $3) d
				WHERE st.tenant = $1 AND st.aggregate_type = $2 AND d.batches > 0`,
			`DELETE FROM ` + s + `feed WHERE batch_id IN (SELECT id FROM ` + s + `batches WHERE ` + same + `)`,
			`DELETE FROM ` + s + `batches WHERE ` + same,
		},
		deleteType: []string{
			`DELETE FROM ` + s + `feed_stats WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `feed WHERE tenant = $1 AND aggregate_type = $2`,
			`DELETE FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2`,
		},

		feedAll: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		feedType: `SELECT f.seq, f.aggregate_type, b.aggregate_id, b.version, b.stored_at, b.events
			FROM ` + s + `feed f JOIN ` + s + `batches b ON b.id = f.batch_id
			WHERE f.tenant = $1 AND f.seq > $2 AND f.aggregate_type = $7
			AND ($4 = 0 OR b.id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR b.event_types && $6)
			ORDER BY f.seq LIMIT $3`,
		headAll:  `SELECT coalesce(max(seq), 0) FROM ` + s + `feed WHERE tenant = $1`,
		headType: `SELECT coalesce(max(seq), 0) FROM ` + s + `feed WHERE tenant = $1 AND aggregate_type = $2`,
	}
}
