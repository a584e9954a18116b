//! Projection checkpoints in a DuckDB file (schema 8): one small row of
//! `projection_checkpoints` per checkpoint (its id, binding, digest and size) and its body in a
//! table of its own, `checkpoint_body_<id>`; thinning deletes the row and drops the table.
//!
//! Why a table per body: at each checkpoint of the file, DuckDB rewrites the last row group of
//! every table that rows were appended to or deleted from, and a row group holds 122,880 rows,
//! so with every body in one table (schema 3 to 7) each DuckDB checkpoint after a projection
//! checkpoint rewrote all stored bodies, deleted ones included (a `DELETE` does not free a row's
//! bytes from its row group). The pause grew with history: the bench's longest DuckDB
//! checkpoint after a window of publishes went from 64 ms at 1 M records to 669 ms at 10 M. A
//! body in its own table is written once and never rewritten, and `DROP TABLE` gives its blocks
//! back (measured with DuckDB 1.2 and 1.5 MB bodies, 20 kept: a DuckDB checkpoint after one more
//! checkpoint took 10.7 ms after 10 had been written and 5.8 ms after 100; with one table, 39
//! and 232 ms).
//!
//! Invariant: a row and its body table are created in one transaction and removed in one, so a
//! crash leaves both or neither. A row whose body table is missing anyway (dropped by hand)
//! reads with an empty body, which fails its digest: the checkpoint is ignored like any other
//! bad one, never an error that stops an open. Files of schema 3 to 7 opened read-only (never
//! migrated) are read in their old layout, bodies inline.

use duckdb::{params, Connection};

use super::ts;
use crate::error::Result;
use crate::ledger::chain::Hash;
use crate::store::{CheckpointInfo, StoredCheckpoint};

/// The schema from which bodies live in tables of their own.
pub const SCHEMA: u32 = 8;

fn hash(v: Vec<u8>) -> Hash {
    v.try_into().unwrap_or([0; 32])
}

/// A checkpoint from `seq, chain_hash, epoch_us(recorded_at), format_version, digest` at
/// columns `first..first + 5` of `r`, and its body from column `body` (`None`: left empty).
fn from_row(
    r: &duckdb::Row,
    first: usize,
    body: Option<usize>,
) -> duckdb::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        seq: r.get::<_, i64>(first)? as u64,
        chain_hash: hash(r.get(first + 1)?),
        recorded_at_us: r.get(first + 2)?,
        format_version: r.get(first + 3)?,
        digest: hash(r.get(first + 4)?),
        body: match body {
            Some(i) => r.get(i)?,
            None => Vec::new(),
        },
    })
}

fn body_table(id: i64) -> String {
    format!("checkpoint_body_{id}")
}

/// Stores `cp`: its body table and its row, in one transaction.
pub fn append(conn: &Connection, cp: &StoredCheckpoint) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    insert(&tx, next_id(&tx)?, cp, None)?;
    tx.commit()?;
    Ok(())
}

/// A fresh id from the sequence `checkpoint_ids`: never one used before, even when rows
/// were deleted by hand and their tables left behind.
fn next_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT nextval('checkpoint_ids')", [], |r| r.get(0))?)
}

/// The row `id` and its body table, inside the caller's transaction (`created_at_us`: kept
/// from an older layout by the migration, else now).
fn insert(
    conn: &Connection,
    id: i64,
    cp: &StoredCheckpoint,
    created_at_us: Option<i64>,
) -> Result<()> {
    let table = body_table(id);
    conn.execute_batch(&format!("CREATE TABLE {table} (body BLOB NOT NULL)"))?;
    conn.execute(&format!("INSERT INTO {table} VALUES (?)"), params![cp.body])?;
    conn.prepare_cached(
        "INSERT INTO projection_checkpoints \
         (id, seq, chain_hash, recorded_at, format_version, digest, created_at, body_bytes) \
         VALUES (?, ?, ?, ?, ?, ?, coalesce(?, current_timestamp::TIMESTAMP), ?)",
    )?
    .execute(params![
        id,
        cp.seq as i64,
        cp.chain_hash.to_vec(),
        cp.recorded_at_us.map(ts),
        cp.format_version,
        cp.digest.to_vec(),
        created_at_us.map(ts),
        cp.body.len() as i64,
    ])?;
    Ok(())
}

/// Every stored checkpoint without its body, by seq, then in the order they were stored.
pub fn index(conn: &Connection, schema: u32) -> Result<Vec<CheckpointInfo>> {
    let order = if schema >= SCHEMA { "id" } else { "rowid" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, epoch_us(recorded_at), format_version, body_bytes \
         FROM projection_checkpoints ORDER BY seq, {order}"
    ))?;
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

/// The checkpoints stored at `seq`, with their bodies, in the order they were stored.
pub fn at(conn: &Connection, schema: u32, seq: u64) -> Result<Vec<StoredCheckpoint>> {
    let seq = seq.min(i64::MAX as u64) as i64;
    if schema < SCHEMA {
        return legacy_at(conn, seq);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, chain_hash, epoch_us(recorded_at), format_version, digest \
         FROM projection_checkpoints WHERE seq = ? ORDER BY id",
    )?;
    let rows = stmt.query_map(params![seq], |r| {
        Ok((r.get::<_, i64>(0)?, from_row(r, 1, None)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mut cp) = row?;
        cp.body = body_of(conn, id)?.unwrap_or_default();
        out.push(cp);
    }
    Ok(out)
}

/// The body in table `id`, or `None` when that table is missing.
fn body_of(conn: &Connection, id: i64) -> Result<Option<Vec<u8>>> {
    let table = body_table(id);
    let exists: i64 = conn
        .prepare_cached("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?")?
        .query_row(params![table], |r| r.get(0))?;
    if exists == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare(&format!("SELECT body FROM {table} LIMIT 1"))?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get(0)?),
        None => None,
    })
}

/// Schema 3 to 7: bodies inline in `projection_checkpoints`.
fn legacy_at(conn: &Connection, seq: i64) -> Result<Vec<StoredCheckpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, chain_hash, epoch_us(recorded_at), format_version, digest, body \
         FROM projection_checkpoints WHERE seq = ? ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![seq], |r| from_row(r, 0, Some(5)))?;
    Ok(rows.collect::<duckdb::Result<_>>()?)
}

/// Deletes every checkpoint at one of `seqs`, rows and body tables, in one transaction; how
/// many.
pub fn delete(conn: &Connection, seqs: &[u64]) -> Result<u64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    // Integers only, so the list is safe to write into the statement.
    let list: Vec<String> = seqs
        .iter()
        .map(|s| s.min(&(i64::MAX as u64)).to_string())
        .collect();
    let list = list.join(",");
    let tx = conn.unchecked_transaction()?;
    let ids: Vec<i64> = tx
        .prepare(&format!(
            "SELECT id FROM projection_checkpoints WHERE seq IN ({list})"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<duckdb::Result<_>>()?;
    tx.execute(
        &format!("DELETE FROM projection_checkpoints WHERE seq IN ({list})"),
        [],
    )?;
    for id in &ids {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", body_table(*id)))?;
    }
    tx.commit()?;
    Ok(ids.len() as u64)
}

/// Schema 8's move, after `schema/008_checkpoint_tables.sql` renamed the old table to
/// `projection_checkpoints_7` and created the new one: each old row's body into a table of its
/// own (ids from `checkpoint_ids`, in the old order), then the old table is dropped. Inside the migration's
/// transaction.
pub fn move_to_tables(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, chain_hash, epoch_us(recorded_at), format_version, digest, body, \
         epoch_us(created_at) FROM projection_checkpoints_7 ORDER BY seq, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((from_row(r, 0, Some(5))?, r.get::<_, Option<i64>>(6)?))
    })?;
    let old: Vec<_> = rows.collect::<duckdb::Result<_>>()?;
    for (cp, created) in &old {
        insert(conn, next_id(conn)?, cp, *created)?;
    }
    conn.execute_batch("DROP TABLE projection_checkpoints_7")?;
    Ok(())
}
