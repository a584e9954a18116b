//! Ledger positions in SQL: single chain links, the head, and the seq at an instant within a
//! range (projection checkpoints are in `checkpoints.rs`).
//!
//! Every query here filters on `seq` or `last_seq`, which grow with insertion order, so
//! DuckDB's zone maps (min/max per row group) skip all but the row groups that can match: the
//! cost follows the range asked for, not the size of the log.

use duckdb::{params, Connection};

use super::ts;
use crate::error::Result;
use crate::ledger::chain::{BatchLink, Hash};
use crate::ledger::record::Timestamp;

fn hash(v: Vec<u8>) -> Hash {
    v.try_into().unwrap_or([0; 32])
}

pub fn link_ending_at(conn: &Connection, seq: u64) -> Result<Option<BatchLink>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, hash FROM ledger_batches WHERE last_seq = ? \
         ORDER BY first_seq LIMIT 1",
    )?;
    let mut rows = stmt.query(params![seq.min(i64::MAX as u64) as i64])?;
    Ok(match rows.next()? {
        Some(r) => Some(BatchLink {
            first_seq: r.get::<_, i64>(0)? as u64,
            last_seq: r.get::<_, i64>(1)? as u64,
            hash: hash(r.get(2)?),
        }),
        None => None,
    })
}

/// Links are appended in seq order, so the zone maps of `last_seq` skip the row groups before
/// `seq`.
pub fn links_after(conn: &Connection, seq: u64) -> Result<Vec<BatchLink>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, hash FROM ledger_batches WHERE last_seq > ? \
         ORDER BY first_seq",
    )?;
    let rows = stmt.query_map(params![seq.min(i64::MAX as u64) as i64], |r| {
        Ok(BatchLink {
            first_seq: r.get::<_, i64>(0)? as u64,
            last_seq: r.get::<_, i64>(1)? as u64,
            hash: hash(r.get(2)?),
        })
    })?;
    Ok(rows.collect::<duckdb::Result<_>>()?)
}

pub fn last_link(conn: &Connection, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, hash, epoch_us(committed_at) FROM ledger_batches \
         WHERE last_seq >= ? ORDER BY last_seq DESC LIMIT 1",
    )?;
    let mut rows = stmt.query(params![at_or_after.min(i64::MAX as u64) as i64])?;
    Ok(match rows.next()? {
        Some(r) => Some((
            BatchLink {
                first_seq: r.get::<_, i64>(0)? as u64,
                last_seq: r.get::<_, i64>(1)? as u64,
                hash: hash(r.get(2)?),
            },
            chrono::DateTime::from_timestamp_micros(r.get(3)?).unwrap_or_default(),
        )),
        None => None,
    })
}

pub fn last_seq_at_within(
    conn: &Connection,
    at: Timestamp,
    from: u64,
    before: u64,
) -> Result<Option<u64>> {
    let v: Option<i64> = conn.prepare_cached(
        "SELECT max(seq) FROM webhook_deliveries WHERE seq >= ? AND seq < ? AND recorded_at <= ?",
    )?
    .query_row(
        params![
            from.min(i64::MAX as u64) as i64,
            before.min(i64::MAX as u64) as i64,
            ts(at.timestamp_micros())
        ],
        |r| r.get(0),
    )?;
    Ok(v.map(|s| s as u64))
}
