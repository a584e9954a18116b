//! DuckDB's automatic checkpoint: the WAL size (`checkpoint_threshold`) past which the COMMIT
//! that crosses it also checkpoints the database, [`DEFAULT_CHECKPOINT_MIB`] (DuckDB's own
//! 16 MiB) unless `HOOKLEDGER_DUCKDB_CHECKPOINT_MB` says otherwise.
//!
//! What it trades: that checkpoint runs inside the writer's COMMIT, and DuckDB cannot
//! checkpoint beside its writer, so every publish that arrives meanwhile waits for it. Its
//! cost is about 5-6 ms per MB of WAL written back (a `perf` profile of one: string
//! compression, DICT_FSST and FSST, about 40 %, fresh pages zeroed about 20 %) plus a fixed
//! part that grows with the file: DuckDB visits every table and row group at each checkpoint
//! (`buckets.rs`), and with row-group merging off (`vacuum.rs`) every checkpoint leaves new
//! row groups, so a smaller threshold leaves more of them.
//!
//! Measured, `bench --scenario deliver --events 60000` on a fresh file, alternated runs on a
//! quiet machine (threshold: half-rate publish → receiver p99; longest writer transaction):
//! - 16 MB: 63-227 ms (39x-98x one commit); 76-223 ms;
//! - 4 MB: 23-34 ms (14x-20x); 25-29 ms;
//! - 2 MB: 20-23 ms (11x-14x); 18-28 ms;
//! - 1 MB: 872 ms; the fixed part came due every few transactions, 112 of 437 took over
//!   16 ms, and the writer fell behind.
//!
//! Deliveries/s stayed within 15,300-21,300 from 2 to 16 MB. But `bench --scenario history`
//! (one run each, ledgers built through the writer at that threshold) at 4 MB against
//! 16 MB: the file at 10 M records 746 against 502 MB, the longest checkpoint after a window
//! 20.5 / 49.0 ms at 1 M / 10 M (ratio 2.39) against 23.7 / 21.5 ms (0.90), the one after a
//! bucket seals 33 against 13 ms at 10 M. A smaller threshold shortens each stall on a young
//! file and makes every checkpoint's fixed part grow faster with history, the cost the
//! README's "A ledger that lives for years" keeps flat (records are never deleted, so the
//! row groups only add up). So the default stays DuckDB's; an operator who puts a shorter
//! tail today before a bigger file and slower checkpoints later can lower it.
//!
//! Invariant kept: durability does not depend on it. Every acknowledged commit is in the WAL,
//! fsynced, whatever the threshold; the checkpoint only moves it into the main file.

use duckdb::Config;

use crate::error::{LedgerError, Result};

/// `checkpoint_threshold` in MiB for hookledger's DuckDB databases unless the environment
/// says otherwise.
pub const DEFAULT_CHECKPOINT_MIB: u64 = 16;
/// The environment variable that overrides it.
pub const CHECKPOINT_ENV: &str = "HOOKLEDGER_DUCKDB_CHECKPOINT_MB";
/// The largest value accepted (a WAL that big makes a checkpoint of seconds).
const MAX_CHECKPOINT_MIB: u64 = 1024;

/// `config` with the threshold (from the environment, else the default), for the whole
/// database from its first statement on.
pub(super) fn configure(config: Config) -> Result<Config> {
    let mib = parse(std::env::var(CHECKPOINT_ENV).ok().as_deref())?;
    with_threshold(config, mib)
}

fn with_threshold(config: Config, mib: u64) -> Result<Config> {
    Ok(config.with("checkpoint_threshold", format!("{mib}MiB"))?)
}

/// The threshold in MiB for a value of [`CHECKPOINT_ENV`] (unset or blank: the default).
fn parse(value: Option<&str>) -> Result<u64> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_CHECKPOINT_MIB),
        Some(v) => v
            .parse()
            .ok()
            .filter(|mib| (1..=MAX_CHECKPOINT_MIB).contains(mib))
            .ok_or_else(|| {
                LedgerError::Invalid(format!(
                    "{CHECKPOINT_ENV}=`{v}`: a whole number of MiB from 1 to \
                     {MAX_CHECKPOINT_MIB}, the WAL size at which DuckDB checkpoints (default \
                     {DEFAULT_CHECKPOINT_MIB})"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::duck::{DuckStore, OpenMode};

    #[test]
    fn the_default_is_sixteen_mib_and_a_bad_value_names_the_variable() {
        assert_eq!(parse(None).unwrap(), 16);
        assert_eq!(parse(Some(" ")).unwrap(), 16);
        assert_eq!(parse(Some("4")).unwrap(), 4);
        for bad in ["0", "lots", "2000", "-1"] {
            let err = parse(Some(bad)).unwrap_err().to_string();
            assert!(err.contains(CHECKPOINT_ENV) && err.contains(bad), "{err}");
        }
    }

    fn threshold_of(conn: &duckdb::Connection) -> i64 {
        conn.query_row(
            "SELECT current_setting('checkpoint_threshold')::VARCHAR",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|s| human_bytes(&s))
        .unwrap()
    }

    #[test]
    fn a_threshold_reaches_the_database() {
        let config = with_threshold(Config::default(), 4).unwrap();
        let conn = duckdb::Connection::open_in_memory_with_flags(config).unwrap();
        assert_eq!(threshold_of(&conn), 4 << 20);
    }

    #[test]
    fn the_writers_database_and_its_clones_run_at_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = DuckStore::open(&dir.path().join("c.duckdb"), OpenMode::ReadWrite).unwrap();
        let reader = store.reader().unwrap();
        for conn in [store.connection(), reader.connection()] {
            assert_eq!(threshold_of(conn), (DEFAULT_CHECKPOINT_MIB as i64) << 20);
        }
    }

    /// DuckDB shows a size as `4.0 MiB` (or `4.1 MB`): back to bytes, to the nearest KiB.
    fn human_bytes(s: &str) -> i64 {
        let (number, unit) = s.trim().split_once(' ').expect("a size and a unit");
        let n: f64 = number.parse().expect("a number");
        let scale = match unit {
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            other => panic!("unit {other}"),
        };
        ((n * scale / 1024.0).round() as i64) * 1024
    }
}
