//! Schema migrations: the numbered `schema/*.sql` files, applied in order at a read-write open,
//! each in its own transaction with its `schema_migrations` row. A file written by a newer
//! schema is refused with both versions named; a read-only open never migrates.
//!
//! Schema 4 first gives every event bucket its new columns (the buckets are tables created at
//! run time, so no static SQL names them all) and rebuilds `events_all` over them; schema 5
//! likewise adds `body_digest` and lets `body` be NULL (an expunged body) in every bucket.
//! Schema 6 first gives every sealed bucket its own filter table, rebuilt from its ids
//! (`filters.rs`), then drops `event_buckets.filter`. Schema 8 moves each projection checkpoint's
//! body into a table of its own after its SQL made the new `projection_checkpoints`
//! (`checkpoints.rs`). No event row is rewritten: old events
//! keep their link version (see `crate::ledger::chain`).

use duckdb::{params, Connection};

use super::{buckets, checkpoints, filters, supported_schema, DuckStore, OpenMode, MIGRATIONS};
use crate::error::{LedgerError, Result};

/// The event columns schema 4 adds to every bucket, in table order.
pub const EVENT_COLUMNS_4: &str = "app VARCHAR, producer_id VARCHAR, format UTINYINT";

impl DuckStore {
    pub(super) fn migrate(&self, mode: OpenMode) -> Result<()> {
        let supported = supported_schema();
        let found = self.schema_version()?;
        if found > supported {
            return Err(LedgerError::SchemaTooNew { found, supported });
        }
        if mode == OpenMode::ReadOnly {
            return Ok(());
        }
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)",
        )?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            let tx = self.conn.unchecked_transaction()?;
            if *version == 4 {
                add_event_columns(&tx)?;
            }
            if *version == 5 {
                erasure_columns(&tx)?;
            }
            if *version == 6 {
                filters::move_to_tables(&tx)?;
            }
            tx.execute_batch(sql)?;
            if *version == checkpoints::SCHEMA {
                checkpoints::move_to_tables(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES (?)",
                params![version],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The highest applied migration (0 for a new file).
    pub fn schema_version(&self) -> Result<u32> {
        let exists: i64 = self.conn.query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'",
            [],
            |r| r.get(0),
        )?;
        if exists == 0 {
            return Ok(0);
        }
        let v: Option<u32> =
            self.conn
                .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                    r.get(0)
                })?;
        Ok(v.unwrap_or(0))
    }
}

/// Adds schema 4's event columns to every bucket and rebuilds `events_all`.
fn add_event_columns(conn: &Connection) -> Result<()> {
    let n = buckets::bucket_count(conn)?;
    for b in 0..n {
        for column in EVENT_COLUMNS_4.split(", ") {
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {column}",
                buckets::table(b)
            ))?;
        }
    }
    conn.execute_batch(&buckets::view_sql(n))?;
    Ok(())
}

/// Schema 5: every bucket gets `body_digest` and a nullable `body`; `events_all` is rebuilt.
fn erasure_columns(conn: &Connection) -> Result<()> {
    let n = buckets::bucket_count(conn)?;
    for b in 0..n {
        let t = buckets::table(b);
        conn.execute_batch(&format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS body_digest BLOB; \
             ALTER TABLE {t} ALTER COLUMN body DROP NOT NULL"
        ))?;
    }
    conn.execute_batch(&buckets::view_sql(n))?;
    Ok(())
}
