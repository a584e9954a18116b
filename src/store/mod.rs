//! The storage boundary: the few operations the ledger needs from a database, as one small
//! trait, implemented by DuckDB ([`duck::DuckStore`], the embedded default) and PostgreSQL
//! ([`pg::PgStore`]); both pass the same conformance suite (`tests/it/store_conformance.rs`).
//! [`any::AnyStore`] is either of them, opened from a [`any::Location`] (`--db` or `--store`).
//!
//! Invariant: a store only appends. `commit` writes one batch atomically or not at all, and
//! refuses a batch with an event id stored before, at any age; nothing here updates or deletes
//! a ledger, chain, event or registry row, with two exceptions. First, projection checkpoints,
//! a cache appended beside them: [`Store::delete_checkpoints`] removes old ones when they are
//! thinned (`crate::ledger::checkpoint::thin`), which loses nothing but the time to fold again.
//! Second, an event's body: a batch's [`CommitBatch::expunges`] remove the bodies they name
//! (erasure, by request or by the retention policy) in the same transaction that appends their
//! chained facts; every other column of the event, its digest and its link stay
//! (`crate::ledger::expunge`).
//! A backend writes a batch's events last, so that the one constraint a commit can hit (a
//! repeated event id) fails the batch's last write and the conformance suite's "a failed
//! commit writes nothing" tests the rollback of everything written before it.

pub mod any;
pub mod duck;
pub mod pg;

use crate::error::Result;
use crate::ids::{DeliveryKey, EventId};
use crate::ledger::chain::BatchLink;
use crate::ledger::record::{RecordKind, Timestamp};
use crate::ledger::stored::StoredRecord;
use crate::registry::StoredChange;

/// A published event as stored, chained to the previous event by `hash` (see
/// [`crate::ledger::chain::event_link`]). With `format` NULL (events stored before apps) `body`
/// is the exact bytes that are signed and sent; with format 1 it is the payload, and the bytes
/// sent are built from it deterministically (`crate::delivery::envelope`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event_id: EventId,
    pub event_type: String,
    pub published_at: Timestamp,
    pub body: Vec<u8>,
    pub hash: crate::ledger::chain::Hash,
    /// The app it was published to (`None`: stored before apps, the default app).
    pub app: Option<String>,
    /// The producer's own id (`None`: stored before producer ids; the UUID is the id).
    pub producer_id: Option<String>,
    /// The body format (`None`: sent as stored; `Some(1)`: the payload).
    pub format: Option<u8>,
    /// SHA-256 of `body`, what the event's link covers (`None`: stored before erasure, the
    /// link covers the bytes; see [`crate::ledger::chain::event_link`]).
    pub body_digest: Option<crate::ledger::chain::Hash>,
    /// The body was erased (`body` is then empty; see [`crate::ledger::expunge`]).
    pub expunged: bool,
}

impl StoredEvent {
    /// The producer's id as answers show it: the stored string, or the UUID of an old event.
    pub fn producer_event_id(&self) -> String {
        self.producer_id
            .clone()
            .unwrap_or_else(|| self.event_id.to_string())
    }

    /// The app it belongs to.
    pub fn app_uid(&self) -> crate::ids::AppUid {
        self.app
            .as_deref()
            .and_then(crate::ids::AppUid::parse)
            .unwrap_or_else(crate::ids::AppUid::default_app)
    }
}

/// One row of `projection_checkpoints` (see [`crate::ledger::checkpoint`]): a cache of the
/// folded state at `seq`, bound to the chain hash of the link ending there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub seq: u64,
    pub chain_hash: crate::ledger::chain::Hash,
    /// The time of record `seq`.
    pub recorded_at_us: Option<i64>,
    pub format_version: u8,
    pub digest: crate::ledger::chain::Hash,
    pub body: Vec<u8>,
}

/// A stored checkpoint without its body: what is cheap to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub seq: u64,
    pub recorded_at_us: Option<i64>,
    pub format_version: u8,
    pub bytes: u64,
}

/// Everything one writer commit appends, in one transaction.
#[derive(Debug, Default)]
pub struct CommitBatch {
    pub events: Vec<StoredEvent>,
    pub records: Vec<StoredRecord>,
    /// The chain link covering `records` (present whenever `records` is not empty).
    pub link: Option<(BatchLink, Timestamp)>,
    pub changes: Vec<StoredChange>,
    pub settings: Vec<(String, String)>,
    /// Bodies erased by this batch, each with its chained fact (see [`crate::ledger::expunge`]).
    pub expunges: Vec<crate::ledger::expunge::StoredExpunge>,
}

/// The last seq of each of a store's logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heads {
    pub records: u64,
    pub changes: u64,
    pub events: u64,
    pub expunges: u64,
}

impl CommitBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.expunges.is_empty()
            && self.records.is_empty()
            && self.changes.is_empty()
            && self.settings.is_empty()
    }
}

/// The operations the ledger needs from a database.
pub trait Store: Send {
    /// Appends the batch atomically: all of it is durable when this returns `Ok`, none of it
    /// otherwise.
    fn commit(&mut self, batch: &CommitBatch) -> Result<()>;

    /// Calls `f` with every ledger record whose seq is in `from..=to`, in seq order.
    fn scan_records(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(StoredRecord) -> Result<()>,
    ) -> Result<()>;

    /// The seq of the last ledger record (0 when empty).
    fn last_seq(&self) -> Result<u64>;

    /// The seq of the last record recorded at or before `at` (0 if none).
    fn last_seq_at(&self, at: Timestamp) -> Result<u64>;

    /// Every chain link, in order.
    fn links(&self) -> Result<Vec<BatchLink>>;

    /// The chain links ending after `seq`, in order: the batch holding `seq + 1` first. What a
    /// reader that continues from a position needs, at a cost that grows with what follows
    /// `seq`, not with the whole chain.
    fn links_after(&self, seq: u64) -> Result<Vec<BatchLink>>;

    /// Every registry change, in seq order.
    fn changes(&self) -> Result<Vec<StoredChange>>;

    /// Up to `limit` records after `after_seq`, in seq order, optionally of one webhook or
    /// one kind (the audit export and tail).
    fn page(
        &self,
        after_seq: u64,
        limit: usize,
        webhook: Option<crate::ids::WebhookId>,
        kind: Option<crate::ledger::record::RecordKind>,
    ) -> Result<Vec<StoredRecord>>;

    /// [`Store::page`] restricted to the records of `webhooks` (an app's).
    fn page_of(
        &self,
        after_seq: u64,
        limit: usize,
        webhooks: &[crate::ids::WebhookId],
        kind: Option<crate::ledger::record::RecordKind>,
    ) -> Result<Vec<StoredRecord>>;

    /// How many deliveries of `webhooks` were delivered, dead and parked after record
    /// `upto_seq` (each delivery's last record at or before it): an app's finished counts.
    fn finished_counts(
        &self,
        webhooks: &[crate::ids::WebhookId],
        upto_seq: u64,
    ) -> Result<(u64, u64, u64)>;

    /// One delivery's records, in seq order.
    fn history(&self, key: DeliveryKey) -> Result<Vec<StoredRecord>>;

    /// The stored events among `ids`.
    fn events(&self, ids: &[EventId]) -> Result<Vec<StoredEvent>>;

    /// The stored events that the records `first..=last` name, each once, in event seq order:
    /// one read for a whole range of records (an export file), however old the events are.
    fn events_of_records(&self, first: u64, last: u64) -> Result<Vec<StoredEvent>>;

    /// The producer's id of each stored event among `ids` (the UUID, as text, for an event
    /// stored before producer ids): what answers show instead of the key. Reads no bodies.
    fn producer_ids(&self, ids: &[EventId]) -> Result<std::collections::HashMap<EventId, String>>;

    /// Up to `limit` events after seq `after` (their own seq) published before `before` whose
    /// body is still there, in seq order: the retention policy's candidates.
    fn bodies_published_before(
        &self,
        before: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventId)>>;

    /// The webhooks that `event_id` was enqueued to, in id order.
    fn enqueued_webhooks(&self, event_id: EventId) -> Result<Vec<crate::ids::WebhookId>>;

    /// The dead or parked deliveries of `webhook` whose last record (the `dead_parked` or
    /// `parked`) was recorded in `since..until`, by event.
    fn finished_in_window(
        &self,
        webhook: crate::ids::WebhookId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(EventId, crate::ledger::record::Terminal)>>;

    /// Calls `f` with every stored event, in seq order.
    fn scan_events(&self, f: &mut dyn FnMut(StoredEvent) -> Result<()>) -> Result<()>;

    /// The last event's seq and chain hash, if any.
    fn last_event(&self) -> Result<Option<(u64, crate::ledger::chain::Hash)>>;

    /// The seq of the first `enqueued` record for a delivery that was already enqueued, if any
    /// (a check the in-memory fold cannot make, since it forgets finished deliveries).
    fn first_duplicate_enqueue(&self) -> Result<Option<u64>>;

    /// The first `requeued` record (by seq) whose delivery's previous record is not the one
    /// that put it in the terminal state the requeue names (`delivered`, `dead_parked`,
    /// `parked`), or that has no previous record: its seq, the state it names, and the kind
    /// of the record before it (`None` for a delivery never enqueued). The fold forgets
    /// finished deliveries, so `verify` makes this check here.
    fn first_bad_requeue(
        &self,
    ) -> Result<Option<(u64, crate::ledger::record::Terminal, Option<RecordKind>)>>;

    /// The kind of the last record of each of `keys` that has any, in no particular order:
    /// the writer checks a `requeued` record against it.
    fn last_kinds(&self, keys: &[DeliveryKey]) -> Result<Vec<(DeliveryKey, RecordKind)>>;

    /// Deliveries as they stand (live and finished), in the order they were enqueued: up to
    /// `limit` of those matching `filter` whose `enqueued` seq is after `after_enqueued_seq`.
    fn deliveries(
        &self,
        filter: crate::ledger::view::DeliveryFilter,
        after_enqueued_seq: u64,
        limit: usize,
    ) -> Result<Vec<crate::ledger::view::DeliverySummary>>;

    fn setting(&self, name: &str) -> Result<Option<String>>;

    /// The chain link ending at `seq`, if one does.
    fn link_ending_at(&self, seq: u64) -> Result<Option<BatchLink>>;

    /// The last chain link ending at or after `at_or_after`, with its commit time (a lower
    /// bound lets the store skip the rest of the chain).
    fn last_link(&self, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>>;

    /// The seq of the last record in `from..before` recorded at or before `at`, if any.
    fn last_seq_at_within(&self, at: Timestamp, from: u64, before: u64) -> Result<Option<u64>>;

    /// Appends a projection checkpoint (a cache row; its own small transaction, beside the
    /// writer's).
    fn append_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()>;

    /// Every stored checkpoint without its body, by seq, then in the order they were stored.
    fn checkpoint_index(&self) -> Result<Vec<CheckpointInfo>>;

    /// The checkpoints stored at `seq`, in the order they were stored.
    fn checkpoints_at(&self, seq: u64) -> Result<Vec<StoredCheckpoint>>;

    /// The last expunge fact's seq and chain hash, if any.
    fn last_expunge(&self) -> Result<Option<(u64, crate::ledger::chain::Hash)>>;

    /// Calls `f` with every expunge fact, in seq order.
    fn scan_expunges(
        &self,
        f: &mut dyn FnMut(crate::ledger::expunge::StoredExpunge) -> Result<()>,
    ) -> Result<()>;

    /// The seq of the first event whose body is gone without a fact naming it, or whose fact
    /// names it while its body is still there (`verify`).
    fn first_unrecorded_expunge(&self) -> Result<Option<u64>>;

    /// The fact of `event`'s expunge, if its body was erased (for answers and trails).
    fn expunge_of(&self, event: EventId) -> Result<Option<crate::ledger::expunge::StoredExpunge>>;

    /// What the writer does when its queue is empty, off every commit's path: on DuckDB, a
    /// checkpoint once the WAL has grown past `HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB` (off by
    /// default, see `store::duck::DEFAULT_IDLE_CHECKPOINT_MB`), ahead of the one DuckDB runs by
    /// itself at 16 MB inside whichever commit crosses it. Never needed for correctness; `true`
    /// when it did some work.
    fn idle(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Several writers (PostgreSQL, see `crate::cluster`): takes the lock that serialises
    /// commits across processes, held until [`Store::unlock_commits`]. `false`: this store has
    /// one writer (DuckDB), there is nothing to lock and nothing to catch up.
    fn lock_commits(&mut self) -> Result<bool>;

    /// Releases the lock of [`Store::lock_commits`].
    fn unlock_commits(&mut self) -> Result<()>;

    /// The last seq of each log, for catching up with other writers (`None`: one writer).
    fn heads(&self) -> Result<Option<Heads>>;

    /// The registry changes after `seq`, in seq order.
    fn changes_after(&self, seq: u64) -> Result<Vec<StoredChange>>;

    /// The webhook partitions leased to `node` now, as a mask (`None`: no leases, one writer).
    fn leased_partitions(&self, node: uuid::Uuid) -> Result<Option<u64>>;

    /// Deletes every stored checkpoint at one of `seqs` (thinning: checkpoints are a cache, the
    /// one kind of row a store may delete), in one transaction; how many rows went.
    fn delete_checkpoints(&mut self, seqs: &[u64]) -> Result<u64>;

    /// The attempts (`delivered` and `failed` records) of `query`'s webhooks recorded in its
    /// window, aggregated in the database (the console's figures, `/v1/console/stats`).
    fn attempt_stats(&self, query: &AttemptStatsQuery) -> Result<AttemptStats>;
}

/// Which attempts [`Store::attempt_stats`] aggregates: those recorded in `since..=until` (after
/// `since`, up to and including `until`) of `webhooks` (every webhook when `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptStatsQuery {
    pub webhooks: Option<Vec<crate::ids::WebhookId>>,
    pub since: Timestamp,
    pub until: Timestamp,
    /// The per-minute series covers `minutes_since..=until` only.
    pub minutes_since: Timestamp,
}

/// The upper bounds (exclusive, in ms) of the latency histogram's buckets; a last bucket holds
/// every slower attempt.
pub const LATENCY_BOUNDS_MS: [u32; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// What [`Store::attempt_stats`] answers; every list is in a fixed order (by minute, by
/// webhook then class, by webhook) so that both stores answer the same value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptStats {
    /// (minute start in ms since the epoch, delivered, failed), minutes with attempts only.
    pub per_minute: Vec<(i64, u64, u64)>,
    /// (webhook, error class or `other`, failed attempts).
    pub failure_classes: Vec<(crate::ids::WebhookId, String, u64)>,
    pub webhooks: Vec<WebhookAttempts>,
    /// Attempts with a duration per bucket of [`LATENCY_BOUNDS_MS`] (one more: the slowest).
    pub latency_histogram: Vec<u64>,
}

/// One webhook's attempts in the window.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookAttempts {
    pub webhook_id: crate::ids::WebhookId,
    pub attempts: u64,
    pub delivered: u64,
    /// Continuous percentiles of the attempts' durations (interpolated, as both databases'
    /// `quantile_cont`/`percentile_cont` compute them).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The last failed attempt's time, in ms since the epoch.
    pub last_failure_ms: Option<i64>,
}

/// The `CASE` that numbers a `duration_ms`'s bucket of [`LATENCY_BOUNDS_MS`] (same SQL on both
/// stores).
pub(crate) fn latency_bucket_sql() -> String {
    let arms: Vec<String> = LATENCY_BOUNDS_MS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("WHEN duration_ms < {b} THEN {i}"))
        .collect();
    format!(
        "CASE {} ELSE {} END",
        arms.join(" "),
        LATENCY_BOUNDS_MS.len()
    )
}
