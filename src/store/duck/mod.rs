//! The DuckDB store: one database file, schema applied from `schema/*.sql` at open.
//!
//! The writer owns one read-write [`DuckStore`]; readers (the CLI, API queries, `verify`) use
//! their own connections, cloned from it or opened read-only, and rely on DuckDB's MVCC.
//! Records are appended with DuckDB's Appender inside the batch's transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, Value};
use duckdb::{params, AccessMode, Config, Connection};
use uuid::Uuid;

use super::{CheckpointInfo, CommitBatch, Store, StoredCheckpoint, StoredEvent};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId};
use crate::ledger::chain::{BatchLink, Hash};
use crate::ledger::record::{RecordKind, Terminal, Timestamp};
use crate::ledger::stored::StoredRecord;
use crate::ledger::view::{DeliveryFilter, DeliverySummary};
use crate::registry::StoredChange;

mod arrow_append;
mod arrow_scan;
mod autocheckpoint;
mod buckets;
mod checkpoints;
mod checks;
mod events;
mod expunges;
mod filters;
mod idfilter;
mod migrate;
mod positions;
mod producers;
mod scan;
mod stats;
mod summaries;
mod vacuum;

use buckets::Buckets;
pub use buckets::DEFAULT_BUCKET_EVENTS;

/// The numbered schema files, applied in order. The database records the highest applied.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../../schema/001_ledger.sql")),
    (2, include_str!("../../../schema/002_audit_views.sql")),
    (3, include_str!("../../../schema/003_history.sql")),
    (4, include_str!("../../../schema/004_apps.sql")),
    (5, include_str!("../../../schema/005_erasure.sql")),
    (6, include_str!("../../../schema/006_filters.sql")),
    (7, include_str!("../../../schema/007_actor.sql")),
    (8, include_str!("../../../schema/008_checkpoint_tables.sql")),
];

/// The schema version this build writes and understands.
pub fn supported_schema() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// How to open a database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create if missing and apply pending migrations (the writer).
    ReadWrite,
    /// The file must exist; nothing is written (CLI inspection, audits).
    ReadOnly,
}

/// DuckDB's memory limit (its buffer cache), unless `HOOKLEDGER_DUCKDB_MEMORY` says otherwise.
pub const DEFAULT_MEMORY_LIMIT: &str = "256MB";

/// A DuckDB connection speaking the [`Store`] trait.
pub struct DuckStore {
    conn: Connection,
    path: PathBuf,
    /// The schema version of the file (a read-only open of an older file does not migrate it).
    schema: u32,
    /// The event buckets as the writer sees them (read-write opens); readers ask the file.
    buckets: Option<Buckets>,
    /// WAL bytes from which [`Store::idle`] checkpoints (0: never; the writer's setting).
    idle_checkpoint_bytes: u64,
}

/// The WAL size (MiB) from which the writer checkpoints when idle, unless
/// `HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB` says otherwise (1 to 16; 0, the default, turns it
/// off). The idea: a checkpoint below DuckDB's own 16 MB `wal_autocheckpoint`, taken when no
/// commit waits, and shorter for the smaller WAL. Off by default because the `deliver` bench
/// did not show it: half-rate publish → receiver p99 52 and 274 ms with 4 MiB against 24 and
/// 206 ms off, alternated on a quiet machine (a queue that empties between batches still has
/// publishes arriving during the checkpoint).
pub const DEFAULT_IDLE_CHECKPOINT_MB: u64 = 0;

impl DuckStore {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self> {
        if mode == OpenMode::ReadOnly && !path.exists() {
            return Err(LedgerError::NotFound {
                path: path.to_owned(),
            });
        }
        let access = match mode {
            OpenMode::ReadWrite => AccessMode::ReadWrite,
            OpenMode::ReadOnly => AccessMode::ReadOnly,
        };
        let memory = std::env::var("HOOKLEDGER_DUCKDB_MEMORY")
            .ok()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_MEMORY_LIMIT.to_owned());
        let config = Config::default().access_mode(access)?.max_memory(&memory)?;
        let config = vacuum::configure(config)?;
        let config = autocheckpoint::configure(config)?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| open_error(e, path))?;
        let mut store = Self {
            conn,
            path: path.to_owned(),
            schema: 0,
            buckets: None,
            idle_checkpoint_bytes: DEFAULT_IDLE_CHECKPOINT_MB << 20,
        };
        store.migrate(mode)?;
        store.schema = store.schema_version()?;
        if mode == OpenMode::ReadWrite {
            store.buckets = Some(Buckets::load(&store.conn, DEFAULT_BUCKET_EVENTS, true)?);
        }
        Ok(store)
    }

    /// How many events a bucket takes before the next batch opens a new one (the writer's
    /// setting; see `buckets.rs`).
    pub fn set_bucket_events(&mut self, events: u64) {
        if let Some(b) = &mut self.buckets {
            b.set_bucket_events(events);
        }
    }

    /// The WAL size in MiB from which the writer checkpoints when idle (0: never).
    pub fn set_idle_checkpoint_mb(&mut self, mb: u64) {
        self.idle_checkpoint_bytes = mb << 20;
    }

    /// Memory held by the sealed buckets' id filters, in bytes.
    pub fn id_filter_bytes(&self) -> usize {
        self.buckets.as_ref().map_or(0, Buckets::filter_bytes)
    }

    /// The tables holding events, oldest first.
    fn event_tables(&self) -> Result<Vec<String>> {
        let n = if self.schema >= 3 {
            buckets::bucket_count(&self.conn)?
        } else {
            1
        };
        Ok((0..n).map(buckets::table).collect())
    }

    /// Every event, whatever its bucket.
    fn events_view(&self) -> &'static str {
        if self.schema >= 3 {
            "events_all"
        } else {
            "events"
        }
    }

    /// Runs DuckDB's work on one thread from now on (a database-wide setting). The ledger calls
    /// it after the startup fold, which still scans with every core: after that, DuckDB's
    /// work is the writer's small transactions, and a worker thread handing each of them
    /// across cores only adds wake-ups. Measured on 2 cores: one durable commit 2.5 -> 1.9 ms,
    /// 256 concurrent publishers 29.5k -> 35.6k commits/s; a fold of 1 M records with one
    /// thread was 15 % slower, which is why the fold runs before this.
    pub fn use_one_thread(&self) -> Result<()> {
        self.conn.execute_batch("SET threads = 1")?;
        Ok(())
    }

    /// Another connection to the same database, for reads beside the writer.
    pub fn reader(&self) -> Result<Self> {
        Ok(Self {
            conn: self.conn.try_clone()?,
            path: self.path.clone(),
            schema: self.schema,
            buckets: None,
            idle_checkpoint_bytes: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Delivered, dead and parked deliveries of `webhooks` as of record `upto_seq` (an app's
    /// finished counts; see `summaries.rs`).
    pub fn finished_counts(
        &self,
        webhooks: &[crate::ids::WebhookId],
        upto_seq: u64,
    ) -> Result<(u64, u64, u64)> {
        summaries::finished_counts(&self.conn, webhooks, upto_seq)
    }

    /// [`Store::page`] restricted to the records of `webhooks` (an app's).
    pub fn page_of(
        &self,
        after_seq: u64,
        limit: usize,
        webhooks: &[crate::ids::WebhookId],
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let filter = format!(
            "seq > ? AND {} AND (? IS NULL OR kind = ?) ORDER BY seq LIMIT ?",
            summaries::webhooks_in(webhooks)
        );
        let kind = kind.map(|k| k.as_str());
        self.query_records(
            &filter,
            params![after_seq as i64, kind, kind, limit as i64],
            &mut |r| {
                out.push(r);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Direct SQL access, for the audit views and for tests that play the attacker.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn append_records(&self, records: &[StoredRecord]) -> duckdb::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = arrow_append::records_batch(records)
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut app = self.conn.appender("webhook_deliveries")?;
        app.append_record_batch(batch)?;
        app.flush()?;
        Ok(())
    }

    /// Ledger rows matching `filter` (a WHERE clause and its ORDER BY), fetched as Arrow batches: UUIDs arrive as
    /// 16-byte values (lossless conversion) and each column is read from its array, several
    /// times faster than the row API.
    fn query_records(
        &self,
        filter: &str,
        params: impl duckdb::Params,
        f: &mut dyn FnMut(StoredRecord) -> Result<()>,
    ) -> Result<()> {
        self.conn
            .execute_batch("SET arrow_lossless_conversion = true")?;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM webhook_deliveries WHERE {filter}");
        let mut stmt = self.conn.prepare(&sql)?;
        for batch in stmt.stream_arrow(params)? {
            arrow_scan::each_record(&batch?, f)?;
        }
        Ok(())
    }

    fn append_changes(&self, changes: &[StoredChange]) -> duckdb::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO webhook_changes VALUES \
             (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for c in changes {
            stmt.execute(params![
                c.seq as i64,
                ts(c.recorded_at_us),
                c.format_version,
                c.kind,
                c.webhook_id,
                c.url,
                c.event_types,
                c.description,
                c.active,
                c.secret,
                c.previous_until_us.map(ts),
                c.reason,
                c.hash.to_vec(),
                c.app,
                c.name,
                c.metadata,
                c.token_id,
                c.token_digest,
                c.payload_format,
                c.actor,
            ])?;
        }
        Ok(())
    }

    /// Everything of one batch, inside the transaction [`DuckStore::commit_batch`] opened; a
    /// batch with events may first seal the open bucket (applied once it commits).
    fn append_batch(&self, batch: &CommitBatch) -> duckdb::Result<Option<buckets::Roll>> {
        let mut roll = None;
        let events_table = if !batch.events.is_empty() {
            if let Some(b) = &self.buckets {
                roll = b.roll_if_full(&self.conn)?;
            }
            let table = match (&roll, &self.buckets) {
                (Some(_), Some(b)) => buckets::table(b.sealed_count() as u32 + 1),
                (None, Some(b)) => b.open_table(),
                (_, None) => {
                    return Err(duckdb::Error::InvalidParameterName(
                        "events are appended by the writer's connection only".into(),
                    ))
                }
            };
            Some(table)
        } else {
            None
        };
        self.append_records(&batch.records)?;
        if let Some((link, committed_at)) = &batch.link {
            self.conn
                .prepare_cached("INSERT INTO ledger_batches VALUES (?, ?, ?, ?)")?
                .execute(params![
                    link.first_seq as i64,
                    link.last_seq as i64,
                    ts(committed_at.timestamp_micros()),
                    link.hash.to_vec()
                ])?;
        }
        self.append_changes(&batch.changes)?;
        self.remove_bodies(&batch.expunges)?;
        self.append_expunges(&batch.expunges)?;
        for (name, value) in &batch.settings {
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO settings VALUES (?, ?)")?
                .execute(params![name, value])?;
        }
        // Last: a repeated event id (the primary key) is the one way a batch can be refused,
        // and everything above must then be rolled back (see the `Store` invariant).
        if let Some(table) = events_table {
            self.append_events(&table, &batch.events)?;
        }
        Ok(roll)
    }
}

/// The columns of a ledger row, in the order [`arrow_scan::each_record`] reads them.
const RECORD_COLUMNS: &str = "seq, epoch_us(recorded_at), format_version, kind, webhook_id, \
     event_id, attempt, status_code, error_class, error, duration_ms, epoch_us(due_at), reason, \
     response_body, prior_state";

pub(super) fn ts(us: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, us)
}

fn open_error(e: duckdb::Error, path: &Path) -> LedgerError {
    if e.to_string().contains("Could not set lock") {
        LedgerError::Locked {
            path: path.to_owned(),
        }
    } else {
        LedgerError::Db(e)
    }
}

/// What DuckDB says when it cannot write the file (the WAL on commit, or blocks at a
/// checkpoint), or has given up on the database after such a failure.
const STORAGE_FAILURES: &[&str] = &[
    "Failed to commit",
    "Could not write",
    "IO Error",
    "No space left on device",
    "File too large",
    "Read-only file system",
    "Permission denied",
    "Disk quota exceeded",
    "has been invalidated",
];

/// A commit error as the writer can act on it: a storage failure (retry later, maybe reopen)
/// or anything else.
fn commit_error(e: duckdb::Error) -> LedgerError {
    let message = e.to_string();
    if STORAGE_FAILURES.iter().any(|m| message.contains(m)) {
        LedgerError::StorageUnavailable { reason: message }
    } else {
        LedgerError::Db(e)
    }
}

impl DuckStore {
    /// One batch in one transaction. BEGIN, COMMIT and the link's INSERT are prepared once
    /// per connection: parsing and planning them on every commit cost the writer more than
    /// appending the batch's rows.
    fn commit_batch(&self, batch: &CommitBatch) -> duckdb::Result<Option<buckets::Roll>> {
        self.conn.prepare_cached("BEGIN TRANSACTION")?.execute([])?;
        let committed = self.append_batch(batch).and_then(|roll| {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(roll)
        });
        if committed.is_err() {
            // Nothing of the batch stays; a failed COMMIT has already ended the transaction.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        committed
    }
}

impl Store for DuckStore {
    fn commit(&mut self, batch: &CommitBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // A repeat of an event id stored in a sealed bucket (whose key no longer sees new
        // rows) refuses the batch as the open bucket's key would.
        if let (Some(b), false) = (&self.buckets, batch.events.is_empty()) {
            let ids: Vec<Uuid> = batch.events.iter().map(|e| e.event_id.0).collect();
            if let Some(id) = b.stored_in_sealed(&self.conn, &ids)? {
                return Err(LedgerError::Invalid(format!(
                    "event {id} is already stored (in a sealed bucket): the batch is refused"
                )));
            }
        }
        let roll = self.commit_batch(batch).map_err(commit_error)?;
        if let Some(b) = &mut self.buckets {
            let events: Vec<(u64, Uuid)> =
                batch.events.iter().map(|e| (e.seq, e.event_id.0)).collect();
            b.committed(roll, &events);
        }
        if !batch.expunges.is_empty() {
            if let Err(e) = self.scrub() {
                expunges::scrub_failed(&e);
            }
        }
        Ok(())
    }

    fn scan_records(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(StoredRecord) -> Result<()>,
    ) -> Result<()> {
        scan::records(&self.conn, from, to, f)
    }

    fn last_seq(&self) -> Result<u64> {
        let v: Option<i64> =
            self.conn
                .query_row("SELECT max(seq) FROM webhook_deliveries", [], |r| r.get(0))?;
        Ok(v.unwrap_or(0) as u64)
    }

    fn last_seq_at(&self, at: Timestamp) -> Result<u64> {
        let v: Option<i64> = self.conn.query_row(
            "SELECT max(seq) FROM webhook_deliveries WHERE recorded_at <= ?",
            params![ts(at.timestamp_micros())],
            |r| r.get(0),
        )?;
        Ok(v.unwrap_or(0) as u64)
    }

    fn links(&self) -> Result<Vec<BatchLink>> {
        let mut stmt = self
            .conn
            .prepare("SELECT first_seq, last_seq, hash FROM ledger_batches ORDER BY first_seq")?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(2)?;
            Ok(BatchLink {
                first_seq: r.get::<_, i64>(0)? as u64,
                last_seq: r.get::<_, i64>(1)? as u64,
                hash: hash.try_into().unwrap_or([0; 32]),
            })
        })?;
        Ok(rows.collect::<duckdb::Result<_>>()?)
    }

    fn changes(&self) -> Result<Vec<StoredChange>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT seq, epoch_us(recorded_at), format_version, kind, webhook_id::VARCHAR, url, \
             event_types, description, active, secret, epoch_us(previous_until), reason, hash, \
             {}, {} FROM webhook_changes ORDER BY seq",
            if self.schema >= 4 {
                "app, name, metadata, token_id::VARCHAR, token_digest, payload_format"
            } else {
                "NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::BLOB, NULL::VARCHAR"
            },
            // Schema 7 adds the actor (`schema/007_actor.sql`).
            if self.schema >= 7 {
                "actor"
            } else {
                "NULL::VARCHAR"
            }
        ))?;
        let rows = stmt.query_map([], |r| {
            let id: String = r.get(4)?;
            let hash: Vec<u8> = r.get(12)?;
            Ok(StoredChange {
                seq: r.get::<_, i64>(0)? as u64,
                recorded_at_us: r.get(1)?,
                format_version: r.get(2)?,
                kind: r.get(3)?,
                webhook_id: Uuid::parse_str(&id).unwrap_or_default(),
                url: r.get(5)?,
                event_types: r.get(6)?,
                description: r.get(7)?,
                active: r.get(8)?,
                secret: r.get(9)?,
                previous_until_us: r.get(10)?,
                reason: r.get(11)?,
                hash: hash.try_into().unwrap_or([0; 32]),
                app: r.get(13)?,
                name: r.get(14)?,
                metadata: r.get(15)?,
                token_id: r
                    .get::<_, Option<String>>(16)?
                    .and_then(|t| Uuid::parse_str(&t).ok()),
                token_digest: r.get(17)?,
                payload_format: r.get(18)?,
                actor: r.get(19)?,
            })
        })?;
        Ok(rows.collect::<duckdb::Result<_>>()?)
    }

    fn page(
        &self,
        after_seq: u64,
        limit: usize,
        webhook: Option<crate::ids::WebhookId>,
        kind: Option<crate::ledger::record::RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        // Optional filters become always-true comparisons when absent, so one statement
        // serves every combination.
        let filter = "seq > ? AND (? IS NULL OR webhook_id = ?::UUID) AND (? IS NULL OR kind = ?) \
                      ORDER BY seq LIMIT ?";
        let webhook = webhook.map(|w| w.0.to_string());
        let kind = kind.map(|k| k.as_str());
        self.query_records(
            filter,
            params![after_seq as i64, webhook, webhook, kind, kind, limit as i64],
            &mut |r| {
                out.push(r);
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn page_of(
        &self,
        after_seq: u64,
        limit: usize,
        webhooks: &[crate::ids::WebhookId],
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        DuckStore::page_of(self, after_seq, limit, webhooks, kind)
    }

    fn finished_counts(
        &self,
        webhooks: &[crate::ids::WebhookId],
        upto_seq: u64,
    ) -> Result<(u64, u64, u64)> {
        DuckStore::finished_counts(self, webhooks, upto_seq)
    }

    fn history(&self, key: DeliveryKey) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        self.query_records(
            "webhook_id = ?::UUID AND event_id = ?::UUID ORDER BY seq",
            params![key.webhook_id.0.to_string(), key.event_id.0.to_string()],
            &mut |r| {
                out.push(r);
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn producer_ids(&self, ids: &[EventId]) -> Result<HashMap<EventId, String>> {
        self.producer_ids_by_key(ids)
    }

    fn bodies_published_before(
        &self,
        before: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventId)>> {
        self.bodies_before(before, after, limit)
    }

    fn events(&self, ids: &[EventId]) -> Result<Vec<StoredEvent>> {
        self.events_by_id(ids)
    }

    fn events_of_records(&self, first: u64, last: u64) -> Result<Vec<StoredEvent>> {
        self.events_named_by_records(first, last)
    }

    fn enqueued_webhooks(&self, event_id: EventId) -> Result<Vec<crate::ids::WebhookId>> {
        let mut stmt = self.conn.prepare(
            "SELECT webhook_id::VARCHAR FROM webhook_deliveries \
             WHERE event_id = ?::UUID AND kind = 'enqueued' ORDER BY webhook_id",
        )?;
        let rows = stmt.query_map(params![event_id.0.to_string()], |r| r.get::<_, String>(0))?;
        rows.map(|r| {
            let s = r?;
            Uuid::parse_str(&s)
                .map(crate::ids::WebhookId)
                .map_err(|e| LedgerError::Invalid(format!("stored webhook id {s}: {e}")))
        })
        .collect()
    }

    fn finished_in_window(
        &self,
        webhook: crate::ids::WebhookId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(EventId, Terminal)>> {
        let mut stmt = self.conn.prepare(
            "SELECT event_id::VARCHAR, kind FROM ( \
                SELECT event_id, kind, recorded_at, \
                       row_number() OVER (PARTITION BY event_id ORDER BY seq DESC) AS n \
                FROM webhook_deliveries WHERE webhook_id = ?::UUID) \
             WHERE n = 1 AND kind IN ('dead_parked', 'parked') \
               AND recorded_at >= ? AND recorded_at < ? ORDER BY event_id",
        )?;
        let rows = stmt.query_map(
            params![
                webhook.0.to_string(),
                ts(since.timestamp_micros()),
                ts(until.timestamp_micros())
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        rows.map(|r| {
            let (id, kind) = r?;
            let id = Uuid::parse_str(&id)
                .map_err(|e| LedgerError::Invalid(format!("stored event id {id}: {e}")))?;
            let from = if kind == "parked" {
                Terminal::Parked
            } else {
                Terminal::Dead
            };
            Ok((EventId(id), from))
        })
        .collect()
    }

    fn scan_events(&self, f: &mut dyn FnMut(StoredEvent) -> Result<()>) -> Result<()> {
        self.scan_all_events(f)
    }

    fn last_event(&self) -> Result<Option<(u64, Hash)>> {
        self.last_stored_event()
    }

    fn first_duplicate_enqueue(&self) -> Result<Option<u64>> {
        checks::first_duplicate_enqueue(&self.conn)
    }

    fn first_bad_requeue(&self) -> Result<Option<(u64, Terminal, Option<RecordKind>)>> {
        checks::first_bad_requeue(&self.conn)
    }

    fn last_kinds(&self, keys: &[DeliveryKey]) -> Result<Vec<(DeliveryKey, RecordKind)>> {
        checks::last_kinds(&self.conn, keys)
    }

    fn deliveries(
        &self,
        filter: DeliveryFilter,
        after_enqueued_seq: u64,
        limit: usize,
    ) -> Result<Vec<DeliverySummary>> {
        summaries::deliveries(&self.conn, filter, after_enqueued_seq, limit)
    }

    fn link_ending_at(&self, seq: u64) -> Result<Option<BatchLink>> {
        positions::link_ending_at(&self.conn, seq)
    }

    fn links_after(&self, seq: u64) -> Result<Vec<BatchLink>> {
        positions::links_after(&self.conn, seq)
    }

    fn last_link(&self, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>> {
        positions::last_link(&self.conn, at_or_after)
    }

    fn last_seq_at_within(&self, at: Timestamp, from: u64, before: u64) -> Result<Option<u64>> {
        positions::last_seq_at_within(&self.conn, at, from, before)
    }

    fn append_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()> {
        checkpoints::append(&self.conn, checkpoint)
    }

    fn checkpoint_index(&self) -> Result<Vec<CheckpointInfo>> {
        if self.schema < 3 {
            return Ok(Vec::new());
        }
        checkpoints::index(&self.conn, self.schema)
    }

    fn checkpoints_at(&self, seq: u64) -> Result<Vec<StoredCheckpoint>> {
        if self.schema < 3 {
            return Ok(Vec::new());
        }
        checkpoints::at(&self.conn, self.schema, seq)
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT value FROM settings WHERE name = ?")?;
        let mut rows = stmt.query(params![name])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        })
    }

    fn last_expunge(&self) -> Result<Option<(u64, Hash)>> {
        self.last_fact()
    }

    fn scan_expunges(
        &self,
        f: &mut dyn FnMut(crate::ledger::expunge::StoredExpunge) -> Result<()>,
    ) -> Result<()> {
        self.expunge_facts("ORDER BY seq", [], f)
    }

    fn first_unrecorded_expunge(&self) -> Result<Option<u64>> {
        self.first_unrecorded()
    }

    fn expunge_of(&self, event: EventId) -> Result<Option<crate::ledger::expunge::StoredExpunge>> {
        self.fact_of(event)
    }

    fn delete_checkpoints(&mut self, seqs: &[u64]) -> Result<u64> {
        checkpoints::delete(&self.conn, seqs)
    }

    fn attempt_stats(&self, query: &super::AttemptStatsQuery) -> Result<super::AttemptStats> {
        stats::attempt_stats(&self.conn, query)
    }

    /// A checkpoint when the WAL has reached the idle threshold. A failed one (another
    /// connection's transaction in the way) is left for the next idle moment or for DuckDB's own.
    fn idle(&mut self) -> Result<bool> {
        if self.idle_checkpoint_bytes == 0 || self.buckets.is_none() {
            return Ok(false);
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push(".wal");
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if size < self.idle_checkpoint_bytes {
            return Ok(false);
        }
        match self.conn.execute_batch("CHECKPOINT") {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, wal_bytes = size, "idle checkpoint skipped");
                Ok(false)
            }
        }
    }

    // One process writes a DuckDB file: no commit lock, nothing to catch up, no leases.
    fn lock_commits(&mut self) -> Result<bool> {
        Ok(false)
    }

    fn unlock_commits(&mut self) -> Result<()> {
        Ok(())
    }

    fn heads(&self) -> Result<Option<super::Heads>> {
        Ok(None)
    }

    fn changes_after(&self, seq: u64) -> Result<Vec<StoredChange>> {
        Ok(self
            .changes()?
            .into_iter()
            .filter(|c| c.seq > seq)
            .collect())
    }

    fn leased_partitions(&self, _node: Uuid) -> Result<Option<u64>> {
        Ok(None)
    }
}
