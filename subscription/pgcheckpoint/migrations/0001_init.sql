-- Checkpoints: one row per subscription name (with its partition suffix).
-- first_event_id identifies the entry the checkpoint stands on, for the
-- stale-checkpoint check (NULL when the position was saved without it).
CREATE TABLE {{schema}}.checkpoints (
    name           text        PRIMARY KEY,
    seq            bigint      NOT NULL CHECK (seq >= 0),
    first_event_id text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Parked entries: an entry a handler could not handle, kept whole (bytes
-- as stored) until a person retries or discards it.
CREATE TABLE {{schema}}.parked (
    name      text        NOT NULL,
    seq       bigint      NOT NULL,
    entry     bytea       NOT NULL,
    error     text        NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, seq)
);

-- Consumer groups: the partition count is fixed when the group is created.
CREATE TABLE {{schema}}.groups (
    name       text        PRIMARY KEY,
    partitions int         NOT NULL CHECK (partitions > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Live members, by the token of their Join; expired rows are removed by
-- the next Sync of any member.
CREATE TABLE {{schema}}.members (
    grp        text        NOT NULL REFERENCES {{schema}}.groups (name) ON DELETE CASCADE,
    token      text        NOT NULL,
    member     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, token)
);

-- Leases: one row per partition. generation grows at every claim: it is
-- the fencing token a checkpoint write checks.
CREATE TABLE {{schema}}.leases (
    grp        text        NOT NULL REFERENCES {{schema}}.groups (name) ON DELETE CASCADE,
    part       int         NOT NULL,
    owner      text,
    member     text,
    generation bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz,
    PRIMARY KEY (grp, part)
);
