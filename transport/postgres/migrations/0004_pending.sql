-- The feed without a horizon (2026-12, issue 23). The sequencer numbered
-- the batches of transactions older than the oldest transaction still
-- open anywhere on the server (pg_snapshot_xmin), so any long transaction,
-- ours or not, in any database of the cluster, held every feed back.
-- Now a store writes, in its own transaction, a row into pending naming
-- its batch; the sequencer numbers the pending rows that have committed
-- and deletes them in the same statement. Nothing but a batch's own
-- transaction keeps it from its number (see the package doc).
--
-- Taken under the sequencers' lock and with batches in SHARE mode (stores
-- in flight end first, new ones wait for this transaction), so the
-- batches without a number are exactly those of transactions at or past
-- the horizon.
--
-- The horizon becomes scan_from, with scan_also beside it: where the
-- sequencer looks for pending rows, so that it never reads past the rows
-- it deleted (which a long transaction anywhere keeps VACUUM from
-- removing). Every pending row not numbered yet, committed or to come, is
-- of a transaction at or past scan_from or in scan_also (the ones still
-- open below it when the last run took its snapshot). The name changes:
-- an older release's sequencer, which would number them a second time,
-- fails instead. An older release's store, which writes no pending row,
-- would leave its batch without a number for ever: batches.tx loses its
-- default, so that store fails too (NOT NULL); this release's stores give
-- the column pg_current_xact_id() themselves.
SELECT pg_advisory_xact_lock({{sequencer_lock}});
LOCK TABLE {{schema}}.batches IN SHARE MODE;
CREATE TABLE {{schema}}.pending (
    tx xid8   NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (tx, id)
);
INSERT INTO {{schema}}.pending (tx, id)
    SELECT b.tx, b.id FROM {{schema}}.batches b, {{schema}}.feed_counter c WHERE b.tx >= c.horizon;
ALTER TABLE {{schema}}.feed_counter RENAME COLUMN horizon TO scan_from;
ALTER TABLE {{schema}}.feed_counter ADD COLUMN scan_also xid8[] NOT NULL DEFAULT '{}';
ALTER TABLE {{schema}}.batches ALTER COLUMN tx DROP DEFAULT;
