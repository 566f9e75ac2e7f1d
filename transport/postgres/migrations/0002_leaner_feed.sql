-- A leaner feed (2026-12): the sequencer becomes one pipelined statement of
-- the transport's instead of a plpgsql function, it walks batches in
-- (tx, id) order straight off an index, and the feed loses its index on
-- batch_id: whether a batch has its number is told by the horizon (every
-- batch of a transaction older than it has one), and a deleted batch's
-- feed row is simply never joined again.
CREATE INDEX batches_tx_id ON {{schema}}.batches (tx, id);
DROP INDEX {{schema}}.batches_tx;
DROP INDEX {{schema}}.feed_batch;
DROP FUNCTION {{schema}}.sequence_feed(bigint, text);
