//! Ledger positions in SQL: single chain links, the head, the seq at an instant within a range,
//! and the `projection_checkpoints` rows (appended, listed, and deleted when thinned: the only
//! rows of the file ever deleted, since a checkpoint is a cache).
//!
//! Every query here filters on `seq` or `last_seq`, which grow with insertion order, so
//! DuckDB's zone maps (min/max per row group) skip all but the row groups that can match: the
//! cost follows the range asked for, not the size of the log.

use duckdb::{params, Connection};

use super::ts;
use crate::error::Result;
use crate::ledger::chain::{BatchLink, Hash};
use crate::ledger::record::Timestamp;
use crate::store::{CheckpointInfo, StoredCheckpoint};

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

pub fn append_checkpoint(conn: &Connection, cp: &StoredCheckpoint) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO projection_checkpoints \
         (seq, chain_hash, recorded_at, format_version, digest, body_bytes, body) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        cp.seq as i64,
        cp.chain_hash.to_vec(),
        cp.recorded_at_us.map(ts),
        cp.format_version,
        cp.digest.to_vec(),
        cp.body.len() as i64,
        cp.body,
    ])?;
    Ok(())
}

pub fn checkpoint_index(conn: &Connection) -> Result<Vec<CheckpointInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, epoch_us(recorded_at), format_version, body_bytes \
         FROM projection_checkpoints ORDER BY seq, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CheckpointInfo {
            seq: r.get::<_, i64>(0)? as u64,
            recorded_at_us: r.get(1)?,
            format_version: r.get(2)?,
            bytes: r.get::<_, i64>(3)? as u64,
        })
    })?;
    Ok(rows.collect::<duckdb::Result<_>>()?)
}

pub fn checkpoints_at(conn: &Connection, seq: u64) -> Result<Vec<StoredCheckpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, chain_hash, epoch_us(recorded_at), format_version, digest, body \
         FROM projection_checkpoints WHERE seq = ? ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![seq.min(i64::MAX as u64) as i64], |r| {
        Ok(StoredCheckpoint {
            seq: r.get::<_, i64>(0)? as u64,
            chain_hash: hash(r.get(1)?),
            recorded_at_us: r.get(2)?,
            format_version: r.get(3)?,
            digest: hash(r.get(4)?),
            body: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<duckdb::Result<_>>()?)
}

pub fn delete_checkpoints(conn: &Connection, seqs: &[u64]) -> Result<u64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    // Integers only, so the list is safe to write into the statement; one statement is one
    // transaction.
    let list: Vec<String> = seqs
        .iter()
        .map(|s| s.min(&(i64::MAX as u64)).to_string())
        .collect();
    let sql = format!(
        "DELETE FROM projection_checkpoints WHERE seq IN ({})",
        list.join(",")
    );
    Ok(conn.execute(&sql, [])? as u64)
}
