-- hookledger schema 8: each projection checkpoint's body in a table of its own,
-- `checkpoint_body_<id>`, beside a small row here (src/store/duck/checkpoints.rs says why:
-- DuckDB rewrote every stored body, deleted ones too, at each of its own checkpoints). The
-- migration's Rust step then moves the old rows' bodies out and drops the old table.
ALTER TABLE projection_checkpoints RENAME TO projection_checkpoints_7;

CREATE TABLE projection_checkpoints (
    id             BIGINT    NOT NULL, -- its body is the one row of table checkpoint_body_<id>
    seq            BIGINT    NOT NULL, -- the last record folded into it
    chain_hash     BLOB      NOT NULL, -- the hash of the chain link ending at seq
    recorded_at    TIMESTAMP,          -- that record's time
    format_version UTINYINT  NOT NULL, -- body format
    digest         BLOB      NOT NULL, -- SHA-256 over the binding, format and body
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    body_bytes     BIGINT    NOT NULL
);

CREATE SEQUENCE checkpoint_ids START 1; -- ids of projection_checkpoints, never reused
