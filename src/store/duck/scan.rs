//! The fold's read of `webhook_deliveries`: every record of a seq range, in seq order, without
//! asking DuckDB to sort.
//!
//! The one writer appends records in seq order, a transaction at a time, and nothing ever
//! updates or deletes one, so insertion order is seq order; DuckDB returns a plain scan in
//! insertion order while `preserve_insertion_order` is on (its default, set again here). An
//! `ORDER BY seq` made DuckDB sort the whole range before the first row came out: a full fold
//! of 10 M records sorted 10 M rows, more than the memory limit
//! (`HOOKLEDGER_DUCKDB_MEMORY`) holds, so the sort spilled to disk (see the README's history
//! bench for the profile). `seq BETWEEN` still prunes row groups by their zone maps, so a short
//! range reads only its own.
//!
//! The scan is a two-stage pipeline: a thread of its own, on a clone of the connection, runs
//! DuckDB's scan and decodes each Arrow batch into rows, while the calling thread hands them to
//! `f` (the fold). A full fold spent about two thirds of its CPU in the scan and decoding and a
//! third in the fold, one after the other on one core; in two stages they overlap (README,
//! "History"). At most [`IN_FLIGHT`] decoded batches wait between them.
//!
//! Invariant: rows are handed on in strictly increasing seq. A row out of that order stops the
//! scan with an error naming both seqs (the fold would otherwise report a missing seq); nothing
//! is ever reordered silently. An error from `f` stops the scan too: the decoding thread's next
//! hand-off fails and it returns.

use std::sync::mpsc::{sync_channel, SyncSender};

use duckdb::{params, Connection};

use super::arrow_scan;
use crate::error::{LedgerError, Result};
use crate::ledger::stored::StoredRecord;

/// Decoded batches (about 2,048 rows each) that may wait for the fold.
const IN_FLIGHT: usize = 8;

/// Calls `f` with every record whose seq is in `from..=to`, in seq order.
pub fn records(
    conn: &Connection,
    from: u64,
    to: u64,
    f: &mut dyn FnMut(StoredRecord) -> Result<()>,
) -> Result<()> {
    let reader = conn.try_clone()?;
    let (tx, rx) = sync_channel::<Result<Vec<StoredRecord>>>(IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = decode(&reader, from, to, &tx) {
                let _ = tx.send(Err(e));
            }
        });
        let mut last: Option<u64> = None;
        for batch in rx {
            for row in batch? {
                if let Some(prev) = last.filter(|p| row.seq <= *p) {
                    return Err(LedgerError::Invalid(format!(
                        "the ledger scan returned seq {} after seq {prev}: records are not in \
                         insertion order",
                        row.seq
                    )));
                }
                last = Some(row.seq);
                f(row)?;
            }
        }
        Ok(())
    })
}

/// The first stage: scans `from..=to` and sends each batch's rows on, until the end or until
/// the receiving side has gone.
fn decode(
    conn: &Connection,
    from: u64,
    to: u64,
    tx: &SyncSender<Result<Vec<StoredRecord>>>,
) -> Result<()> {
    conn.execute_batch(
        "SET arrow_lossless_conversion = true; SET preserve_insertion_order = true",
    )?;
    let sql = format!(
        "SELECT {} FROM webhook_deliveries WHERE seq BETWEEN ? AND ?",
        super::RECORD_COLUMNS
    );
    let mut stmt = conn.prepare(&sql)?;
    let range = params![
        from.min(i64::MAX as u64) as i64,
        to.min(i64::MAX as u64) as i64
    ];
    for batch in stmt.stream_arrow(range)? {
        let batch = batch?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        arrow_scan::each_record(&batch, &mut |row| {
            rows.push(row);
            Ok(())
        })?;
        if tx.send(Ok(rows)).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::error::LedgerError;
    use crate::store::duck::{DuckStore, OpenMode};
    use crate::store::Store;

    /// A scan many times longer than the pipeline's buffer hands on every row once, in order,
    /// a sub-range exactly its own rows, and an error from the fold at the first row ends the
    /// scan with that error (the decoding thread, blocked on a full buffer, stops too).
    #[test]
    fn a_long_scan_hands_on_every_row_in_order_and_stops_at_the_folds_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.duckdb");
        let written = crate::bench::rebuild::fill(&path, 60_000, &mut |_| {}).unwrap();
        assert!(written >= 60_000);
        let store = DuckStore::open(&path, OpenMode::ReadOnly).unwrap();
        let mut seen = 0u64;
        store
            .scan_records(1, u64::MAX, &mut |row| {
                seen += 1;
                assert_eq!(row.seq, seen);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, written);
        let mut range = Vec::new();
        store
            .scan_records(20_001, 45_000, &mut |row| {
                range.push(row.seq);
                Ok(())
            })
            .unwrap();
        assert_eq!(range, (20_001..=45_000).collect::<Vec<u64>>());
        let mut calls = 0;
        let err = store
            .scan_records(1, u64::MAX, &mut |_| {
                calls += 1;
                Err(LedgerError::Invalid("the fold refused it".into()))
            })
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("the fold refused it"), "{err}");
    }
}
