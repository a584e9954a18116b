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
//! Invariant: rows are handed on in strictly increasing seq. A row out of that order stops the
//! scan with an error naming both seqs (the fold would otherwise report a missing seq); nothing
//! is ever reordered silently.

use duckdb::{params, Connection};

use super::arrow_scan;
use crate::error::{LedgerError, Result};
use crate::ledger::stored::StoredRecord;

/// Calls `f` with every record whose seq is in `from..=to`, in seq order.
pub fn records(
    conn: &Connection,
    from: u64,
    to: u64,
    f: &mut dyn FnMut(StoredRecord) -> Result<()>,
) -> Result<()> {
    conn.execute_batch(
        "SET arrow_lossless_conversion = true; SET preserve_insertion_order = true",
    )?;
    let sql = format!(
        "SELECT {} FROM webhook_deliveries WHERE seq BETWEEN ? AND ?",
        super::RECORD_COLUMNS
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut last: Option<u64> = None;
    let range = params![
        from.min(i64::MAX as u64) as i64,
        to.min(i64::MAX as u64) as i64
    ];
    for batch in stmt.stream_arrow(range)? {
        arrow_scan::each_record(&batch?, &mut |row| {
            if let Some(prev) = last.filter(|p| row.seq <= *p) {
                return Err(LedgerError::Invalid(format!(
                    "the ledger scan returned seq {} after seq {prev}: records are not in \
                     insertion order",
                    row.seq
                )));
            }
            last = Some(row.seq);
            f(row)
        })?;
    }
    Ok(())
}
