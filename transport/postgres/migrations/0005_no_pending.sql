-- The feed without pending (2026-12, issue 23). Migration 4 had every
-- store write a pending row beside its batch, and the sequencer number
-- the committed pending rows and delete them. But the sequencer already
-- knows where every batch without a number is: at or past scan_from, or
-- in a transaction of scan_also (see the package doc). So the runs now
-- read those places in batches' (tx, id) index instead, and a store
-- writes its batch alone: a heap row, an index entry and a delete fewer
-- per batch.
--
-- Taken under the sequencers' lock and with batches in SHARE mode (stores
-- in flight end first, new ones wait for this transaction). A store or a
-- sequencer of the previous release, which names pending, fails from now
-- on instead of writing a row no one reads.
--
-- The runs of migration 4 kept every pending row at or past scan_from or
-- in scan_also, but not every numbered batch out of there: a run that
-- took one big transaction alone left scan_from at its id, and one that
-- stopped in scan_also's transactions moved it back, over batches it had
-- numbered before. With pending gone, those would be numbered a second
-- time. So the pending batches (all committed: no store is in flight) are
-- numbered here, as the sequencer would have numbered them, in (tx, id)
-- order after the last number, and scan_from and scan_also are set as a
-- run that took everything sets them, so that nothing numbered is at or
-- past scan_from or in scan_also: scan_from past this snapshot's
-- transactions and every stored one (a schema restored from another
-- cluster keeps that cluster's ids, which may be ahead: the restore
-- repair at Open still finds them ahead, and finds nothing to number),
-- never back; scan_also the transactions open below it that wrote no
-- batch (none of ours is open: this transaction holds batches in SHARE
-- mode).
SELECT pg_advisory_xact_lock({{sequencer_lock}});
LOCK TABLE {{schema}}.batches IN SHARE MODE;
WITH counter AS (
    SELECT seq FROM {{schema}}.feed_counter
), settled AS (
    SELECT b.id, b.tx, b.tenant, b.aggregate_type, b.version, b.event_count, c.seq + row_number() OVER (ORDER BY b.tx, b.id) AS seq
    FROM {{schema}}.pending p JOIN {{schema}}.batches b ON b.tx = p.tx AND b.id = p.id, counter c
), numbered AS (
    INSERT INTO {{schema}}.feed (tenant, seq, aggregate_type, tx, batch_id)
    SELECT tenant, seq, aggregate_type, tx, id FROM settled
), counted AS (
    INSERT INTO {{schema}}.feed_stats AS st (tenant, aggregate_type, aggregates, batches, events, head)
    SELECT tenant, aggregate_type, count(*) FILTER (WHERE version = 1), count(*), sum(event_count), max(seq)
    FROM settled GROUP BY tenant, aggregate_type
    ON CONFLICT (tenant, aggregate_type) DO UPDATE
    SET aggregates = st.aggregates + excluded.aggregates, batches = st.batches + excluded.batches,
        events = st.events + excluded.events, head = greatest(st.head, excluded.head)
)
UPDATE {{schema}}.feed_counter SET seq = coalesce((SELECT max(seq) FROM settled), seq),
    scan_from = greatest(scan_from, pg_snapshot_xmax(pg_current_snapshot()),
        (SELECT ((max(tx)::text::numeric + 1)::text)::xid8 FROM {{schema}}.batches)),
    scan_also = ARRAY(SELECT x FROM pg_snapshot_xip(pg_current_snapshot()) x
        WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.batches b WHERE b.tx = x) ORDER BY x);
DROP TABLE {{schema}}.pending;
