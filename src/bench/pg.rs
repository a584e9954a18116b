//! `hookledger bench --store postgres://...`: the `commit` and `deliver` scenarios run a second
//! time on PostgreSQL, each in a fresh schema of the named database (dropped afterwards), so the
//! figures sit beside DuckDB's from the same run. The ratio that matters: one node on
//! PostgreSQL against one node on DuckDB (the target is at least 0.5).
//!
//! Invariant: a bench schema is created empty and dropped at the end, whatever the outcome; the
//! rest of the database is not touched.

use crate::error::{LedgerError, Result};
use crate::store::any::Location;

/// A schema of its own for one scenario run, dropped on drop.
pub struct BenchSchema {
    server: String,
    name: String,
    url: String,
}

impl BenchSchema {
    /// Creates `hookledger_bench_<random>` on the server `url` names. Runs the sync client on a
    /// plain thread (it must not run inside the async runtime).
    pub fn create(url: &str) -> Result<Self> {
        let server = url.to_owned();
        let name = format!("hookledger_bench_{}", uuid::Uuid::new_v4().simple());
        let (s, n) = (server.clone(), name.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut c = postgres::Client::connect(&s, postgres::NoTls).map_err(|e| {
                LedgerError::Invalid(format!("--store: cannot connect to PostgreSQL: {e}"))
            })?;
            c.batch_execute(&format!("CREATE SCHEMA {n}"))?;
            Ok(())
        })
        .join()
        .map_err(|_| LedgerError::Invalid("the schema thread panicked".into()))??;
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-csearch_path%3D{name}");
        Ok(Self { server, name, url })
    }

    /// The URL that opens this schema (its `search_path` set).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn location(&self) -> Location {
        Location::Postgres(self.url.clone())
    }
}

impl Drop for BenchSchema {
    fn drop(&mut self) {
        let (s, n) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&s, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA {n} CASCADE"));
            }
        })
        .join();
    }
}
