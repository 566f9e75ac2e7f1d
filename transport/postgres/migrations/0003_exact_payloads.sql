-- Exact payloads, a head that never falls (2026-12).
--
-- A batch's events were kept as JSON that the transport had re-marshalled:
-- Data came back compacted and HTML-escaped, and an EncryptedData that was
-- not UTF-8 came back with replacement characters. New batches keep their
-- events in payload, in the transport's own binary framing, byte for byte;
-- events stays for the batches stored before (what they lost was lost
-- when they were written) and is NULL for new ones. Both changes touch the
-- catalog only: no row is rewritten, and the ACCESS EXCLUSIVE lock they
-- take is held for milliseconds (once the transactions already using the
-- table have ended).
ALTER TABLE {{schema}}.batches ADD COLUMN payload bytea;
ALTER TABLE {{schema}}.batches ALTER COLUMN events DROP NOT NULL;

-- The head of each feed: the highest number it ever held. A type delete
-- takes the type's feed rows, but not its head: numbers are never reused,
-- and a consumer's checkpoint must never look ahead of the feed. One read
-- of the feed's index per (tenant, type) fills it in.
ALTER TABLE {{schema}}.feed_stats ADD COLUMN head bigint NOT NULL DEFAULT 0;
UPDATE {{schema}}.feed_stats s SET head = coalesce((SELECT max(f.seq) FROM {{schema}}.feed f
    WHERE f.tenant = s.tenant AND f.aggregate_type = s.aggregate_type), 0);
