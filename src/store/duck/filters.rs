//! Where each sealed bucket's id filter ([`IdFilter`]) is kept: its own one-row table
//! `event_filter_0000n`, created in the transaction that seals bucket n and never written
//! again.
//!
//! Why a table each (schema 6): DuckDB 1.2 rewrites, at every checkpoint, the last row group of
//! each table appended to since the previous one, and a table under 122,880 rows is one row
//! group. With the filters as a column of `event_buckets`, the checkpoint after each seal
//! rewrote every filter ever stored (2.5 bytes per stored event): measured 19 / 99 / 348 ms with
//! 2 / 25 / 76 sealed buckets. A new table per filter is written once, by the checkpoint after
//! its seal; `event_buckets` keeps only its four small columns. Same probe: 21 / 24 / 28 ms
//! (the probe is in the README's history figures; load average 9-11 on 2 cores).
//!
//! Invariant: a filter is a cache of its bucket's ids, never the answer. Each row carries a
//! SHA-256 digest over the bucket's binding (number, seq range, event count) and the filter's
//! bytes; a filter that is missing, unreadable, of another format or whose digest does not
//! match is rebuilt exactly from the bucket's own ids (with a warning naming the bucket) and,
//! at a read-write open, stored again. So a damaged filter costs one bucket scan, never a
//! repeated id taken as new.

use duckdb::{params, Connection};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::buckets;
use super::idfilter::IdFilter;
use crate::error::{LedgerError, Result};

/// The table holding sealed bucket `bucket`'s filter.
pub fn table(bucket: u32) -> String {
    format!("event_filter_{bucket:05}")
}

/// What a filter is bound to: its bucket's row of `event_buckets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub bucket: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
}

fn digest(binding: &Binding, bytes: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"hookledger event filter v1\0");
    h.update(binding.bucket.to_le_bytes());
    h.update(binding.first_seq.to_le_bytes());
    h.update(binding.last_seq.to_le_bytes());
    h.update(binding.events.to_le_bytes());
    h.update(bytes);
    h.finalize().to_vec()
}

/// Inside the sealing transaction: creates the bucket's filter table with its one row.
pub fn store(conn: &Connection, binding: &Binding, filter: &IdFilter) -> duckdb::Result<()> {
    let t = table(binding.bucket);
    let bytes = filter.to_bytes();
    conn.execute_batch(&format!(
        "CREATE TABLE {t} (filter BLOB NOT NULL, digest BLOB NOT NULL)"
    ))?;
    conn.execute(
        &format!("INSERT INTO {t} VALUES (?, ?)"),
        params![bytes, digest(binding, &bytes)],
    )?;
    Ok(())
}

/// The stored filter of `binding`'s bucket, if it checks out; else why not.
fn read(conn: &Connection, binding: &Binding) -> std::result::Result<IdFilter, String> {
    let sql = format!("SELECT filter, digest FROM {}", table(binding.bucket));
    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let row = rows.next().map_err(|e| e.to_string())?.ok_or("no row")?;
    let bytes: Vec<u8> = row.get(0).map_err(|e| e.to_string())?;
    let stored: Vec<u8> = row.get(1).map_err(|e| e.to_string())?;
    if rows.next().map_err(|e| e.to_string())?.is_some() {
        return Err("more than one row".into());
    }
    if stored != digest(binding, &bytes) {
        return Err("digest does not match".into());
    }
    IdFilter::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// The exact filter of a bucket, built from its own ids.
pub fn rebuild(conn: &Connection, bucket: u32) -> Result<IdFilter> {
    let mut stmt = conn.prepare(&format!(
        "SELECT event_id::VARCHAR FROM {}",
        buckets::table(bucket)
    ))?;
    let mut rows = stmt.query([])?;
    let mut ids = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let id = Uuid::parse_str(&id)
            .map_err(|e| LedgerError::Invalid(format!("event bucket {bucket}: id `{id}`: {e}")))?;
        ids.push(id.as_u128());
    }
    Ok(IdFilter::build(&ids))
}

/// A sealed bucket's filter: the stored one if it checks out, else rebuilt from the bucket's
/// ids and stored again when `repair` (a read-write open).
pub fn load(conn: &Connection, binding: &Binding, repair: bool) -> Result<IdFilter> {
    match read(conn, binding) {
        Ok(filter) => Ok(filter),
        Err(why) => {
            tracing::warn!(
                bucket = binding.bucket,
                table = %table(binding.bucket),
                why = %why,
                "event id filter unusable: rebuilt from the bucket's ids"
            );
            let filter = rebuild(conn, binding.bucket)?;
            if repair {
                replace(conn, binding, &filter)?;
            }
            Ok(filter)
        }
    }
}

/// Stores `filter` in place of whatever the bucket's filter table holds, in one transaction.
fn replace(conn: &Connection, binding: &Binding, filter: &IdFilter) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(binding.bucket)))?;
    store(&tx, binding, filter)?;
    tx.commit()?;
    Ok(())
}

/// Schema 6, inside its transaction: every sealed bucket gets its filter table, rebuilt from
/// its ids (the filters of schemas 3-5 carried no digest, so none is trusted), before the
/// migration drops `event_buckets.filter`.
pub fn move_to_tables(conn: &Connection) -> Result<()> {
    for binding in bindings(conn)? {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(binding.bucket)))?;
        store(conn, &binding, &rebuild(conn, binding.bucket)?)?;
    }
    Ok(())
}

/// Every sealed bucket's row, in bucket order.
pub fn bindings(conn: &Connection) -> Result<Vec<Binding>> {
    let mut stmt = conn
        .prepare("SELECT bucket, first_seq, last_seq, events FROM event_buckets ORDER BY bucket")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Binding {
            bucket: r.get::<_, i64>(0)? as u32,
            first_seq: r.get::<_, i64>(1)? as u64,
            last_seq: r.get::<_, i64>(2)? as u64,
            events: r.get::<_, i64>(3)? as u64,
        });
    }
    Ok(out)
}
