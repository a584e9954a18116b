//! Events in buckets: the events table split by seq into tables of about `bucket_events` rows,
//! each with its own `event_id` primary key, so that a DuckDB checkpoint, which rewrites the
//! whole index of every table changed since the last one (DuckDB issue 24848), rewrites only
//! the open bucket's index, whatever the number of events stored.
//!
//! Bucket 0 is the table `events` (so a file of schema 2 needs no rows moved); bucket n is
//! `events_0000n`. `event_buckets` holds one row per sealed bucket with its seq range and
//! count; an [`IdFilter`] of its ids is in its own table `event_filter_0000n`, written once
//! (`filters.rs`: one table each, so that no checkpoint rewrites the old filters); the view
//! `events_all` is every bucket. A batch's events all go to the open bucket; when that holds
//! `bucket_events` or more, the next batch with events first seals it (its row and its filter
//! table), creates the next table and replaces the view, all in the batch's transaction.
//!
//! Invariant (permanent idempotency): an event id is stored at most once in the whole file.
//! The open bucket's key refuses a repeat within it; before a batch is appended, its ids are
//! checked against every sealed bucket's filter in memory (one cache line per bucket and id),
//! (a cache: one that is missing or damaged is rebuilt from the bucket's ids, see `filters.rs`),
//! and a possible match is looked up exactly in that bucket's key; a stored id refuses the
//! batch like the key does, and the writer then answers that event alone (same body: the first
//! answer; another body: a conflict).
//!
//! What still grows with history: what a DuckDB checkpoint visits. This DuckDB's checkpoint
//! visits every table of the file and every row group of the unchanged ones, with metadata
//! re-use on: about 28 µs a table with a primary key, 13 µs one without, 3.3 µs a row group
//! (probes on the bundled DuckDB, a small append to one table then `CHECKPOINT`: beside 10 /
//! 400 / 1,600 unchanged tables of 2,000 rows, 2.9 / 12.1 / 47.9 ms keyed and 3.4 / 8.5 /
//! 24.9 ms not; beside one unchanged table of 1 / 300 / 1,000 row groups, 1.1 / 2.1-2.9 /
//! 4.4 ms; a table's size, its key and the row groups of the table appended to made no
//! difference). Each sealed bucket adds two tables (its events with their key, its filter)
//! and a few row groups, so each DuckDB checkpoint costs about 50 µs more per 131,072 events
//! stored: 1-2 ms at the history bench's 10 M records (3.3 M events), 14 ms at 32 M events,
//! 0.4 s at a billion. Merging sealed buckets into larger tables written once would bound the
//! tables' part; not done.

use duckdb::{params, Connection};
use uuid::Uuid;

use super::filters;
use super::idfilter::IdFilter;
use crate::error::{LedgerError, Result};

/// Events per bucket before the next batch opens a new one (2^17: the open bucket's index
/// then costs a checkpoint at most ~40 ms more than no index, measured in the README).
pub const DEFAULT_BUCKET_EVENTS: u64 = 1 << 17;

pub fn table(bucket: u32) -> String {
    if bucket == 0 {
        "events".to_owned()
    } else {
        format!("events_{bucket:05}")
    }
}

/// A bucket's columns, in the order older buckets have them after their migrations (schema 4
/// added `app, producer_id, format`; schema 5 `body_digest` and a nullable `body`: NULL once
/// expunged).
pub(super) const EVENT_TABLE_DDL: &str = "(seq BIGINT NOT NULL, event_id UUID PRIMARY KEY, \
     event_type VARCHAR NOT NULL, published_at TIMESTAMP NOT NULL, body BLOB, \
     hash BLOB NOT NULL, app VARCHAR, producer_id VARCHAR, format UTINYINT, body_digest BLOB)";

/// The number of buckets (sealed ones plus the open one), from the file.
pub fn bucket_count(conn: &Connection) -> Result<u32> {
    let sealed: Option<i64> =
        conn.query_row("SELECT max(bucket) FROM event_buckets", [], |r| r.get(0))?;
    Ok(sealed.map_or(1, |b| b as u32 + 2))
}

/// The writer's view of the buckets: the sealed ones' filters and the open one's ids.
#[derive(Debug)]
pub struct Buckets {
    bucket_events: u64,
    sealed: Vec<IdFilter>,
    open_ids: Vec<u128>,
    open_seqs: Option<(u64, u64)>,
}

/// A seal prepared inside a transaction, applied to [`Buckets`] once it commits.
pub struct Roll {
    filter: IdFilter,
}

impl Buckets {
    /// The buckets of the file; `repair`: a read-write open, which stores again any filter it
    /// had to rebuild (see `filters.rs`).
    pub fn load(conn: &Connection, bucket_events: u64, repair: bool) -> Result<Self> {
        let mut sealed = Vec::new();
        for binding in filters::bindings(conn)? {
            if binding.bucket as usize != sealed.len() {
                return Err(LedgerError::Invalid(format!(
                    "event bucket {} is missing",
                    sealed.len()
                )));
            }
            sealed.push(filters::load(conn, &binding, repair)?);
        }
        let open = table(sealed.len() as u32);
        let mut open_ids = Vec::new();
        let mut stmt = conn.prepare(&format!("SELECT event_id::VARCHAR, seq FROM {open}"))?;
        let mut rows = stmt.query([])?;
        let mut open_seqs: Option<(u64, u64)> = None;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let seq = r.get::<_, i64>(1)? as u64;
            open_ids.push(Uuid::parse_str(&id).unwrap_or_default().as_u128());
            open_seqs = Some(open_seqs.map_or((seq, seq), |(a, b)| (a.min(seq), b.max(seq))));
        }
        Ok(Self {
            bucket_events: bucket_events.max(1),
            sealed,
            open_ids,
            open_seqs,
        })
    }

    pub fn set_bucket_events(&mut self, events: u64) {
        self.bucket_events = events.max(1);
    }

    pub fn sealed_count(&self) -> usize {
        self.sealed.len()
    }

    pub fn open_table(&self) -> String {
        table(self.sealed.len() as u32)
    }

    /// Memory held by the filters, in bytes.
    pub fn filter_bytes(&self) -> usize {
        self.sealed.iter().map(IdFilter::size).sum()
    }

    /// The first of `ids` already stored in a sealed bucket, if any.
    pub fn stored_in_sealed(&self, conn: &Connection, ids: &[Uuid]) -> Result<Option<Uuid>> {
        for id in ids {
            for (bucket, filter) in self.sealed.iter().enumerate() {
                if filter.maybe_contains(id.as_u128()) && holds(conn, bucket as u32, *id)? {
                    return Ok(Some(*id));
                }
            }
        }
        Ok(None)
    }

    /// The sealed buckets that may hold `id`, and the open one: where an exact lookup goes.
    pub fn candidates(&self, id: Uuid) -> Vec<u32> {
        let mut out: Vec<u32> = (0..self.sealed.len())
            .filter(|b| self.sealed[*b].maybe_contains(id.as_u128()))
            .map(|b| b as u32)
            .collect();
        out.push(self.sealed.len() as u32);
        out
    }

    /// Inside the batch's transaction: seals the open bucket if it is full (its row, its filter
    /// table, the next table, the view). Nothing changes in memory until [`Buckets::committed`].
    pub fn roll_if_full(&self, conn: &Connection) -> duckdb::Result<Option<Roll>> {
        if (self.open_ids.len() as u64) < self.bucket_events {
            return Ok(None);
        }
        let bucket = self.sealed.len() as u32;
        let (first, last) = self.open_seqs.unwrap_or((0, 0));
        let filter = IdFilter::build(&self.open_ids);
        conn.prepare_cached("INSERT INTO event_buckets VALUES (?, ?, ?, ?)")?
            .execute(params![
                bucket,
                first as i64,
                last as i64,
                self.open_ids.len() as i64
            ])?;
        let binding = filters::Binding {
            bucket,
            first_seq: first,
            last_seq: last,
            events: self.open_ids.len() as u64,
        };
        filters::store(conn, &binding, &filter)?;
        conn.execute_batch(&format!(
            "CREATE TABLE {} {EVENT_TABLE_DDL}",
            table(bucket + 1)
        ))?;
        conn.execute_batch(&view_sql(bucket + 2))?;
        Ok(Some(Roll { filter }))
    }

    /// After the batch committed: its roll and its events take effect.
    pub fn committed(&mut self, roll: Option<Roll>, events: &[(u64, Uuid)]) {
        if let Some(roll) = roll {
            self.sealed.push(roll.filter);
            self.open_ids.clear();
            self.open_seqs = None;
        }
        for (seq, id) in events {
            self.open_ids.push(id.as_u128());
            let s = *seq;
            self.open_seqs = Some(self.open_seqs.map_or((s, s), |(a, b)| (a.min(s), b.max(s))));
        }
    }
}

/// Whether bucket `bucket` holds `id` (a lookup in its key).
pub fn holds(conn: &Connection, bucket: u32, id: Uuid) -> Result<bool> {
    let sql = format!("SELECT count(*) FROM {} WHERE event_id = ?", table(bucket));
    let n: i64 = conn
        .prepare_cached(&sql)?
        .query_row(params![id], |r| r.get(0))?;
    Ok(n > 0)
}

/// Inside a transaction: replaces bucket `bucket` by a copy in which the bodies of `ids` are
/// NULL (expunged), with the same columns, key and name. DuckDB writes the copy to new blocks
/// and frees every block of the old table at the next checkpoint, where an UPDATE would leave
/// the old bytes inside a block still in use (measured: `crate::ledger::expunge`). The cost
/// is one bucket (at most `bucket_events` rows), whatever the history stored.
pub fn rewrite_without_bodies(conn: &Connection, bucket: u32, ids: &[Uuid]) -> duckdb::Result<()> {
    let t = table(bucket);
    let list: Vec<String> = ids.iter().map(|id| format!("'{id}'::UUID")).collect();
    conn.execute_batch(&format!(
        "CREATE TABLE {t}_rewrite {EVENT_TABLE_DDL}; \
         INSERT INTO {t}_rewrite SELECT seq, event_id, event_type, published_at, \
            CASE WHEN event_id IN ({}) THEN NULL ELSE body END, hash, app, producer_id, format, \
            body_digest FROM {t} ORDER BY seq; \
         DROP TABLE {t}; \
         ALTER TABLE {t}_rewrite RENAME TO {t};",
        list.join(", ")
    ))
}

/// `events_all`: every bucket of a file with `buckets` buckets.
pub fn view_sql(buckets: u32) -> String {
    let parts: Vec<String> = (0..buckets)
        .map(|b| format!("SELECT * FROM {}", table(b)))
        .collect();
    format!(
        "CREATE OR REPLACE VIEW events_all AS {}",
        parts.join(" UNION ALL ")
    )
}
