-- Batches: one row per stored batch, inserted and never updated. The
-- unique key (tenant, type, id, version) is the optimistic concurrency
-- check: two writers of one version cannot both insert it.
CREATE TABLE {{schema}}.batches (
    id             bigserial   PRIMARY KEY,
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    -- the writing transaction, for the sequencer's horizon
    tx             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stored_at      timestamptz NOT NULL,
    event_count    int         NOT NULL,
    event_types    text[]      NOT NULL,
    -- 32-bit FNV-1a of aggregate_id, for feed partitions
    id_hash        bigint      NOT NULL,
    events         json        NOT NULL,
    UNIQUE (tenant, aggregate_type, aggregate_id, version)
);
CREATE INDEX batches_tx ON {{schema}}.batches (tx);

-- The feed: one row per batch, written by the sequencer once the batch's
-- transaction and every older one have settled.
CREATE TABLE {{schema}}.feed (
    tenant         text   NOT NULL,
    seq            bigint NOT NULL,
    aggregate_type text   NOT NULL,
    batch_id       bigint NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX feed_type ON {{schema}}.feed (tenant, aggregate_type, seq);
CREATE INDEX feed_batch ON {{schema}}.feed (batch_id);

-- The last number given out, and the horizon: every batch written by a
-- transaction older than it has a number.
CREATE TABLE {{schema}}.feed_counter (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq     bigint  NOT NULL,
    horizon xid8    NOT NULL
);
INSERT INTO {{schema}}.feed_counter (seq, horizon) VALUES (0, '0');

-- Counts per aggregate type, kept by the sequencer and by deletes.
CREATE TABLE {{schema}}.feed_stats (
    tenant         text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregates     bigint NOT NULL,
    batches        bigint NOT NULL,
    events         bigint NOT NULL,
    PRIMARY KEY (tenant, aggregate_type)
);

CREATE TABLE {{schema}}.delete_tokens (
    token          text        PRIMARY KEY,
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    all_of_type    boolean     NOT NULL,
    expires_at     timestamptz NOT NULL
);

-- The sequencer, in one round trip. A VOLATILE function takes a new
-- snapshot for each statement, so after the advisory lock it sees what the
-- sequencer before it committed. The horizon (the oldest transaction still
-- open) is read after the lock: every transaction older than it has
-- committed or rolled back, so the batches between the last horizon and
-- this one are all there is of them, and they are numbered in (tx, id)
-- order. The numbering is thus a function of the settled batches alone;
-- that is why its commit need not wait for the flush: a numbering lost in
-- a crash (only one that no later commit flushed can be) comes out the
-- same when the sequencer runs again.
CREATE FUNCTION {{schema}}.sequence_feed(lock_key bigint, channel text) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    base bigint;
    low  xid8;
    high xid8;
    n    bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT seq, horizon INTO base, low FROM {{schema}}.feed_counter;
    high := pg_snapshot_xmin(pg_current_snapshot());
    IF high <= low THEN
        RETURN;
    END IF;
    RETURN QUERY
        WITH settled AS (
            SELECT id, tenant, aggregate_type, version, event_count,
                   row_number() OVER (ORDER BY tx, id) AS rn
            FROM {{schema}}.batches
            WHERE tx >= low AND tx < high
        ), numbered AS (
            INSERT INTO {{schema}}.feed (tenant, seq, aggregate_type, batch_id)
            SELECT tenant, base + rn, aggregate_type, id FROM settled
            RETURNING batch_id
        ), counted AS (
            INSERT INTO {{schema}}.feed_stats AS s (tenant, aggregate_type, aggregates, batches, events)
            SELECT tenant, aggregate_type, count(*) FILTER (WHERE version = 1), count(*), sum(event_count)
            FROM settled GROUP BY tenant, aggregate_type
            ON CONFLICT (tenant, aggregate_type) DO UPDATE
            SET aggregates = s.aggregates + excluded.aggregates, batches = s.batches + excluded.batches,
                events = s.events + excluded.events
        )
        SELECT batch_id FROM numbered;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE {{schema}}.feed_counter SET seq = base + n, horizon = high;
        PERFORM pg_notify(channel, '');
    END IF;
END
$$;
