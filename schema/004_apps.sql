-- hookledger schema 4: applications, scoped tokens, producers' event ids and the Standard
-- Webhooks payload. Existing rows keep NULL in the new columns: the default app, the event's
-- UUID as its producer id, and a body sent exactly as stored. Before this file runs,
-- src/store/duck/migrate.rs gives every event bucket (`events`, `events_00001`, ...) the
-- columns `app VARCHAR` (the app it was published to), `producer_id VARCHAR` (the producer's
-- own id; the event_id column is the 16-byte key derived from both, see src/ids.rs) and
-- `format UTINYINT` (NULL: the body is sent as stored; 1: the body is the payload, sent inside
-- the Standard Webhooks envelope unless the webhook asks for raw), and rebuilds `events_all`.

-- Registry rows of format 2 (src/registry/row.rs): the app a change belongs to, an app's
-- name and metadata, a token's id and the SHA-256 digest of its value, a webhook's payload
-- format. App and token changes have a nil webhook_id.
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS app VARCHAR;
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS name VARCHAR;
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS metadata VARCHAR;
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS token_id UUID;
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS token_digest BLOB; -- a digest, never the token
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS payload_format VARCHAR; -- standard|raw

CREATE OR REPLACE VIEW webhook_history AS
SELECT seq, recorded_at, kind, coalesce(app, 'default') AS app, webhook_id, url, event_types,
       description, active, payload_format, name, metadata, token_id, reason
FROM webhook_changes;

-- Every ledger record, with the producer's event id and the app.
CREATE OR REPLACE VIEW delivery_history AS
SELECT d.seq, d.recorded_at, coalesce(e.app, 'default') AS app, d.webhook_id,
       coalesce(e.producer_id, d.event_id::VARCHAR) AS producer_event_id, d.event_id, d.kind,
       d.attempt, d.status_code, d.error_class, d.error, d.duration_ms, d.due_at, d.reason
FROM webhook_deliveries d LEFT JOIN events_all e ON e.event_id = d.event_id;
