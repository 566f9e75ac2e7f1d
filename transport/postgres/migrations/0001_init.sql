-- The store: one row per aggregate, one row per stored batch.
CREATE TABLE {{schema}}.aggregates (
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    event_count    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant, aggregate_type, aggregate_id)
);

CREATE TABLE {{schema}}.batches (
    id             bigserial   PRIMARY KEY,
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    -- the writing transaction, for the sequencer's high-water mark
    tx             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- the feed sequence number, given by the sequencer once tx is settled
    seq            bigint,
    stored_at      timestamptz NOT NULL,
    event_count    int         NOT NULL,
    event_types    text[]      NOT NULL,
    -- 32-bit FNV-1a of aggregate_id, for feed partitions
    id_hash        bigint      NOT NULL,
    events         json        NOT NULL,
    UNIQUE (tenant, aggregate_type, aggregate_id, version)
);

CREATE UNIQUE INDEX batches_feed ON {{schema}}.batches (tenant, seq) WHERE seq IS NOT NULL;
CREATE INDEX batches_type_feed ON {{schema}}.batches (tenant, aggregate_type, seq) WHERE seq IS NOT NULL;
CREATE INDEX batches_pending ON {{schema}}.batches (tx, id) WHERE seq IS NULL;

-- The last sequence number given out; its row lock serialises sequencers.
CREATE TABLE {{schema}}.feed_counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint  NOT NULL
);
INSERT INTO {{schema}}.feed_counter (seq) VALUES (0);

CREATE TABLE {{schema}}.delete_tokens (
    token          text        PRIMARY KEY,
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    all_of_type    boolean     NOT NULL,
    expires_at     timestamptz NOT NULL
);
