-- hookledger schema 5: body retention and erasure (src/ledger/expunge.rs). Before this file
-- runs, src/store/duck/migrate.rs gives every event bucket (`events`, `events_00001`, ...) the
-- column `body_digest BLOB` (SHA-256 of the body, what a version 3 event link covers; NULL in
-- rows written before, whose link covers the bytes), lets `body` be NULL (NULL: expunged) and
-- rebuilds `events_all`.

-- One row per erased body: an immutable fact, chained to the previous one (`hash`, see
-- src/ledger/expunge.rs). Appended in the transaction that removes the body.
CREATE TABLE IF NOT EXISTS event_expunges (
    seq          BIGINT    NOT NULL, -- gapless from 1
    recorded_at  TIMESTAMP NOT NULL,
    event_id     UUID      NOT NULL,
    event_seq    BIGINT    NOT NULL, -- the event's seq in its own chain
    event_hash   BLOB      NOT NULL, -- the event's chain hash
    body_digest  BLOB      NOT NULL, -- SHA-256 of the removed body
    link_version UTINYINT  NOT NULL, -- the event's link: 1, 2 (over the bytes), 3 (the digest)
    actor        VARCHAR   NOT NULL, -- `operator`, or the policy (`policy:body_retention=30d`)
    reason       VARCHAR   NOT NULL,
    hash         BLOB      NOT NULL
);

-- Every erased body, with the producer's event id and the app.
CREATE OR REPLACE VIEW body_expunges AS
SELECT x.seq, x.recorded_at, coalesce(e.app, 'default') AS app,
       coalesce(e.producer_id, x.event_id::VARCHAR) AS producer_event_id, x.event_id,
       x.actor, x.reason, lower(hex(x.body_digest)) AS body_digest
FROM event_expunges x LEFT JOIN events_all e ON e.event_id = x.event_id;
