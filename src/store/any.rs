//! Where a ledger lives and the store that opens it: a DuckDB file (`--db PATH`, the default)
//! or a PostgreSQL database (`--store postgres://...` or `HOOKLEDGER_DATABASE_URL`).
//! [`AnyStore`] is either store behind one type, so that the ledger, its readers and the CLI
//! are written once; it speaks the [`Store`] trait by handing each call to the store it holds.
//!
//! Invariant: nothing here decides anything about the data; every answer is the inner
//! store's. The DuckDB-only parts (buckets, DuckDB's thread setting, the raw connection the
//! SQL route runs on) are no-ops or a typed refusal on PostgreSQL.

use std::fmt;
use std::path::PathBuf;

use super::duck::{DuckStore, OpenMode};
use super::pg::PgStore;
use super::{CheckpointInfo, CommitBatch, Store, StoredCheckpoint, StoredEvent};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::chain::{BatchLink, Hash};
use crate::ledger::record::{RecordKind, Terminal, Timestamp};
use crate::ledger::stored::StoredRecord;
use crate::ledger::view::{DeliveryFilter, DeliverySummary};
use crate::registry::StoredChange;

/// The environment variable that names a PostgreSQL store when `--store` is not given.
pub const DATABASE_URL: &str = "HOOKLEDGER_DATABASE_URL";

/// Where a ledger is stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A DuckDB file.
    Duck(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://user:password@host:port/dbname`).
    Postgres(String),
}

impl Location {
    /// The location the flags name: `--store URL` (or `HOOKLEDGER_DATABASE_URL`, as clap
    /// reads it) wins over `--db`; a `--store` that is not a PostgreSQL URL is refused naming
    /// the flag.
    pub fn from_flags(db: PathBuf, store: Option<&str>) -> Result<Self> {
        match store.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Self::Duck(db)),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            Some(_) => Err(LedgerError::Invalid(
                "--store: expected a postgres:// URL (use --db for a DuckDB file)".into(),
            )),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duck(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => write!(f, "{}", super::pg::shown(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// Either store.
// One per ledger handle (the writer's, a reader's), never stored in bulk: the size of the
// larger variant does not matter, and boxing it would only add an indirection to every call.
#[allow(clippy::large_enum_variant)]
pub enum AnyStore {
    Duck(DuckStore),
    Pg(PgStore),
}

impl AnyStore {
    pub fn open(location: &Location, mode: OpenMode) -> Result<Self> {
        Ok(match location {
            Location::Duck(path) => Self::Duck(DuckStore::open(path, mode)?),
            Location::Postgres(url) => Self::Pg(PgStore::open(url, mode)?),
        })
    }

    /// Another handle on the same database for reads beside the writer (on PostgreSQL it
    /// connects at its first query, so it may be made on any thread).
    pub fn reader(&self) -> Result<Self> {
        Ok(match self {
            Self::Duck(s) => Self::Duck(s.reader()?),
            Self::Pg(s) => Self::Pg(s.reader()?),
        })
    }

    /// DuckDB's events per bucket (PostgreSQL has no buckets).
    pub fn set_bucket_events(&mut self, events: u64) {
        if let Self::Duck(s) = self {
            s.set_bucket_events(events);
        }
    }

    /// DuckDB's idle checkpoint threshold in MiB (PostgreSQL checkpoints by itself).
    pub fn set_idle_checkpoint_mb(&mut self, mb: u64) {
        if let Self::Duck(s) = self {
            s.set_idle_checkpoint_mb(mb);
        }
    }

    /// DuckDB's one-thread setting after the startup fold (nothing on PostgreSQL).
    pub fn use_one_thread(&self) -> Result<()> {
        match self {
            Self::Duck(s) => s.use_one_thread(),
            Self::Pg(_) => Ok(()),
        }
    }

    /// The schema version of the store (each backend numbers its own migrations).
    pub fn schema_version(&self) -> Result<u32> {
        match self {
            Self::Duck(s) => s.schema_version(),
            Self::Pg(s) => s.schema_version(),
        }
    }

    pub fn duck(&self) -> Option<&DuckStore> {
        match self {
            Self::Duck(s) => Some(s),
            Self::Pg(_) => None,
        }
    }

    pub fn pg(&self) -> Option<&PgStore> {
        match self {
            Self::Pg(s) => Some(s),
            Self::Duck(_) => None,
        }
    }

    /// The DuckDB connection (the SQL route's and tests'); refused on PostgreSQL, where the
    /// same audit views are queried with psql.
    pub fn connection(&self) -> Result<&duckdb::Connection> {
        match self {
            Self::Duck(s) => Ok(s.connection()),
            Self::Pg(s) => Err(LedgerError::Invalid(format!(
                "SQL through hookledger runs on DuckDB; this ledger is in PostgreSQL ({}): \
                 query its audit views there (psql)",
                s.location()
            ))),
        }
    }

    /// [`Store::finished_counts`], callable without the trait in scope.
    pub fn finished_counts(
        &self,
        webhooks: &[WebhookId],
        upto_seq: u64,
    ) -> Result<(u64, u64, u64)> {
        self.inner().finished_counts(webhooks, upto_seq)
    }

    fn inner(&self) -> &dyn Store {
        match self {
            Self::Duck(s) => s,
            Self::Pg(s) => s,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Store {
        match self {
            Self::Duck(s) => s,
            Self::Pg(s) => s,
        }
    }
}

impl Store for AnyStore {
    fn commit(&mut self, batch: &CommitBatch) -> Result<()> {
        self.inner_mut().commit(batch)
    }
    fn scan_records(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(StoredRecord) -> Result<()>,
    ) -> Result<()> {
        self.inner().scan_records(from, to, f)
    }
    fn last_seq(&self) -> Result<u64> {
        self.inner().last_seq()
    }
    fn last_seq_at(&self, at: Timestamp) -> Result<u64> {
        self.inner().last_seq_at(at)
    }
    fn links(&self) -> Result<Vec<BatchLink>> {
        self.inner().links()
    }
    fn links_after(&self, seq: u64) -> Result<Vec<BatchLink>> {
        self.inner().links_after(seq)
    }
    fn changes(&self) -> Result<Vec<StoredChange>> {
        self.inner().changes()
    }
    fn page(
        &self,
        after_seq: u64,
        limit: usize,
        webhook: Option<WebhookId>,
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        self.inner().page(after_seq, limit, webhook, kind)
    }
    fn page_of(
        &self,
        after_seq: u64,
        limit: usize,
        webhooks: &[WebhookId],
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        self.inner().page_of(after_seq, limit, webhooks, kind)
    }
    fn history(&self, key: DeliveryKey) -> Result<Vec<StoredRecord>> {
        self.inner().history(key)
    }
    fn events(&self, ids: &[EventId]) -> Result<Vec<StoredEvent>> {
        self.inner().events(ids)
    }
    fn events_of_records(&self, first: u64, last: u64) -> Result<Vec<StoredEvent>> {
        self.inner().events_of_records(first, last)
    }
    fn enqueued_webhooks(&self, event_id: EventId) -> Result<Vec<WebhookId>> {
        self.inner().enqueued_webhooks(event_id)
    }
    fn finished_in_window(
        &self,
        webhook: WebhookId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(EventId, Terminal)>> {
        self.inner().finished_in_window(webhook, since, until)
    }
    fn finished_counts(&self, webhooks: &[WebhookId], upto_seq: u64) -> Result<(u64, u64, u64)> {
        self.inner().finished_counts(webhooks, upto_seq)
    }
    fn scan_events(&self, f: &mut dyn FnMut(StoredEvent) -> Result<()>) -> Result<()> {
        self.inner().scan_events(f)
    }
    fn last_event(&self) -> Result<Option<(u64, Hash)>> {
        self.inner().last_event()
    }
    fn first_duplicate_enqueue(&self) -> Result<Option<u64>> {
        self.inner().first_duplicate_enqueue()
    }
    fn first_bad_requeue(&self) -> Result<Option<(u64, Terminal, Option<RecordKind>)>> {
        self.inner().first_bad_requeue()
    }
    fn last_kinds(&self, keys: &[DeliveryKey]) -> Result<Vec<(DeliveryKey, RecordKind)>> {
        self.inner().last_kinds(keys)
    }
    fn deliveries(
        &self,
        filter: DeliveryFilter,
        after_enqueued_seq: u64,
        limit: usize,
    ) -> Result<Vec<DeliverySummary>> {
        self.inner().deliveries(filter, after_enqueued_seq, limit)
    }
    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.inner().setting(name)
    }
    fn link_ending_at(&self, seq: u64) -> Result<Option<BatchLink>> {
        self.inner().link_ending_at(seq)
    }
    fn last_link(&self, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>> {
        self.inner().last_link(at_or_after)
    }
    fn last_seq_at_within(&self, at: Timestamp, from: u64, before: u64) -> Result<Option<u64>> {
        self.inner().last_seq_at_within(at, from, before)
    }
    fn append_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()> {
        self.inner_mut().append_checkpoint(checkpoint)
    }
    fn checkpoint_index(&self) -> Result<Vec<CheckpointInfo>> {
        self.inner().checkpoint_index()
    }
    fn checkpoints_at(&self, seq: u64) -> Result<Vec<StoredCheckpoint>> {
        self.inner().checkpoints_at(seq)
    }
    fn delete_checkpoints(&mut self, seqs: &[u64]) -> Result<u64> {
        self.inner_mut().delete_checkpoints(seqs)
    }
    fn attempt_stats(&self, query: &super::AttemptStatsQuery) -> Result<super::AttemptStats> {
        self.inner().attempt_stats(query)
    }
    fn producer_ids(&self, ids: &[EventId]) -> Result<std::collections::HashMap<EventId, String>> {
        self.inner().producer_ids(ids)
    }
    fn bodies_published_before(
        &self,
        before: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventId)>> {
        self.inner().bodies_published_before(before, after, limit)
    }
    fn last_expunge(&self) -> Result<Option<(u64, Hash)>> {
        self.inner().last_expunge()
    }
    fn scan_expunges(
        &self,
        f: &mut dyn FnMut(crate::ledger::expunge::StoredExpunge) -> Result<()>,
    ) -> Result<()> {
        self.inner().scan_expunges(f)
    }
    fn first_unrecorded_expunge(&self) -> Result<Option<u64>> {
        self.inner().first_unrecorded_expunge()
    }
    fn expunge_of(&self, event: EventId) -> Result<Option<crate::ledger::expunge::StoredExpunge>> {
        self.inner().expunge_of(event)
    }
    fn idle(&mut self) -> Result<bool> {
        self.inner_mut().idle()
    }
    fn lock_commits(&mut self) -> Result<bool> {
        self.inner_mut().lock_commits()
    }
    fn unlock_commits(&mut self) -> Result<()> {
        self.inner_mut().unlock_commits()
    }
    fn heads(&self) -> Result<Option<super::Heads>> {
        self.inner().heads()
    }
    fn changes_after(&self, seq: u64) -> Result<Vec<StoredChange>> {
        self.inner().changes_after(seq)
    }
    fn leased_partitions(&self, node: uuid::Uuid) -> Result<Option<u64>> {
        self.inner().leased_partitions(node)
    }
}
