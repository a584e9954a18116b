//! Timing one DuckDB `CHECKPOINT` for the `history` scenario, with what DuckDB's vacuum
//! rewrote in it.
//!
//! A checkpoint of this DuckDB writes the rows appended since the last one as new row groups,
//! then its vacuum merges runs of adjacent under-filled row groups into fewer full ones (at
//! most three target groups of 122,880 rows per merge, `RowGroupCollection::
//! ScheduleVacuumTasks`). Appends after a checkpoint start a new row group, so every
//! checkpoint leaves one under-filled group at each table's end, and now and then a later
//! checkpoint merges the tail: up to 3 × 122,880 rows rewritten, whatever the history. That
//! merge, not the history, set the longest pause the scenario saw (145-233 ms at 10 M records
//! against 22-62 ms without one; at 1 M too, a few windows later, for the same cost per merged
//! row), which is why the store turns it off (`store/duck/vacuum.rs`). Each
//! timed checkpoint reports the rows merged, read from DuckDB's own checkpoint log
//! (`duckdb_logs`, type `Checkpoint`, enabled for this connection's database by
//! [`Timer::new`]): 0 unless `HOOKLEDGER_DUCKDB_VACUUM_TASKS` turns merging back on.

use std::time::{Duration, Instant};

use crate::error::{LedgerError, Result};
use crate::ledger::Ledger;
use crate::store::any::AnyStore;

/// One timed checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timed {
    pub ms: f64,
    /// Rows DuckDB's vacuum merged into fewer row groups during it (all tables).
    pub merged_rows: u64,
}

/// A reader connection with DuckDB's checkpoint log turned on.
pub struct Timer {
    reader: AnyStore,
}

impl Timer {
    pub fn new(ledger: &Ledger) -> Result<Self> {
        let reader = ledger.reader()?;
        reader.connection()?.execute_batch(
            "CALL enable_logging(level => 'debug', storage => 'memory'); \
             SET enabled_log_types = 'Checkpoint'; \
             SET logging_mode = 'enable_selected'; \
             CALL truncate_duckdb_logs();",
        )?;
        Ok(Self { reader })
    }

    /// Times a `CHECKPOINT` once the writer and the checkpointer are idle (it fails while
    /// another transaction runs; then it is tried again), and reads what its vacuum merged.
    pub fn checkpoint(&self) -> Result<Timed> {
        let conn = self.reader.connection()?;
        for _ in 0..50 {
            let started = Instant::now();
            if conn.execute_batch("CHECKPOINT").is_ok() {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let merged_rows = merged_rows(conn)?;
                conn.execute_batch("CALL truncate_duckdb_logs()")?;
                return Ok(Timed { ms, merged_rows });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LedgerError::Invalid("CHECKPOINT kept failing".into()))
    }
}

/// The rows of every vacuum merge logged since the log was last emptied.
fn merged_rows(conn: &duckdb::Connection) -> Result<u64> {
    let mut stmt = conn.prepare(
        "SELECT message FROM duckdb_logs WHERE type = 'Checkpoint' AND message LIKE '%vacuum%'",
    )?;
    let messages = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut rows = 0;
    for m in messages {
        rows += merge_rows_of(&m?);
    }
    Ok(rows)
}

/// `merge_rows=N` of one vacuum log message (0 when absent).
fn merge_rows_of(message: &str) -> u64 {
    message
        .split_once("merge_rows=")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_merged_rows_of_a_vacuum_message() {
        let m = "{'database': d, 'schema': main, 'table': webhook_deliveries, 'type': vacuum, \
                 'info': {segment_idx=93, merge_count=3, target_count=2, merge_rows=238000, \
                 row_start=9762000}}";
        assert_eq!(merge_rows_of(m), 238_000);
        assert_eq!(merge_rows_of("{'type': checkpoint, 'info': {count=5}}"), 0);
    }

    /// Two checkpoints each leave a row group of 3,000 rows; the next checkpoint's vacuum
    /// merges them, and DuckDB's log says so in the form [`merged_rows`] reads.
    #[test]
    fn a_real_checkpoint_logs_the_rows_its_vacuum_merged() {
        let dir = tempfile::tempdir().unwrap();
        let conn = duckdb::Connection::open(dir.path().join("v.duckdb")).unwrap();
        conn.execute_batch(
            "CALL enable_logging(level => 'debug', storage => 'memory'); \
             SET enabled_log_types = 'Checkpoint'; SET logging_mode = 'enable_selected'; \
             CREATE TABLE t (i BIGINT);",
        )
        .unwrap();
        let mut merged = Vec::new();
        for _ in 0..3 {
            conn.execute_batch("CALL truncate_duckdb_logs(); INSERT INTO t SELECT range FROM range(3000); CHECKPOINT;")
                .unwrap();
            merged.push(merged_rows(&conn).unwrap());
        }
        assert_eq!(merged[0], 0, "{merged:?}");
        assert!(merged.iter().any(|&m| m >= 6000), "{merged:?}");
    }
}
