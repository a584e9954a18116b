//! DuckDB's row-group merging (its vacuum), which hookledger's databases run without: the
//! setting `max_vacuum_tasks`, [`DEFAULT_VACUUM_TASKS`] unless
//! `HOOKLEDGER_DUCKDB_VACUUM_TASKS` says otherwise (DuckDB's own default is 100).
//!
//! Why off: this DuckDB starts a new row group for the rows appended after each checkpoint,
//! and its vacuum later merges runs of under-filled row groups into full ones, inside
//! whichever checkpoint finds them: up to 3 × 122,880 rows rewritten per table. DuckDB's
//! automatic checkpoint runs inside a COMMIT, so every publish waits for that merge.
//! Measured with it on (100) and off (0):
//! - `bench --scenario deliver --events 60000`, three alternated runs, quiet machine: half-rate
//!   publish → receiver p99 85-98 ms off against 98-184 ms on; the longest writer transaction
//!   85-90 ms against 99-159 ms;
//! - on the history bench's kept files (DuckDB's checkpoint log read by
//!   `bench/duck_checkpoint.rs`): a checkpoint that merged 238,000-375,000 rows took 145-233 ms
//!   at 10 M records, one that merged none 22-62 ms at 1 M or 10 M.
//!
//! Invariant kept: nothing is lost by it. The ledger's tables are append-only, so there are no
//! deleted rows to reclaim (thinned projection checkpoints drop their body tables whole); what
//! is given up is row groups filled to 122,880 rows: each checkpoint's rows stay a group of
//! their own (about 100,000 records per automatic checkpoint, one more per restart).

use duckdb::Config;

use crate::error::{LedgerError, Result};

/// `max_vacuum_tasks` for the writer's database unless the environment says otherwise.
pub const DEFAULT_VACUUM_TASKS: u32 = 0;
/// The environment variable that overrides it.
pub const VACUUM_TASKS_ENV: &str = "HOOKLEDGER_DUCKDB_VACUUM_TASKS";

/// `config` with the setting (from the environment, else the default), for the whole database
/// from its first statement on (migrations included) and every connection cloned from it.
pub(super) fn configure(config: Config) -> Result<Config> {
    let tasks = parse(std::env::var(VACUUM_TASKS_ENV).ok().as_deref())?;
    Ok(config.with("max_vacuum_tasks", tasks.to_string())?)
}

/// The setting for a value of [`VACUUM_TASKS_ENV`] (unset or blank: the default).
fn parse(value: Option<&str>) -> Result<u32> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_VACUUM_TASKS),
        Some(v) => v.parse().map_err(|_| {
            LedgerError::Invalid(format!(
                "{VACUUM_TASKS_ENV}=`{v}`: a whole number of DuckDB vacuum tasks per checkpoint \
                 (0, the default, turns DuckDB's row-group merging off; DuckDB's own default is \
                 100)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::duck::{DuckStore, OpenMode};

    #[test]
    fn the_default_is_off_and_a_bad_value_names_the_variable() {
        assert_eq!(parse(None).unwrap(), 0);
        assert_eq!(parse(Some(" ")).unwrap(), 0);
        assert_eq!(parse(Some("100")).unwrap(), 100);
        let err = parse(Some("lots")).unwrap_err().to_string();
        assert!(
            err.contains(VACUUM_TASKS_ENV) && err.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn the_writers_database_runs_without_row_group_merging() {
        let dir = tempfile::tempdir().unwrap();
        let store = DuckStore::open(&dir.path().join("v.duckdb"), OpenMode::ReadWrite).unwrap();
        // The checkpointer commits through a clone: its commits may run the automatic
        // checkpoint too.
        let reader = store.reader().unwrap();
        for conn in [store.connection(), reader.connection()] {
            let tasks: i64 = conn
                .query_row(
                    "SELECT current_setting('max_vacuum_tasks')::BIGINT",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tasks, i64::from(DEFAULT_VACUUM_TASKS));
        }
    }
}
