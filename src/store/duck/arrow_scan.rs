//! Decoding ledger rows from Arrow record batches, column by column.

use duckdb::arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, UInt16Array,
    UInt32Array, UInt8Array,
};
use uuid::Uuid;

use crate::error::{LedgerError, Result};
use crate::ledger::stored::StoredRecord;

fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T> {
    batch.column(i).as_any().downcast_ref::<T>().ok_or_else(|| {
        LedgerError::Invalid(format!(
            "ledger column {i} has an unexpected type {}",
            batch.column(i).data_type()
        ))
    })
}

fn opt<A: Array, T>(a: &A, row: usize, get: impl Fn(&A, usize) -> T) -> Option<T> {
    a.is_valid(row).then(|| get(a, row))
}

fn text(a: &StringArray, row: usize) -> Option<String> {
    opt(a, row, |a, r| a.value(r).to_owned())
}

fn uuid(a: &FixedSizeBinaryArray, row: usize) -> Uuid {
    Uuid::from_slice(a.value(row)).unwrap_or_default()
}

/// Calls `f` with each row of `batch` (columns in `SCAN_COLUMNS` order).
pub fn each_record(
    batch: &RecordBatch,
    f: &mut dyn FnMut(StoredRecord) -> Result<()>,
) -> Result<()> {
    let seq = column::<Int64Array>(batch, 0)?;
    let recorded = column::<Int64Array>(batch, 1)?;
    let version = column::<UInt8Array>(batch, 2)?;
    let kind = batch
        .column(3)
        .as_string_opt::<i32>()
        .ok_or_else(|| LedgerError::Invalid("ledger column kind is not a string".into()))?;
    let webhook = column::<FixedSizeBinaryArray>(batch, 4)?;
    let event = column::<FixedSizeBinaryArray>(batch, 5)?;
    let attempt = column::<UInt16Array>(batch, 6)?;
    let status = column::<UInt16Array>(batch, 7)?;
    let error_class = column::<StringArray>(batch, 8)?;
    let error = column::<StringArray>(batch, 9)?;
    let duration = column::<UInt32Array>(batch, 10)?;
    let due = column::<Int64Array>(batch, 11)?;
    let reason = column::<StringArray>(batch, 12)?;
    let response = column::<StringArray>(batch, 13)?;
    let prior = column::<StringArray>(batch, 14)?;
    for row in 0..batch.num_rows() {
        f(StoredRecord {
            seq: seq.value(row) as u64,
            recorded_at_us: recorded.value(row),
            format_version: version.value(row),
            kind: kind.value(row).to_owned(),
            webhook_id: uuid(webhook, row),
            event_id: uuid(event, row),
            attempt: opt(attempt, row, UInt16Array::value),
            status_code: opt(status, row, UInt16Array::value),
            error_class: text(error_class, row),
            error: text(error, row),
            duration_ms: opt(duration, row, UInt32Array::value),
            due_at_us: opt(due, row, Int64Array::value),
            reason: text(reason, row),
            response_body: text(response, row),
            prior_state: text(prior, row),
        })?;
    }
    Ok(())
}
