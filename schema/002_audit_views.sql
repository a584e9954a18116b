-- hookledger schema 2: read-only views for auditors. Open the file with the duckdb CLI or
-- Python (read-only, with the server stopped) and query these instead of the raw tables.

-- Every ledger record, in the columns an audit needs.
CREATE VIEW delivery_history AS
SELECT seq, recorded_at, webhook_id, event_id, kind, attempt, status_code, error_class, error,
       duration_ms, due_at, reason
FROM webhook_deliveries;

-- The last record of each delivery: where it stands.
CREATE VIEW delivery_latest AS
SELECT *
FROM delivery_history
QUALIFY row_number() OVER (PARTITION BY webhook_id, event_id ORDER BY seq DESC) = 1;

-- Every attempt's outcome with its latency (delivered and failed records).
CREATE VIEW attempt_outcomes AS
SELECT seq, recorded_at, webhook_id, event_id, attempt, kind = 'delivered' AS ok, status_code,
       error_class, duration_ms
FROM webhook_deliveries
WHERE kind IN ('delivered', 'failed');

-- The registry's history without secrets: who changed what, and when.
CREATE VIEW webhook_history AS
SELECT seq, recorded_at, webhook_id, kind, url, event_types, description, active, reason
FROM webhook_changes;
