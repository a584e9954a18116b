-- hookledger schema 7: who made each registry change (src/registry/actor.rs): `operator`,
-- `token:<token id>`, `system:<what>` or `cli`. Rows of format 3 chain their actor
-- (src/registry/row.rs); older rows keep NULL, which their link never covered.
ALTER TABLE webhook_changes ADD COLUMN IF NOT EXISTS actor VARCHAR;

CREATE OR REPLACE VIEW webhook_history AS
SELECT seq, recorded_at, kind, coalesce(app, 'default') AS app, webhook_id, url, event_types,
       description, active, payload_format, name, metadata, token_id, reason, actor
FROM webhook_changes;
