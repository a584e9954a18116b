//! The events table: all of its SQL on PostgreSQL. Appended in the commit's transaction (one
//! multi-row insert from typed arrays), looked up by key, scanned in seq order; an expunge sets
//! the body to NULL (`crate::ledger::expunge`), in the transaction that appends its fact.
//!
//! Invariant: the primary key on `event_id` refuses a repeated id at any age, which fails the
//! batch's last statement and rolls the whole batch back. The body is the one column ever
//! changed, and only from a body to NULL.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};

use super::{hash, seq, Held};
use crate::error::{LedgerError, Result};
use crate::ids::EventId;
use crate::ledger::chain::Hash;
use crate::ledger::record::Timestamp;
use crate::store::StoredEvent;

pub(super) const INSERT: &str = "INSERT INTO events (seq, event_id, event_type, published_at, \
     body, hash, app, producer_id, format, body_digest) \
     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::timestamptz[], \
     $5::bytea[], $6::bytea[], $7::text[], $8::text[], $9::smallint[], $10::bytea[])";

/// Removes one expunged body (its digest, link and every other column stay).
pub(super) const REMOVE_BODY: &str =
    "UPDATE events SET body = NULL WHERE event_id = $1 AND body IS NOT NULL";

/// A `SELECT` of events (the columns [`read_event`] reads) with the rest of the statement.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT seq, event_id, event_type, published_at, body, hash, app, producer_id, \
             format, body_digest FROM events ",
            $rest
        )
    };
}

pub(super) fn append(
    tx: &mut Transaction<'_>,
    insert: &Statement,
    events: &[StoredEvent],
) -> Result<()> {
    let seqs: Vec<i64> = events.iter().map(|e| seq(e.seq)).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id.0).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let published: Vec<_> = events.iter().map(|e| e.published_at).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_slice()).collect();
    let hashes: Vec<&[u8]> = events.iter().map(|e| e.hash.as_slice()).collect();
    let apps: Vec<Option<&str>> = events.iter().map(|e| e.app.as_deref()).collect();
    let producers: Vec<Option<&str>> = events.iter().map(|e| e.producer_id.as_deref()).collect();
    let formats: Vec<Option<i16>> = events.iter().map(|e| e.format.map(i16::from)).collect();
    let digests: Vec<Option<&[u8]>> = events
        .iter()
        .map(|e| e.body_digest.as_ref().map(|d| d.as_slice()))
        .collect();
    let params: [&(dyn ToSql + Sync); 10] = [
        &seqs, &ids, &types, &published, &bodies, &hashes, &apps, &producers, &formats, &digests,
    ];
    tx.execute(insert, &params)?;
    Ok(())
}

fn read_event(r: &Row) -> Result<StoredEvent> {
    let format: Option<i16> = r.try_get(8)?;
    let body: Option<Vec<u8>> = r.try_get(4)?;
    let digest: Option<Vec<u8>> = r.try_get(9)?;
    Ok(StoredEvent {
        seq: r.try_get::<_, i64>(0)? as u64,
        event_id: EventId(r.try_get(1)?),
        event_type: r.try_get(2)?,
        published_at: r.try_get(3)?,
        expunged: body.is_none(),
        body: body.unwrap_or_default(),
        body_digest: digest.map(hash),
        hash: hash(r.try_get(5)?),
        app: r.try_get(6)?,
        producer_id: r.try_get(7)?,
        format: format
            .map(|f| {
                u8::try_from(f)
                    .map_err(|_| LedgerError::Invalid(format!("stored event has format {f}")))
            })
            .transpose()?,
    })
}

/// The stored events among `ids`, in the order of `ids`.
pub(super) fn by_id(h: &mut Held, ids: &[EventId]) -> Result<Vec<StoredEvent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    const SQL: &str = select_events!("WHERE event_id = ANY($1)");
    let stmt = h.prepared(SQL)?;
    let keys: Vec<uuid::Uuid> = ids.iter().map(|e| e.0).collect();
    let mut found = h
        .client
        .query(&stmt, &[&keys])?
        .iter()
        .map(read_event)
        .collect::<Result<Vec<_>>>()?;
    found.sort_by_key(|e| ids.iter().position(|i| *i == e.event_id));
    Ok(found)
}

/// Through the records' seq key and the events' key: no scan of either table.
pub(super) fn of_records(h: &mut Held, first: u64, last: u64) -> Result<Vec<StoredEvent>> {
    const SQL: &str = select_events!(
        "WHERE event_id IN (SELECT event_id FROM webhook_deliveries WHERE seq BETWEEN $1 AND $2) \
         ORDER BY seq"
    );
    let stmt = h.prepared(SQL)?;
    let clamp = |s: u64| s.min(i64::MAX as u64) as i64;
    h.client
        .query(&stmt, &[&clamp(first), &clamp(last)])?
        .iter()
        .map(read_event)
        .collect()
}

/// Every event in seq order, streamed.
pub(super) fn scan(h: &mut Held, f: &mut dyn FnMut(StoredEvent) -> Result<()>) -> Result<()> {
    use postgres::fallible_iterator::FallibleIterator;
    const SQL: &str = select_events!("ORDER BY seq");
    let stmt = h.prepared(SQL)?;
    let none: [&(dyn ToSql + Sync); 0] = [];
    let mut rows = h.client.query_raw(&stmt, none)?;
    while let Some(row) = rows.next()? {
        f(read_event(&row)?)?;
    }
    Ok(())
}

pub(super) fn last(h: &mut Held) -> Result<Option<(u64, Hash)>> {
    let stmt = h.prepared("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")?;
    match h.client.query_opt(&stmt, &[])? {
        Some(r) => Ok(Some((r.try_get::<_, i64>(0)? as u64, hash(r.try_get(1)?)))),
        None => Ok(None),
    }
}

/// The producer's id of each stored event among `ids` (two narrow columns, never a body).
pub(super) fn producer_ids(h: &mut Held, ids: &[EventId]) -> Result<HashMap<EventId, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let stmt = h.prepared(
        "SELECT event_id, coalesce(producer_id, event_id::text) FROM events \
         WHERE event_id = ANY($1)",
    )?;
    let keys: Vec<uuid::Uuid> = ids.iter().map(|e| e.0).collect();
    h.client
        .query(&stmt, &[&keys])?
        .iter()
        .map(|r| Ok((EventId(r.try_get(0)?), r.try_get(1)?)))
        .collect()
}

/// Up to `limit` events after seq `after` published before `before` whose body is still
/// there, in seq order: retention's candidates.
pub(super) fn bodies_published_before(
    h: &mut Held,
    before: Timestamp,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, EventId)>> {
    let stmt = h.prepared(
        "SELECT seq, event_id FROM events \
         WHERE seq > $1 AND published_at < $2 AND body IS NOT NULL ORDER BY seq LIMIT $3",
    )?;
    h.client
        .query(
            &stmt,
            &[&seq(after), &before, &(limit.min(i64::MAX as usize) as i64)],
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, i64>(0)? as u64, EventId(r.try_get(1)?))))
        .collect()
}
