-- hookledger PostgreSQL schema 2: the audit views, with the names and columns DuckDB's have
-- (schema/002_audit_views.sql as schema/004_apps.sql redefined them). Query these with psql
-- instead of the raw tables.

-- Every ledger record, with the producer's event id and the app.
CREATE VIEW delivery_history AS
SELECT d.seq, d.recorded_at, coalesce(e.app, 'default') AS app, d.webhook_id,
       coalesce(e.producer_id, d.event_id::text) AS producer_event_id, d.event_id, d.kind,
       d.attempt, d.status_code, d.error_class, d.error, d.duration_ms, d.due_at, d.reason
FROM webhook_deliveries d LEFT JOIN events_all e ON e.event_id = d.event_id;

-- The last record of each delivery: where it stands. The columns are DuckDB's, whose view
-- kept the schema-2 columns of delivery_history it was created over.
CREATE VIEW delivery_latest AS
SELECT DISTINCT ON (webhook_id, event_id) seq, recorded_at, webhook_id, event_id, kind,
       attempt, status_code, error_class, error, duration_ms, due_at, reason
FROM delivery_history
ORDER BY webhook_id, event_id, seq DESC;

-- Every attempt's outcome with its latency (delivered and failed records).
CREATE VIEW attempt_outcomes AS
SELECT seq, recorded_at, webhook_id, event_id, attempt, kind = 'delivered' AS ok, status_code,
       error_class, duration_ms
FROM webhook_deliveries
WHERE kind IN ('delivered', 'failed');

-- The registry's history without secrets: who changed what, and when.
CREATE VIEW webhook_history AS
SELECT seq, recorded_at, kind, coalesce(app, 'default') AS app, webhook_id, url, event_types,
       description, active, payload_format, name, metadata, token_id, reason
FROM webhook_changes;

-- Every erased body, with the producer's event id and the app.
CREATE VIEW body_expunges AS
SELECT x.seq, x.recorded_at, coalesce(e.app, 'default') AS app,
       coalesce(e.producer_id, x.event_id::text) AS producer_event_id, x.event_id,
       x.actor, x.reason, encode(x.body_digest, 'hex') AS body_digest
FROM event_expunges x LEFT JOIN events_all e ON e.event_id = x.event_id;
