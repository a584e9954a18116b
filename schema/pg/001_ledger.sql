-- hookledger PostgreSQL schema 1: the ledger, its chain, events, the webhook registry,
-- settings, erasure facts and projection checkpoints, with the columns DuckDB's schema 5
-- has (schema/001_ledger.sql .. 005_erasure.sql), typed for PostgreSQL. hookledger never issues UPDATE
-- or DELETE against the logs here (only `settings` is a key-value table, and
-- `projection_checkpoints` a cache that thinning deletes from). Unsigned DuckDB types map to the
-- next wider signed type: UTINYINT -> smallint, USMALLINT -> integer, UINTEGER -> bigint.

-- The ledger: one row per fact about one delivery (webhook_id, event_id).
CREATE TABLE webhook_deliveries (
    seq            bigint      PRIMARY KEY, -- gapless, assigned by the writer
    recorded_at    timestamptz NOT NULL,    -- when the writer committed it (non-decreasing)
    format_version smallint    NOT NULL,    -- record format; old rows are upcast, never rewritten
    kind           text        NOT NULL,    -- enqueued|attempted|delivered|failed|dead_parked|parked|requeued
    webhook_id     uuid        NOT NULL,
    event_id       uuid        NOT NULL,
    attempt        integer,                 -- attempted, delivered, failed
    status_code    integer,                 -- delivered, failed (when the receiver answered)
    error_class    text,                    -- failed: status|timeout|connect|...|abandoned|other
    error          text,                    -- failed: a readable message
    duration_ms    bigint,                  -- delivered, failed
    due_at         timestamptz,             -- enqueued, requeued, failed: when due next
    reason         text,                    -- dead_parked, parked, requeued: why (and who)
    response_body  text,                    -- failed: the first 1 KiB of the response body
    prior_state    text                     -- requeued: delivered|dead|parked
);
-- One delivery's records in seq order (history, last kinds, the event's webhooks).
CREATE INDEX webhook_deliveries_delivery ON webhook_deliveries (event_id, webhook_id, seq);
-- One webhook's records (an app's pages, bulk recover's window).
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);

-- The hash chain: one link per committed batch of ledger records.
CREATE TABLE ledger_batches (
    first_seq    bigint      PRIMARY KEY,
    last_seq     bigint      NOT NULL UNIQUE,
    committed_at timestamptz NOT NULL,
    hash         bytea       NOT NULL -- SHA-256 chained to the previous batch (src/ledger/chain.rs)
);

-- Published events, stored once per event; each row chains to the previous one. The primary
-- key on event_id is what refuses a repeated event id, at any age.
-- (All of this table's SQL in Rust is in src/store/pg/events.rs.)
CREATE TABLE events (
    seq          bigint      NOT NULL UNIQUE, -- gapless, in commit order
    event_id     uuid        PRIMARY KEY,     -- the key derived from app and producer id
    event_type   text        NOT NULL,
    published_at timestamptz NOT NULL,
    body         bytea,                       -- NULL: expunged (src/ledger/expunge.rs)
    hash         bytea       NOT NULL,
    app          text,                        -- NULL: the default app
    producer_id  text,                        -- NULL: the UUID is the producer's id
    format       smallint,                    -- NULL: sent as stored; 1: the payload
    body_digest  bytea                        -- SHA-256 of the body, what a v3 link covers
);

-- Every event (the name DuckDB's bucketed events have; PostgreSQL needs no buckets).
CREATE VIEW events_all AS SELECT * FROM events;

-- One row per erased body: an immutable fact, chained to the previous one (`hash`, see
-- src/ledger/expunge.rs), appended in the transaction that sets the event's body to NULL.
CREATE TABLE event_expunges (
    seq          bigint      PRIMARY KEY, -- gapless from 1
    recorded_at  timestamptz NOT NULL,
    event_id     uuid        NOT NULL UNIQUE,
    event_seq    bigint      NOT NULL,    -- the event's seq in its own chain
    event_hash   bytea       NOT NULL,    -- the event's chain hash
    body_digest  bytea       NOT NULL,    -- SHA-256 of the removed body
    link_version smallint    NOT NULL,    -- the event's link version (3 on PostgreSQL)
    actor        text        NOT NULL,    -- `operator`, or the policy (`policy:body_retention=30d`)
    reason       text        NOT NULL,
    hash         bytea       NOT NULL
);

-- The webhook registry's own append-only log; each row chains to the previous one.
CREATE TABLE webhook_changes (
    seq            bigint      PRIMARY KEY,
    recorded_at    timestamptz NOT NULL,
    format_version smallint    NOT NULL,
    kind           text        NOT NULL,
    webhook_id     uuid        NOT NULL,
    url            text,
    event_types    text,
    description    text,
    active         boolean,
    secret         text,              -- sensitive: never select this in reports
    previous_until timestamptz,
    reason         text,
    hash           bytea       NOT NULL,
    app            text,
    name           text,
    metadata       text,
    token_id       uuid,
    token_digest   bytea,             -- a digest, never the token
    payload_format text               -- standard|raw
);

-- Small settings (for example the generated API token).
CREATE TABLE settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Projection checkpoints: a cache of the folded state at a batch boundary, never a source of
-- truth (src/ledger/checkpoint/mod.rs). `id` keeps the order they were stored in.
CREATE TABLE projection_checkpoints (
    id             bigserial   PRIMARY KEY,
    seq            bigint      NOT NULL,
    chain_hash     bytea       NOT NULL,
    recorded_at    timestamptz,
    format_version smallint    NOT NULL,
    digest         bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    body_bytes     bigint      NOT NULL,
    body           bytea       NOT NULL
);
CREATE INDEX projection_checkpoints_seq ON projection_checkpoints (seq, id);
