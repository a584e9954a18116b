//! The expunge facts (`event_expunges`, see [`crate::ledger::expunge`]) and getting an erased
//! body's bytes out of the file.
//!
//! The facts are appended in the batch's transaction, beside the bodies' removal
//! (`events.rs`, `buckets::rewrite_without_bodies`). DuckDB never overwrites a block in place
//! and does not zero the blocks it frees (its `trim_free_blocks` option, which would punch
//! holes, is not settable through the C API). Measured on the raw bytes of the file with this
//! DuckDB: `UPDATE ... SET body = NULL` + `CHECKPOINT` leaves the old bytes in a block still in
//! use (the column's other segments share it), and filling the free blocks does not reach
//! them; rewriting the bucket frees every block it had, and filling the free blocks then
//! overwrites them. So the bucket is rewritten in the transaction and, once the batch commits,
//! [`DuckStore::scrub`] fills the free blocks with random bytes.
//!
//! Invariant: after a commit with expunges returns `Ok`, no byte sequence of an erased body is
//! left in the database file or its WAL by the table that held it (checked on the raw bytes by
//! `tests/it/erasure.rs`).

use duckdb::{params, Connection};
use uuid::Uuid;

use super::{ts, DuckStore};
use crate::error::{LedgerError, Result};
use crate::ids::EventId;
use crate::ledger::chain::Hash;
use crate::ledger::expunge::StoredExpunge;

impl DuckStore {
    pub(super) fn append_expunges(&self, expunges: &[StoredExpunge]) -> duckdb::Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO event_expunges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?;
        for x in expunges {
            stmt.execute(params![
                x.seq as i64,
                ts(x.recorded_at_us),
                x.event_id.0,
                x.event_seq as i64,
                x.event_hash.to_vec(),
                x.body_digest.to_vec(),
                x.link_version,
                x.actor,
                x.reason,
                x.hash.to_vec(),
            ])?;
        }
        Ok(())
    }

    pub(super) fn expunge_facts(
        &self,
        filter: &str,
        p: impl duckdb::Params,
        f: &mut dyn FnMut(StoredExpunge) -> Result<()>,
    ) -> Result<()> {
        if self.schema < 5 {
            return Ok(());
        }
        let sql = format!(
            "SELECT seq, epoch_us(recorded_at), event_id::VARCHAR, event_seq, event_hash, \
             body_digest, link_version, actor, reason, hash FROM event_expunges {filter}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(p)?;
        while let Some(r) = rows.next()? {
            f(read_fact(r)?)?;
        }
        Ok(())
    }

    /// Up to `limit` events after seq `after` (their own seq) published before `before` whose
    /// body is still there, in seq order: retention's candidates.
    pub(super) fn bodies_before(
        &self,
        before: crate::ledger::record::Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventId)>> {
        if self.schema < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT seq, event_id::VARCHAR FROM events_all \
             WHERE seq > ? AND published_at < ? AND body IS NOT NULL ORDER BY seq LIMIT ?",
        )?;
        let rows = stmt.query_map(
            params![after as i64, ts(before.timestamp_micros()), limit as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
        )?;
        rows.map(|r| {
            let (seq, id) = r?;
            Ok((seq, EventId(Uuid::parse_str(&id).unwrap_or_default())))
        })
        .collect()
    }

    /// The facts of `event`'s expunge (one, or none), for answers and trails.
    pub(super) fn fact_of(&self, event: EventId) -> Result<Option<StoredExpunge>> {
        let mut found = None;
        self.expunge_facts(
            "WHERE event_id = ?::UUID ORDER BY seq LIMIT 1",
            params![event.0.to_string()],
            &mut |x| {
                found = Some(x);
                Ok(())
            },
        )?;
        Ok(found)
    }

    pub(super) fn last_fact(&self) -> Result<Option<(u64, Hash)>> {
        let mut last = None;
        self.expunge_facts("ORDER BY seq DESC LIMIT 1", [], &mut |x| {
            last = Some((x.seq, x.hash));
            Ok(())
        })?;
        Ok(last)
    }

    pub(super) fn first_unrecorded(&self) -> Result<Option<u64>> {
        if self.schema < 5 {
            return Ok(None);
        }
        let v: Option<i64> = self.conn.query_row(
            "SELECT min(seq) FROM ( \
                SELECT e.seq FROM events_all e \
                WHERE e.body IS NULL \
                  AND NOT EXISTS (SELECT 1 FROM event_expunges x WHERE x.event_id = e.event_id) \
                UNION ALL \
                SELECT e.seq FROM events_all e JOIN event_expunges x ON x.event_id = e.event_id \
                WHERE e.body IS NOT NULL)",
            [],
            |r| r.get(0),
        )?;
        Ok(v.map(|s| s as u64))
    }

    /// Makes the batch's erasure physical (see the module doc). The scratch table's random
    /// bytes take the blocks DuckDB freed when it rewrote the bucket's changed columns, so the
    /// old bytes are overwritten, and go with the table.
    pub(super) fn scrub(&self) -> Result<()> {
        scrub(&self.conn)
    }
}

/// CHECKPOINT, so that the changed columns are rewritten and their old blocks freed and the
/// WAL (which held the body when it was inserted) is emptied; then every free block is filled
/// with random bytes (a scratch table sized to them), checkpointed, and the table dropped.
pub fn scrub(conn: &Connection) -> Result<()> {
    conn.execute_batch("CHECKPOINT")?;
    let free: i64 = conn.query_row("SELECT free_blocks FROM pragma_database_size()", [], |r| {
        r.get(0)
    })?;
    let block: i64 = conn.query_row("SELECT block_size FROM pragma_database_size()", [], |r| {
        r.get(0)
    })?;
    if free > 0 {
        conn.execute_batch("CREATE TABLE hookledger_scrub (b BLOB)")?;
        {
            let mut app = conn.appender("hookledger_scrub")?;
            // A little more than the free space: random bytes do not compress.
            let mut left = (free + 1) * block;
            let mut chunk = vec![0u8; 3000];
            while left > 0 {
                fastrand::fill(&mut chunk);
                app.append_row(params![chunk])?;
                left -= chunk.len() as i64;
            }
            app.flush()?;
        }
        conn.execute_batch("CHECKPOINT; DROP TABLE hookledger_scrub; CHECKPOINT")?;
    }
    Ok(())
}

fn read_fact(r: &duckdb::Row<'_>) -> duckdb::Result<StoredExpunge> {
    let id: String = r.get(2)?;
    let hash = |i: usize| -> duckdb::Result<Hash> {
        let v: Vec<u8> = r.get(i)?;
        Ok(v.try_into().unwrap_or([0; 32]))
    };
    Ok(StoredExpunge {
        seq: r.get::<_, i64>(0)? as u64,
        recorded_at_us: r.get(1)?,
        event_id: EventId(Uuid::parse_str(&id).unwrap_or_default()),
        event_seq: r.get::<_, i64>(3)? as u64,
        event_hash: hash(4)?,
        body_digest: hash(5)?,
        link_version: r.get(6)?,
        actor: r.get(7)?,
        reason: r.get(8)?,
        hash: hash(9)?,
    })
}

/// A scrub failure is reported, not fatal: the erasure itself is committed.
pub fn scrub_failed(e: &LedgerError) {
    tracing::error!(error = %e, "an expunged body was removed but the file could not be scrubbed; it will be at the next expunge");
}
