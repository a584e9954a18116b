//! The expunge facts (`event_expunges`, see [`crate::ledger::expunge`]) on PostgreSQL: appended
//! in the batch's transaction beside the bodies' removal (`events::REMOVE_BODY`), read back in
//! seq order for `verify` and by event for answers and trails.
//!
//! What erasure means for the bytes here: PostgreSQL's `UPDATE ... SET body = NULL` writes a
//! new row version; the old one (and a TOASTed body's chunks) stays in the table's pages as a
//! dead tuple until VACUUM prunes it, and the body stays in the WAL until the WAL segment is
//! recycled (and in every base backup, WAL archive and replica made meanwhile). hookledger does
//! not run VACUUM itself (autovacuum does, and a `VACUUM events` by the operator makes it
//! immediate); DuckDB's scrub of the file (`store/duck/expunges.rs`) has no counterpart. The
//! README says so.
//!
//! Invariant: a fact is appended only in the transaction that removes its body; the unique key
//! on `event_id` refuses a second fact for one event.

use postgres::Row;

use super::{hash, seq, ts, Held, Param};
use crate::error::Result;
use crate::ids::EventId;
use crate::ledger::chain::Hash;
use crate::ledger::expunge::StoredExpunge;

pub(super) const INSERT: &str = "INSERT INTO event_expunges (seq, recorded_at, event_id, \
     event_seq, event_hash, body_digest, link_version, actor, reason, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// A `SELECT` of facts (the columns [`read_fact`] reads) with the rest of the statement.
macro_rules! select_facts {
    ($rest:literal) => {
        concat!(
            "SELECT seq, recorded_at, event_id, event_seq, event_hash, body_digest, \
             link_version, actor, reason, hash FROM event_expunges ",
            $rest
        )
    };
}

/// Appends one fact inside the batch's transaction.
pub(super) fn append(
    tx: &mut postgres::Transaction<'_>,
    insert: &postgres::Statement,
    x: &StoredExpunge,
) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        insert,
        &[
            &seq(x.seq) as Param,
            &ts(x.recorded_at_us),
            &x.event_id.0,
            &seq(x.event_seq),
            &x.event_hash.as_slice(),
            &x.body_digest.as_slice(),
            &i16::from(x.link_version),
            &x.actor,
            &x.reason,
            &x.hash.as_slice(),
        ],
    )
}

fn read_fact(r: &Row) -> Result<StoredExpunge> {
    let recorded: chrono::DateTime<chrono::Utc> = r.try_get(1)?;
    let version: i16 = r.try_get(6)?;
    Ok(StoredExpunge {
        seq: r.try_get::<_, i64>(0)? as u64,
        recorded_at_us: recorded.timestamp_micros(),
        event_id: EventId(r.try_get(2)?),
        event_seq: r.try_get::<_, i64>(3)? as u64,
        event_hash: hash(r.try_get(4)?),
        body_digest: hash(r.try_get(5)?),
        // A version outside 0..=255 only tampering makes; 0 fails verify's link check.
        link_version: u8::try_from(version).unwrap_or(0),
        actor: r.try_get(7)?,
        reason: r.try_get(8)?,
        hash: hash(r.try_get(9)?),
    })
}

/// Every fact in seq order.
pub(super) fn scan(h: &mut Held, f: &mut dyn FnMut(StoredExpunge) -> Result<()>) -> Result<()> {
    let stmt = h.prepared(select_facts!("ORDER BY seq"))?;
    for r in h.client.query(&stmt, &[])? {
        f(read_fact(&r)?)?;
    }
    Ok(())
}

/// The fact of `event`'s expunge, if its body was erased.
pub(super) fn of(h: &mut Held, event: EventId) -> Result<Option<StoredExpunge>> {
    let stmt = h.prepared(select_facts!("WHERE event_id = $1 ORDER BY seq LIMIT 1"))?;
    h.client
        .query_opt(&stmt, &[&event.0])?
        .map(|r| read_fact(&r))
        .transpose()
}

pub(super) fn last(h: &mut Held) -> Result<Option<(u64, Hash)>> {
    let stmt = h.prepared("SELECT seq, hash FROM event_expunges ORDER BY seq DESC LIMIT 1")?;
    match h.client.query_opt(&stmt, &[])? {
        Some(r) => Ok(Some((r.try_get::<_, i64>(0)? as u64, hash(r.try_get(1)?)))),
        None => Ok(None),
    }
}

/// The seq of the first event whose body is gone without a fact, or whose fact names it while
/// its body is still there.
pub(super) fn first_unrecorded(h: &mut Held) -> Result<Option<u64>> {
    let stmt = h.prepared(
        "SELECT min(seq) FROM ( \
            SELECT e.seq FROM events e \
            WHERE e.body IS NULL \
              AND NOT EXISTS (SELECT 1 FROM event_expunges x WHERE x.event_id = e.event_id) \
            UNION ALL \
            SELECT e.seq FROM events e JOIN event_expunges x ON x.event_id = e.event_id \
            WHERE e.body IS NOT NULL) AS odd",
    )?;
    let v: Option<i64> = h.client.query_one(&stmt, &[])?.try_get(0)?;
    Ok(v.map(|s| s as u64))
}
