-- The feed without pending (2026-12, issue 23). Migration 4 had every
-- store write a pending row beside its batch, and the sequencer number
-- the committed pending rows and delete them. But the sequencer already
-- knows where every batch without a number is: at or past scan_from, or
-- in a transaction of scan_also (see the package doc), which is true of
-- pending's rows as migration 4 and its runs kept them. So the runs now
-- read those places in batches' (tx, id) index instead, and a store
-- writes its batch alone: a heap row, an index entry and a delete fewer
-- per batch.
--
-- Taken under the sequencers' lock and with batches in SHARE mode (stores
-- in flight end first, new ones wait for this transaction). A store or a
-- sequencer of the previous release, which names pending, fails from now
-- on instead of writing a row no one reads.
SELECT pg_advisory_xact_lock({{sequencer_lock}});
LOCK TABLE {{schema}}.batches IN SHARE MODE;
DROP TABLE {{schema}}.pending;
