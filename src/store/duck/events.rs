//! The events: appended to the open bucket by the writer, looked up by key in the buckets that
//! may hold them, scanned in seq order over `events_all`.
//!
//! A file of schema 3 or older opened read-only has no app, producer id or format columns:
//! they read as NULL (the default app, the UUID, sent as stored); one of schema 4 or older has
//! no `body_digest` (its events' links cover the bytes) and no expunged body. An expunge sets
//! `body` to NULL in the bucket holding the event, in the batch's transaction, by rewriting
//! that bucket (`buckets::rewrite_without_bodies`).

use std::collections::BTreeMap;

use duckdb::params;
use uuid::Uuid;

use super::{buckets, DuckStore};
use crate::error::Result;
use crate::ids::EventId;
use crate::ledger::chain::Hash;
use crate::ledger::expunge::StoredExpunge;
use crate::store::StoredEvent;

impl DuckStore {
    /// The columns [`read_event`] reads, for this file's schema.
    fn event_columns(&self) -> &'static str {
        if self.schema >= 5 {
            "seq, event_id::VARCHAR, event_type, epoch_us(published_at), body, hash, app, \
             producer_id, format, body_digest, body IS NULL"
        } else if self.schema >= 4 {
            "seq, event_id::VARCHAR, event_type, epoch_us(published_at), body, hash, app, \
             producer_id, format, NULL::BLOB, false"
        } else {
            "seq, event_id::VARCHAR, event_type, epoch_us(published_at), body, hash, \
             NULL::VARCHAR, NULL::VARCHAR, NULL::UTINYINT, NULL::BLOB, false"
        }
    }

    pub(super) fn append_events(&self, table: &str, events: &[StoredEvent]) -> duckdb::Result<()> {
        let batch = super::arrow_append::events_batch(events)
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut app = self.conn.appender(table)?;
        app.append_record_batch(batch)?;
        app.flush()?;
        Ok(())
    }

    /// Inside the batch's transaction: removes each expunged body by rewriting the bucket
    /// holding it without it (see `expunges.rs` for why a rewrite and not an UPDATE). A body
    /// that is not there (unknown event, already gone) fails the whole batch.
    pub(super) fn remove_bodies(&self, expunges: &[StoredExpunge]) -> duckdb::Result<()> {
        if expunges.is_empty() {
            return Ok(());
        }
        let Some(b) = &self.buckets else {
            return Err(duckdb::Error::InvalidParameterName(
                "bodies are expunged by the writer's connection only".into(),
            ));
        };
        let mut by_bucket: BTreeMap<u32, Vec<Uuid>> = BTreeMap::new();
        for x in expunges {
            let mut holder = None;
            for bucket in b.candidates(x.event_id.0) {
                let sql = format!(
                    "SELECT count(*) FROM {} WHERE event_id = ? AND body IS NOT NULL",
                    buckets::table(bucket)
                );
                let n: i64 = self
                    .conn
                    .prepare_cached(&sql)?
                    .query_row(params![x.event_id.0], |r| r.get(0))?;
                if n > 0 {
                    holder = Some(bucket);
                    break;
                }
            }
            let Some(bucket) = holder else {
                return Err(duckdb::Error::InvalidParameterName(format!(
                    "event {} has no body to expunge",
                    x.event_id
                )));
            };
            by_bucket.entry(bucket).or_default().push(x.event_id.0);
        }
        for (bucket, ids) in by_bucket {
            buckets::rewrite_without_bodies(&self.conn, bucket, &ids)?;
        }
        Ok(())
    }

    pub(super) fn events_by_id(&self, ids: &[EventId]) -> Result<Vec<StoredEvent>> {
        // Each id is looked up in the key of each bucket that may hold it: the writer's filters
        // name them; a reader asks every bucket.
        let all: Vec<u32> = match &self.buckets {
            Some(_) => Vec::new(),
            None => (0..self.event_tables()?.len() as u32).collect(),
        };
        let columns = self.event_columns();
        let mut out = Vec::new();
        for id in ids {
            let candidates = match &self.buckets {
                Some(b) => b.candidates(id.0),
                None => all.clone(),
            };
            for bucket in candidates {
                let sql = format!(
                    "SELECT {columns} FROM {} WHERE event_id = ?",
                    buckets::table(bucket)
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let found = stmt.query_map(params![id.0], read_event)?;
                for e in found {
                    out.push(e?);
                }
            }
        }
        Ok(out)
    }

    /// One semi-join over every bucket: the records of the range are found by their seq (zone
    /// maps), their event ids hashed, and each bucket's ids probed once, instead of one point
    /// lookup per id and bucket (which made a reader's export of 100,000 records take minutes).
    pub(super) fn events_named_by_records(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE event_id IN \
             (SELECT event_id FROM webhook_deliveries WHERE seq BETWEEN ? AND ?) ORDER BY seq",
            self.event_columns(),
            self.events_view()
        );
        let clamp = |s: u64| s.min(i64::MAX as u64) as i64;
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![clamp(first), clamp(last)], read_event)?;
        Ok(rows.collect::<duckdb::Result<_>>()?)
    }

    pub(super) fn scan_all_events(
        &self,
        f: &mut dyn FnMut(StoredEvent) -> Result<()>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY seq",
            self.event_columns(),
            self.events_view()
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(read_event(row)?)?;
        }
        Ok(())
    }

    pub(super) fn last_stored_event(&self) -> Result<Option<(u64, Hash)>> {
        // The newest events are in the open bucket (a bucket opens with its first events).
        let open = match &self.buckets {
            Some(b) => b.open_table(),
            None => self
                .event_tables()?
                .pop()
                .unwrap_or_else(|| "events".into()),
        };
        let sql = format!("SELECT seq, hash FROM {open} ORDER BY seq DESC LIMIT 1");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        Ok(match rows.next()? {
            Some(r) => {
                let hash: Vec<u8> = r.get(1)?;
                Some((
                    r.get::<_, i64>(0)? as u64,
                    hash.try_into().unwrap_or([0; 32]),
                ))
            }
            None => None,
        })
    }
}

fn read_event(r: &duckdb::Row<'_>) -> duckdb::Result<StoredEvent> {
    let id: String = r.get(1)?;
    let us: i64 = r.get(3)?;
    let hash: Vec<u8> = r.get(5)?;
    let digest: Option<Vec<u8>> = r.get(9)?;
    Ok(StoredEvent {
        seq: r.get::<_, i64>(0)? as u64,
        event_id: EventId(Uuid::parse_str(&id).unwrap_or_default()),
        event_type: r.get(2)?,
        published_at: chrono::DateTime::from_timestamp_micros(us).unwrap_or_default(),
        body: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
        hash: hash.try_into().unwrap_or([0; 32]),
        app: r.get(6)?,
        producer_id: r.get(7)?,
        format: r.get(8)?,
        // A digest of another length reads as all zeros, which no body matches.
        body_digest: digest.map(|d| d.try_into().unwrap_or([0; 32])),
        expunged: r.get(10)?,
    })
}
