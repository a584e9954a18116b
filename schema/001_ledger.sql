-- hookledger schema 1: the ledger, its chain, events and the webhook registry.
-- The logs here are append-only: hookledger never issues UPDATE or DELETE against them
-- (only `settings` is a plain key-value table).

-- The ledger: one row per fact about one delivery (webhook_id, event_id).
-- Columns are typed so that audit queries are plain SQL; timestamps are UTC.
CREATE TABLE webhook_deliveries (
    seq            BIGINT    NOT NULL, -- gapless, assigned by the single writer
    recorded_at    TIMESTAMP NOT NULL, -- when the writer committed it (UTC, non-decreasing)
    format_version UTINYINT  NOT NULL, -- record format; old rows are upcast, never rewritten
    kind           VARCHAR   NOT NULL, -- enqueued|attempted|delivered|failed|dead_parked|parked|requeued
    webhook_id     UUID      NOT NULL,
    event_id       UUID      NOT NULL,
    attempt        USMALLINT,          -- attempted, delivered, failed
    status_code    USMALLINT,          -- delivered, failed (when the receiver answered)
    error_class    VARCHAR,            -- failed: status|timeout|connect|reset|tls|body|protocol|refused_url|abandoned|other
    error          VARCHAR,            -- failed: a readable message
    duration_ms    UINTEGER,           -- delivered, failed
    due_at         TIMESTAMP,          -- enqueued, requeued: due; failed: the computed next due time
    reason         VARCHAR,            -- dead_parked, parked, requeued: why (and who)
    response_body  VARCHAR,            -- failed: the first 1 KiB of the response body
    prior_state    VARCHAR             -- requeued: delivered|dead|parked
);

-- The hash chain: one link per committed batch of ledger records.
CREATE TABLE ledger_batches (
    first_seq    BIGINT    NOT NULL,
    last_seq     BIGINT    NOT NULL,
    committed_at TIMESTAMP NOT NULL,
    hash         BLOB      NOT NULL -- SHA-256 chained to the previous batch (see src/ledger/chain.rs)
);

-- Published events with the exact body bytes that are signed and sent, stored once per event.
-- Each row chains to the previous one (src/ledger/chain.rs), so a changed body is detected.
CREATE TABLE events (
    seq          BIGINT    NOT NULL, -- gapless, in commit order
    event_id     UUID      PRIMARY KEY,
    event_type   VARCHAR   NOT NULL,
    published_at TIMESTAMP NOT NULL,
    body         BLOB      NOT NULL,
    hash         BLOB      NOT NULL
);

-- The webhook registry's own append-only log; each row chains to the previous one.
CREATE TABLE webhook_changes (
    seq            BIGINT    NOT NULL,
    recorded_at    TIMESTAMP NOT NULL,
    format_version UTINYINT  NOT NULL,
    kind           VARCHAR   NOT NULL, -- created|updated|deactivated|secret_rotated
    webhook_id     UUID      NOT NULL,
    url            VARCHAR,
    event_types    VARCHAR,            -- comma-joined filter patterns; '' = all events
    description    VARCHAR,
    active         BOOLEAN,
    secret         VARCHAR,            -- sensitive: never select this in reports
    previous_until TIMESTAMP,          -- secret_rotated: the old secret signs until then
    reason         VARCHAR,
    hash           BLOB      NOT NULL
);

-- Small settings (for example the generated API token).
CREATE TABLE settings (
    name  VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
