//! Ledger positions on PostgreSQL: the chain links, the head, the seq at an instant within a
//! range, settings, and the `projection_checkpoints` rows (appended, listed, and deleted when
//! thinned: the only rows ever deleted, since a checkpoint is a cache). Every query filters on
//! a key (`seq`, `first_seq`, `last_seq`), so its cost follows the range asked for.

use super::{hash, seq, Held, Param};
use crate::error::Result;
use crate::ledger::chain::BatchLink;
use crate::ledger::record::Timestamp;
use crate::store::{CheckpointInfo, StoredCheckpoint};

fn link(r: &postgres::Row) -> Result<BatchLink> {
    Ok(BatchLink {
        first_seq: r.try_get::<_, i64>(0)? as u64,
        last_seq: r.try_get::<_, i64>(1)? as u64,
        hash: hash(r.try_get(2)?),
    })
}

pub(super) fn last_seq(h: &mut Held) -> Result<u64> {
    let stmt = h.prepared("SELECT max(seq) FROM webhook_deliveries")?;
    let v: Option<i64> = h.client.query_one(&stmt, &[])?.try_get(0)?;
    Ok(v.unwrap_or(0) as u64)
}

pub(super) fn links(h: &mut Held) -> Result<Vec<BatchLink>> {
    let stmt =
        h.prepared("SELECT first_seq, last_seq, hash FROM ledger_batches ORDER BY first_seq")?;
    h.client.query(&stmt, &[])?.iter().map(link).collect()
}

/// Through the primary key: the batch holding `seq + 1` starts at the greatest `first_seq` not
/// after it.
pub(super) fn links_after(h: &mut Held, after: u64) -> Result<Vec<BatchLink>> {
    let stmt = h.prepared(
        "SELECT first_seq, last_seq, hash FROM ledger_batches \
         WHERE first_seq >= (SELECT coalesce(max(first_seq), 0) FROM ledger_batches \
                             WHERE first_seq <= $1::bigint + 1) \
           AND last_seq > $1 ORDER BY first_seq",
    )?;
    h.client
        .query(&stmt, &[&seq(after)])?
        .iter()
        .map(link)
        .collect()
}

pub(super) fn link_ending_at(h: &mut Held, at: u64) -> Result<Option<BatchLink>> {
    let stmt = h.prepared(
        "SELECT first_seq, last_seq, hash FROM ledger_batches WHERE last_seq = $1 \
         ORDER BY first_seq LIMIT 1",
    )?;
    h.client
        .query_opt(&stmt, &[&seq(at)])?
        .as_ref()
        .map(link)
        .transpose()
}

pub(super) fn last_link(h: &mut Held, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>> {
    let stmt = h.prepared(
        "SELECT first_seq, last_seq, hash, committed_at FROM ledger_batches \
         WHERE last_seq >= $1 ORDER BY last_seq DESC LIMIT 1",
    )?;
    match h.client.query_opt(&stmt, &[&seq(at_or_after)])? {
        Some(r) => Ok(Some((link(&r)?, r.try_get(3)?))),
        None => Ok(None),
    }
}

pub(super) fn last_seq_at_within(
    h: &mut Held,
    at: Timestamp,
    from: u64,
    before: u64,
) -> Result<Option<u64>> {
    let stmt = h.prepared(
        "SELECT max(seq) FROM webhook_deliveries WHERE seq >= $1 AND seq < $2 AND recorded_at <= $3",
    )?;
    let v: Option<i64> = h
        .client
        .query_one(&stmt, &[&seq(from) as Param, &seq(before), &at])?
        .try_get(0)?;
    Ok(v.map(|s| s as u64))
}

pub(super) fn setting(h: &mut Held, name: &str) -> Result<Option<String>> {
    let stmt = h.prepared("SELECT value FROM settings WHERE name = $1")?;
    match h.client.query_opt(&stmt, &[&name])? {
        Some(r) => Ok(Some(r.try_get(0)?)),
        None => Ok(None),
    }
}

pub(super) fn append_checkpoint(h: &mut Held, cp: &StoredCheckpoint) -> Result<()> {
    let stmt = h.prepared(
        "INSERT INTO projection_checkpoints \
         (seq, chain_hash, recorded_at, format_version, digest, body_bytes, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )?;
    h.client.execute(
        &stmt,
        &[
            &seq(cp.seq) as Param,
            &cp.chain_hash.as_slice(),
            &cp.recorded_at_us.map(super::ts),
            &i16::from(cp.format_version),
            &cp.digest.as_slice(),
            &(cp.body.len() as i64),
            &cp.body,
        ],
    )?;
    Ok(())
}

fn format_version(r: &postgres::Row, i: usize) -> Result<u8> {
    let v: i16 = r.try_get(i)?;
    u8::try_from(v).map_err(|_| crate::LedgerError::Invalid(format!("checkpoint format {v}")))
}

fn micros(r: &postgres::Row, i: usize) -> Result<Option<i64>> {
    let t: Option<Timestamp> = r.try_get(i)?;
    Ok(t.map(|t| t.timestamp_micros()))
}

pub(super) fn checkpoint_index(h: &mut Held) -> Result<Vec<CheckpointInfo>> {
    let stmt = h.prepared(
        "SELECT seq, recorded_at, format_version, body_bytes FROM projection_checkpoints \
         ORDER BY seq, id",
    )?;
    h.client
        .query(&stmt, &[])?
        .iter()
        .map(|r| {
            Ok(CheckpointInfo {
                seq: r.try_get::<_, i64>(0)? as u64,
                recorded_at_us: micros(r, 1)?,
                format_version: format_version(r, 2)?,
                bytes: r.try_get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .collect()
}

pub(super) fn checkpoints_at(h: &mut Held, at: u64) -> Result<Vec<StoredCheckpoint>> {
    let stmt = h.prepared(
        "SELECT seq, chain_hash, recorded_at, format_version, digest, body \
         FROM projection_checkpoints WHERE seq = $1 ORDER BY id",
    )?;
    h.client
        .query(&stmt, &[&seq(at)])?
        .iter()
        .map(|r| {
            Ok(StoredCheckpoint {
                seq: r.try_get::<_, i64>(0)? as u64,
                chain_hash: hash(r.try_get(1)?),
                recorded_at_us: micros(r, 2)?,
                format_version: format_version(r, 3)?,
                digest: hash(r.try_get(4)?),
                body: r.try_get(5)?,
            })
        })
        .collect()
}

pub(super) fn delete_checkpoints(h: &mut Held, seqs: &[u64]) -> Result<u64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let stmt = h.prepared("DELETE FROM projection_checkpoints WHERE seq = ANY($1)")?;
    let list: Vec<i64> = seqs.iter().map(|s| seq(*s)).collect();
    Ok(h.client.execute(&stmt, &[&list])?)
}
