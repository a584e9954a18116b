-- hookledger schema 3: a ledger that lives for years (flat checkpoints, projection
-- checkpoints). See src/store/duck/buckets.rs and src/ledger/checkpoint/.

-- Sealed buckets of events. `events` is bucket 0; bucket n is the table `events_0000n`, each
-- with its own event_id key, so that a DuckDB checkpoint rewrites only the open bucket's
-- index. A row is written in the same transaction that opens the next bucket; `filter` is a
-- Bloom filter of the bucket's event ids (src/store/duck/idfilter.rs).
CREATE TABLE event_buckets (
    bucket    INTEGER NOT NULL,
    first_seq BIGINT  NOT NULL, -- event seqs in the bucket
    last_seq  BIGINT  NOT NULL,
    events    BIGINT  NOT NULL,
    filter    BLOB    NOT NULL
);

-- Every event of every bucket (replaced whenever a bucket opens).
CREATE VIEW events_all AS SELECT * FROM events;

-- Projection checkpoints: a cache of the folded state at a batch boundary, never a source of
-- truth. Rows are appended; a row is used only if its digest, its binding (seq and the chain
-- hash of the link ending there) and its body check out (src/ledger/checkpoint/mod.rs).
CREATE TABLE projection_checkpoints (
    seq            BIGINT    NOT NULL, -- the last record folded into it
    chain_hash     BLOB      NOT NULL, -- the hash of the chain link ending at seq
    recorded_at    TIMESTAMP,          -- that record's time
    format_version UTINYINT  NOT NULL, -- body format
    digest         BLOB      NOT NULL, -- SHA-256 over the binding, format and body
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    body_bytes     BIGINT    NOT NULL,
    body           BLOB      NOT NULL
);
