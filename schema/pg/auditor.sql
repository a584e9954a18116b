-- hookledger on PostgreSQL: the role auditors' SQL runs as (`POST /v1/sql` with
-- HOOKLEDGER_SQL_URL, `hookledger sql --store URL`). Not a numbered migration: roles belong to
-- the whole cluster, and making one needs a privilege hookledger's own role should not have.
-- An administrator runs it once per ledger schema, with that schema first on the search_path:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f schema/pg/auditor.sql
--   psql "$ADMIN_URL" -c "CREATE ROLE audit LOGIN PASSWORD '...' IN ROLE hookledger_auditor"
--
-- It may read the ledger's records, events, chain links, erasure facts, the registry without
-- its secret and token digest, and the audit views. Nothing else: not the settings, not the
-- checkpoints, not the cluster's leases, and it may write nothing. hookledger checks these
-- privileges before it runs a query as a role (src/sql/pg.rs) and refuses a role that can
-- read a secret or write.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hookledger_auditor') THEN
        CREATE ROLE hookledger_auditor NOLOGIN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO hookledger_auditor', current_schema());
END
$$;
GRANT SELECT ON webhook_deliveries, ledger_batches, events, events_all, event_expunges,
    delivery_history, delivery_latest, attempt_outcomes, webhook_history, body_expunges
    TO hookledger_auditor;
GRANT SELECT (seq, recorded_at, format_version, kind, webhook_id, url, event_types, description,
    active, previous_until, reason, hash, app, name, metadata, token_id, payload_format, actor)
    ON webhook_changes TO hookledger_auditor;
