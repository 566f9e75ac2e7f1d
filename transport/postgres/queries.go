package postgres

import "github.com/jackc/pgx/v5"

// queries are the statements, with the schema written in once.
type queries struct {
	channel                                     string
	lock                                        int64
	lockCounter, pending, number, setCounter    string
	unnumbered                                  string
	load, insertAggregate, bumpAny, bumpExactly string
	insertBatch, exists, list, overview         string
	issueToken, redeemToken                     string
	deleteOneBatches, deleteOneAggregate        string
	deleteTypeBatches, deleteTypeAggregates     string
	feedAll, feedType, headAll, headType        string
}

func newQueries(schema string) queries {
	s := pgx.Identifier{schema}.Sanitize() + "."
	return queries{
		channel:     schema + "_feed",
		lock:        lockKey("sourced.sequencer." + schema),
		lockCounter: `SELECT pg_advisory_xact_lock($1), (SELECT seq FROM ` + s + `feed_counter)`,
		unnumbered:  `SELECT count(*) FROM ` + s + `batches WHERE id = ANY($1) AND seq IS NULL`,
		pending: `SELECT id FROM ` + s + `batches WHERE seq IS NULL AND tx < pg_snapshot_xmin(pg_current_snapshot())
			ORDER BY tx, id LIMIT 10000`,
		number:     `UPDATE ` + s + `batches b SET seq = $1 + u.n FROM unnest($2::bigint[]) WITH ORDINALITY AS u(id, n) WHERE b.id = u.id`,
		setCounter: `UPDATE ` + s + `feed_counter SET seq = $1`,

		load: `SELECT version, events FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3
			AND version > $4 ORDER BY version LIMIT $5`,
		insertAggregate: `INSERT INTO ` + s + `aggregates (tenant, aggregate_type, aggregate_id, version, event_count, updated_at)
			VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT DO NOTHING RETURNING version`,
		bumpAny: `INSERT INTO ` + s + `aggregates AS a (tenant, aggregate_type, aggregate_id, version, event_count, updated_at)
			VALUES ($1, $2, $3, 1, $4, $5)
			ON CONFLICT (tenant, aggregate_type, aggregate_id) DO UPDATE
			SET version = a.version + 1, event_count = a.event_count + $4, updated_at = $5 RETURNING version`,
		bumpExactly: `UPDATE ` + s + `aggregates SET version = version + 1, event_count = event_count + $4, updated_at = $5
			WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND version = $6 RETURNING version`,
		insertBatch: `INSERT INTO ` + s + `batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, events)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		exists: `SELECT EXISTS (SELECT 1 FROM ` + s + `aggregates WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3)`,
		list: `SELECT aggregate_id, version, updated_at FROM ` + s + `aggregates WHERE tenant = $1 AND aggregate_type = $2
			ORDER BY aggregate_id COLLATE "C" OFFSET $3 LIMIT $4`,
		overview: `SELECT aggregate_type, count(*), sum(version)::bigint, sum(event_count)::bigint FROM ` + s + `aggregates
			WHERE tenant = $1 GROUP BY aggregate_type ORDER BY aggregate_type COLLATE "C"`,
		issueToken: `INSERT INTO ` + s + `delete_tokens (token, tenant, aggregate_type, aggregate_id, all_of_type, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
		redeemToken: `DELETE FROM ` + s + `delete_tokens WHERE token = $1 AND tenant = $2 AND aggregate_type = $3
			AND aggregate_id = $4 AND all_of_type = $5 AND expires_at > $6 RETURNING token`,
		deleteOneBatches:     `DELETE FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3`,
		deleteOneAggregate:   `DELETE FROM ` + s + `aggregates WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3`,
		deleteTypeBatches:    `DELETE FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2`,
		deleteTypeAggregates: `DELETE FROM ` + s + `aggregates WHERE tenant = $1 AND aggregate_type = $2`,

		feedAll: `SELECT seq, aggregate_type, aggregate_id, version, stored_at, events FROM ` + s + `batches
			WHERE tenant = $1 AND seq > $2 AND seq IS NOT NULL
			AND ($4 = 0 OR id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR event_types && $6)
			ORDER BY seq LIMIT $3`,
		feedType: `SELECT seq, aggregate_type, aggregate_id, version, stored_at, events FROM ` + s + `batches
			WHERE tenant = $1 AND seq > $2 AND seq IS NOT NULL AND aggregate_type = $7
			AND ($4 = 0 OR id_hash % $4 = $5) AND (cardinality($6::text[]) = 0 OR event_types && $6)
			ORDER BY seq LIMIT $3`,
		headAll:  `SELECT coalesce(max(seq), 0) FROM ` + s + `batches WHERE tenant = $1 AND seq IS NOT NULL`,
		headType: `SELECT coalesce(max(seq), 0) FROM ` + s + `batches WHERE tenant = $1 AND aggregate_type = $2 AND seq IS NOT NULL`,
	}
}
