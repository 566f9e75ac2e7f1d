package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// restoredTx is the id every stored transaction id is rebased to after a
// restore into another cluster: the lowest normal transaction id, below
// that of every transaction the cluster will start.
const restoredTx = "3"

// restoredScanFrom is where the sequencer looks for batches without a
// number after a restore: past the rebased ones, below every transaction
// the cluster will start.
const restoredScanFrom = "4"

// restoreQueries are the statements of repairRestore.
type restoreQueries struct {
	check, number, rebaseBatches, rebaseFeed string
}

func newRestoreQueries(schema string) restoreQueries {
	s := pgx.Identifier{schema}.Sanitize() + "."
	return restoreQueries{
		// Whether the stored transaction ids are ahead of the cluster's:
		// where the sequencer looks from, or a batch's id (max off the (tx,
		// id) index), at or past the first id the cluster has not given out
		// yet. Never true in the cluster that wrote them.
		check: `SELECT c.scan_from > x.next OR coalesce((SELECT max(tx) FROM ` + s + `batches) >= x.next, false)
			FROM ` + s + `feed_counter c, (SELECT pg_snapshot_xmax(pg_current_snapshot()) AS next) x`,
		// Numbers every batch without a number (all of them committed in
		// the cluster that wrote them) as the sequencer would have: in (tx,
		// id) order after the last number. The sequencer looks from past
		// the rebased id on.
		number: `WITH counter AS (
				SELECT seq, scan_from, scan_also FROM ` + s + `feed_counter
			), settled AS (
				SELECT b.id, b.tx, b.tenant, b.aggregate_type, b.version, b.event_count, c.seq + row_number() OVER (ORDER BY b.tx, b.id) AS seq
				FROM ` + s + `batches b, counter c WHERE NOT (` + numberedWhere + `)
			` + recordSettled(s) + `
			), moved AS (
				UPDATE ` + s + `feed_counter SET seq = coalesce((SELECT max(seq) FROM settled), seq),
					scan_from = '` + restoredScanFrom + `', scan_also = '{}'
			)
			SELECT count(*) FROM numbered`,
		rebaseBatches: `UPDATE ` + s + `batches SET tx = '` + restoredTx + `' WHERE tx <> '` + restoredTx + `'`,
		rebaseFeed:    `UPDATE ` + s + `feed SET tx = '` + restoredTx + `' WHERE tx <> '` + restoredTx + `'`,
	}
}

// repairRestore mends a schema restored (pg_dump, pg_restore) into another
// cluster than the one that wrote it. Its tables keep transaction ids
// (batches.tx, feed.tx) of the old cluster, which a new
// cluster gives out again from far below: a store after a batch of the old
// cluster would find that batch's transaction not older than its own (and
// fail with ErrConflict for ever). When the check (one query, no lock)
// finds the ids ahead of the cluster, it numbers, in one transaction under
// the migrations' lock and the sequencers', the batches the old cluster
// had not numbered yet, then rebases every stored id to the lowest normal
// one: every batch is numbered, every new transaction is younger.
func (t *Transport) repairRestore(ctx context.Context) error {
	q := newRestoreQueries(t.schema)
	var ahead bool
	if err := t.pool.QueryRow(ctx, q.check).Scan(&ahead); err != nil || !ahead {
		return err
	}
	var numbered, batches, feed int64
	err := pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1), pg_advisory_xact_lock($2), set_config('statement_timeout', '0', true)",
			lockKey("sourced.migrate."+t.schema), t.q.lock); err != nil {
			return err
		}
		// Another process may have repaired it while this one waited.
		if err := tx.QueryRow(ctx, q.check).Scan(&ahead); err != nil || !ahead {
			return err
		}
		if err := tx.QueryRow(ctx, q.number).Scan(&numbered); err != nil {
			return fmt.Errorf("numbering the batches left without a number: %w", err)
		}
		tag, err := tx.Exec(ctx, q.rebaseBatches)
		if err != nil {
			return fmt.Errorf("rebasing batches.tx: %w", err)
		}
		batches = tag.RowsAffected()
		if tag, err = tx.Exec(ctx, q.rebaseFeed); err != nil {
			return fmt.Errorf("rebasing feed.tx: %w", err)
		}
		feed = tag.RowsAffected()
		if numbered > 0 {
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", t.q.channel, t.origin); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres transport: repairing schema %s restored from another cluster: %w", t.schema, redact(err))
	}
	if ahead {
		t.log.Warn("postgres schema restored from another cluster: transaction ids rebased",
			zap.String("schema", t.schema), zap.Int64("batches_numbered", numbered),
			zap.Int64("batches_rebased", batches), zap.Int64("feed_rows_rebased", feed))
	}
	return nil
}
