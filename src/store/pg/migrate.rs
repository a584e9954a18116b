//! PostgreSQL schema migrations: the numbered `schema/pg/*.sql` files, applied in order at a
//! read-write open, each with its `schema_migrations` row, as DuckDB's are
//! (`store/duck/migrate.rs`); PostgreSQL's DDL is transactional, so the pending files are
//! applied in one transaction (a savepoint each) and a failure leaves the version as it was. A database written by a newer schema is refused with both
//! versions named; a read-only open never migrates, and needs the schema to exist.
//!
//! Several processes may open one database at once (nodes starting together): the migrations
//! run under a transaction-scoped advisory lock, and each reads the version again once it holds
//! it, so a migration is applied once.

use super::{Held, OpenMode, PgStore};
use crate::error::{LedgerError, Result};

/// The numbered schema files of `schema/pg`, applied in order.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../../schema/pg/001_ledger.sql")),
    (2, include_str!("../../../schema/pg/002_audit_views.sql")),
    (3, include_str!("../../../schema/pg/003_cluster.sql")),
    (4, include_str!("../../../schema/pg/004_actor.sql")),
];

/// The advisory lock key migrations hold ("hookledg" as a big-endian i64).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6c65_6467;

/// The PostgreSQL schema version this build writes and understands.
pub fn supported_schema() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// The highest applied migration (0 for an empty database).
pub(super) fn version(h: &mut Held) -> Result<u32> {
    let exists: bool = h
        .client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = h
        .client
        .query_one("SELECT max(version) FROM schema_migrations", &[])?
        .try_get(0)?;
    Ok(v.unwrap_or(0).max(0) as u32)
}

impl PgStore {
    /// Applies the pending migrations (read-write) and answers the schema version.
    pub(super) fn migrate(&self, mode: OpenMode) -> Result<u32> {
        let supported = supported_schema();
        let found = self.with(version)?;
        if found > supported {
            return Err(LedgerError::SchemaTooNew { found, supported });
        }
        if mode == OpenMode::ReadOnly {
            if found == 0 {
                return Err(LedgerError::Invalid(format!(
                    "--store: no hookledger ledger in the PostgreSQL database {} (start \
                     `hookledger serve --store` on it first)",
                    self.shown
                )));
            }
            return Ok(found);
        }
        self.with(|h| {
            let mut tx = h.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )?;
            let found: Option<i32> = tx
                .query_one("SELECT max(version) FROM schema_migrations", &[])?
                .try_get(0)?;
            let found = found.unwrap_or(0).max(0) as u32;
            if found > supported {
                return Err(LedgerError::SchemaTooNew { found, supported });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
                let mut step = tx.transaction()?;
                step.batch_execute(sql)?;
                step.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[&(*version as i32)],
                )?;
                step.commit()?;
            }
            tx.commit()?;
            Ok(supported)
        })
    }
}
