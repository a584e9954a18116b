//! The `disk` scenario's measurement: bytes on disk per happy-path delivery, taken from a
//! database the real path wrote (the `deliver` run's, so commits are batched as in service).
//!
//! DuckDB allocates its file in 256 KiB blocks and keeps freed blocks, so the file size says
//! little about one table. The ledger alone (its records and the chain links, `ledger_batches`)
//! is therefore copied into a fresh file and measured there as used blocks, less those of the
//! same tables copied empty. The whole file (events and their bodies included) is reported too,
//! after a checkpoint.

use std::path::Path;

use duckdb::Connection;

use super::{figure, Figure};
use crate::error::Result;

pub fn figures(dir: &Path, db: &Path, deliveries: u64) -> Result<Vec<Figure>> {
    let conn = Connection::open(db)?;
    conn.execute_batch("CHECKPOINT")?;
    let main: String = conn.query_row("SELECT current_database()", [], |r| r.get(0))?;
    let whole = used_bytes(&conn, &main)?;
    let ledger = copied_bytes(&conn, &dir.join("disk-ledger.duckdb"), "")?;
    let empty = copied_bytes(&conn, &dir.join("disk-empty.duckdb"), "LIMIT 0")?;
    let per = |bytes: u64| bytes as f64 / deliveries.max(1) as f64;
    let links: i64 = conn.query_row("SELECT count(*) FROM ledger_batches", [], |r| r.get(0))?;
    Ok(vec![
        figure(
            "disk",
            "ledger_bytes_per_delivery",
            "ledger per happy-path delivery (3 records + chain links)",
            per(ledger.saturating_sub(empty)),
            "bytes",
            None,
        ),
        figure(
            "disk",
            "file_bytes_per_delivery",
            "whole database per delivery (events and bodies included)",
            per(whole),
            "bytes",
            None,
        ),
        figure(
            "disk",
            "deliveries_per_link",
            "deliveries per chain link (group commit size)",
            deliveries as f64 / links.max(1) as f64,
            "deliveries",
            None,
        ),
    ])
}

/// Used blocks × block size of an attached database.
fn used_bytes(conn: &Connection, name: &str) -> Result<u64> {
    let bytes: i64 = conn.query_row(
        "SELECT used_blocks * block_size FROM pragma_database_size() WHERE database_name = ?",
        [name],
        |r| r.get(0),
    )?;
    Ok(bytes.max(0) as u64)
}

/// The ledger tables copied (`limit` appended to each SELECT) into a fresh file: its used bytes.
fn copied_bytes(conn: &Connection, path: &Path, limit: &str) -> Result<u64> {
    let _ = std::fs::remove_file(path);
    let sql = format!(
        "ATTACH '{path}' AS copy; \
         CREATE TABLE copy.webhook_deliveries AS SELECT * FROM webhook_deliveries ORDER BY seq {limit}; \
         CREATE TABLE copy.ledger_batches AS SELECT * FROM ledger_batches ORDER BY first_seq {limit}; \
         CHECKPOINT copy;",
        path = path.display()
    );
    conn.execute_batch(&sql)?;
    let bytes = used_bytes(conn, "copy")?;
    conn.execute_batch("DETACH copy")?;
    let _ = std::fs::remove_file(path);
    Ok(bytes)
}
