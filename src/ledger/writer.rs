//! The single writer: one thread owns the read-write connection and appends everything.
//!
//! Callers send [`Commit`]s over a channel. The writer takes every commit waiting in the queue
//! (group commit: concurrent callers share one durable transaction), checks each against the
//! projection plus what the batch already staged (an invalid one is refused alone, with a typed
//! error, and nothing of it is written), gives the records gapless seqs and one chain link,
//! commits, applies the records to the in-memory projection in seq order, and only then
//! answers each caller with its seqs.
//!
//! A commit the disk refuses is answered `StorageUnavailable` and leaves no trace in memory;
//! `reopen.rs` covers how the writer carries on after one.
//!
//! Every store transaction and every idle checkpoint is timed into the writer's pause
//! distribution (`pauses.rs`): what each commit may wait behind, read by `/metrics` and `bench`.
//!
//! A `requeued` record is checked against the delivery it lifts: for each delivery a batch
//! requeues that is not live, the writer reads the kind of its last stored record (one keyed
//! query per batch, only for batches with requeues), and staging refuses a requeue of a
//! delivery that was never enqueued, is not finished, or is in another terminal state than the
//! record names.
//!
//! On a store several nodes write (PostgreSQL), each batch is processed under the store's
//! commit lock after catching up with the other writers (`catch_up.rs`).
//!
//! A repeated event id is refused by the primary key on `events` (the whole transaction fails
//! and nothing is written); the writer then looks the batch's events up, refuses the repeated
//! ones alone (answering whether the body was the same), and commits the rest.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::chain::{batch_hash, event_link, BatchLink, Hash};
use super::record::{to_micros, NewRecord, Record, RecordBody, Terminal, Timestamp};
use super::reopen::Reopen;
use super::stage::{requeues, stage_all, Staged};
use super::stored::StoredRecord;
use super::Shared;
use crate::clock::Clock;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::registry::{Change, ChangeRecord, StoredChange};
use crate::store::{CommitBatch, Store, StoredEvent};

/// How many commits one transaction takes at most.
const MAX_COMMITS_PER_BATCH: usize = 4096;

/// A new event to store with a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: EventId,
    pub event_type: String,
    /// The payload (format 1), or the exact bytes to send (no format).
    pub body: Vec<u8>,
    /// The app, the producer's id and the body format (see [`StoredEvent`]).
    pub app: Option<String>,
    pub producer_id: Option<String>,
    pub format: Option<u8>,
    /// The publish time the envelope carries (`None`: the commit's time).
    pub published_at: Option<Timestamp>,
}

impl NewEvent {
    /// An event stored as the bytes to send, in the default app (no producer id): how events
    /// were stored before apps (tests and benches that write the old shape use it).
    pub fn stored_as_sent(event_id: EventId, event_type: &str, body: Vec<u8>) -> Self {
        Self {
            event_id,
            event_type: event_type.to_owned(),
            body,
            app: None,
            producer_id: None,
            format: None,
            published_at: None,
        }
    }
}

/// What one caller wants appended atomically.
#[derive(Debug, Default)]
pub struct Commit {
    pub events: Vec<NewEvent>,
    pub records: Vec<NewRecord>,
    pub changes: Vec<(WebhookId, Change)>,
    /// Park every pending delivery of this webhook, for this reason (decided by the writer
    /// against the projection, so no delivery can slip between the check and the commit).
    pub park: Option<(WebhookId, String)>,
    pub settings: Vec<(String, String)>,
    /// Bodies to erase (committed alone, see [`super::expunge`]).
    pub expunge: Vec<super::expunge::ExpungeOrder>,
}

/// The caller's answer: what was appended and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The seqs of the appended records, in the order given (parked records last).
    pub seqs: Vec<u64>,
    /// The keys of the records appended by `park`.
    pub parked: Vec<DeliveryKey>,
    pub change_seqs: Vec<u64>,
    /// The seqs of the expunge facts appended (see [`super::expunge`]).
    pub expunges: Vec<u64>,
    pub recorded_at: Timestamp,
}

pub(crate) struct Request {
    pub commit: Commit,
    pub reply: oneshot::Sender<Result<Receipt>>,
}

pub(crate) struct Writer {
    pub store: Box<dyn Store>,
    /// The database, to reopen after a storage failure broke the connection.
    pub location: crate::store::any::Location,
    /// Set when the store no longer answers or no longer matches the in-memory state.
    pub reopen: Option<Reopen>,
    pub shared: Arc<Shared>,
    pub clock: Arc<dyn Clock>,
    pub last_link: Hash,
    pub last_change_hash: Hash,
    /// The last stored event's seq and chain hash.
    pub last_event: (u64, Hash),
    /// The last expunge fact's seq and chain hash.
    pub last_expunge: (u64, Hash),
}

impl Writer {
    /// Takes batches until every sender is gone; whenever the queue is empty, gives the store
    /// its idle work ([`Store::idle`]) before it waits.
    pub fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.idle();
                    match rx.recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_COMMITS_PER_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.process_shared(batch);
        }
    }

    /// The store's idle work, unless the writer is waiting to reopen it.
    fn idle(&mut self) {
        if self.reopen.is_some() {
            return;
        }
        let started = std::time::Instant::now();
        match self.store.idle() {
            Ok(true) => {
                self.shared.pauses.idle.record(started.elapsed());
                self.shared.note_idle_checkpoint();
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "idle work failed"),
        }
    }

    /// Stages, commits and answers one batch. A publish almost always carries a new event id,
    /// so the batch is first staged without looking its events up (a query whose parse and
    /// plan cost grows with the batch). Two cases then need the stored events: a commit the
    /// primary key on `events` refused (a repeated id; nothing was written), and requests with
    /// events that staging refused (a repeated id of a delivery still live looks like a second
    /// `enqueued`). Those go through [`Writer::with_lookup`], as before the optimisation.
    pub(super) fn process(&mut self, requests: Vec<Request>) {
        if let Err(reason) = self.ensure_open() {
            super::reopen::refuse(requests, &reason);
            return;
        }
        let (erasing, requests): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|r| !r.commit.expunge.is_empty());
        let requests = self.refuse_expunged(requests);
        let now = self.now();
        let (requests, finished) = self.requeue_states(requests);
        let (staged, deferred) = self.stage(requests, None, &finished);
        if !staged.is_empty() {
            let (batch, records, changes) = self.build(&staged, now);
            match self.commit_timed(&batch) {
                Ok(()) => self.acknowledge(staged, &batch, &records, &changes, now),
                // A refused commit with events may be a repeated event id (the primary key):
                // look the events up and commit the rest. A failing disk is no such case.
                Err(e) if !batch.events.is_empty() && !e.is_storage() => {
                    let mut all: Vec<Request> = staged.into_iter().map(|s| s.request).collect();
                    all.extend(deferred);
                    return self.with_lookup(all, Some(e));
                }
                Err(e) => self.fail(staged.into_iter().map(|s| s.request), e),
            }
        }
        if !deferred.is_empty() {
            self.with_lookup(deferred, None);
        }
        for r in erasing {
            self.expunge(r);
        }
    }

    /// Stages `requests` against the stored events among theirs (a repeated event is refused
    /// alone, answering whether its body was the same) and commits the rest. After a refused
    /// commit (`error`) with no stored event to explain it, the batch fails as a whole.
    fn with_lookup(&mut self, requests: Vec<Request>, error: Option<LedgerError>) {
        let existing = self.existing_events(&requests);
        if let (Some(e), true) = (error, existing.is_empty()) {
            return self.fail(requests, e);
        }
        let now = self.now();
        let (requests, finished) = self.requeue_states(requests);
        let (staged, _) = self.stage(requests, Some(&existing), &finished);
        if staged.is_empty() {
            return;
        }
        let (batch, records, changes) = self.build(&staged, now);
        match self.commit_timed(&batch) {
            Ok(()) => self.acknowledge(staged, &batch, &records, &changes, now),
            Err(e) => self.fail(staged.into_iter().map(|s| s.request), e),
        }
    }

    pub(super) fn stage(
        &self,
        requests: Vec<Request>,
        existing: Option<&[StoredEvent]>,
        finished: &HashMap<DeliveryKey, Terminal>,
    ) -> (Vec<Staged>, Vec<Request>) {
        let projection = self.shared.read_projection();
        let registry = self.shared.read_registry();
        stage_all(requests, &projection, &registry, existing, finished)
    }

    /// The terminal state, from its last stored record, of every delivery that `requests`
    /// requeue and the projection does not hold live. When the store cannot answer, the
    /// requests with requeues are refused (their check needs it) and the rest go on.
    fn requeue_states(
        &mut self,
        requests: Vec<Request>,
    ) -> (Vec<Request>, HashMap<DeliveryKey, Terminal>) {
        let mut keys: Vec<DeliveryKey> = {
            let projection = self.shared.read_projection();
            requests
                .iter()
                .flat_map(|r| &r.commit.records)
                .filter(|r| matches!(r.body, RecordBody::Requeued { .. }))
                .filter(|r| projection.get(&r.key).is_none())
                .map(|r| r.key)
                .collect()
        };
        if keys.is_empty() {
            return (requests, HashMap::new());
        }
        keys.sort_unstable();
        keys.dedup();
        match self.store.last_kinds(&keys) {
            Ok(kinds) => {
                let finished = kinds
                    .into_iter()
                    .filter_map(|(key, kind)| Terminal::after(kind).map(|t| (key, t)))
                    .collect();
                (requests, finished)
            }
            Err(e) => {
                let (refused, rest): (Vec<_>, Vec<_>) =
                    requests.into_iter().partition(|r| requeues(&r.commit));
                self.fail(refused, e);
                (rest, HashMap::new())
            }
        }
    }

    /// The batch is durable: fold it in, then answer each caller with its seqs.
    pub(super) fn acknowledge(
        &mut self,
        staged: Vec<Staged>,
        batch: &CommitBatch,
        records: &[Record],
        changes: &[ChangeRecord],
        now: Timestamp,
    ) {
        self.shared.set_storage_error(None);
        self.publish(batch, records, changes);
        let mut next = records.iter().map(|r| r.seq);
        let mut next_change = changes.iter().map(|c| c.seq);
        for s in staged {
            let receipt = Receipt {
                seqs: next.by_ref().take(s.records.len()).collect(),
                parked: s.parked,
                change_seqs: next_change
                    .by_ref()
                    .take(s.request.commit.changes.len())
                    .collect(),
                expunges: batch.expunges.iter().map(|x| x.seq).collect(),
                recorded_at: now,
            };
            let _ = s.request.reply.send(Ok(receipt));
        }
    }

    /// Answers every request of a refused batch: `StorageUnavailable` when the disk refused it
    /// (remembered for `/healthz` until a commit succeeds), `CommitFailed` otherwise. Then the
    /// writer checks that its store still answers (see `reopen.rs`).
    pub(super) fn fail(&mut self, requests: impl IntoIterator<Item = Request>, error: LedgerError) {
        tracing::error!(error = %error, "ledger commit failed; nothing of this batch was acknowledged");
        let storage = error.is_storage();
        let message = match error {
            LedgerError::StorageUnavailable { reason } => reason,
            other => other.to_string(),
        };
        if storage {
            self.shared.set_storage_error(Some(message.clone()));
        }
        self.check_store(&message);
        for r in requests {
            let error = if storage {
                LedgerError::StorageUnavailable {
                    reason: message.clone(),
                }
            } else {
                LedgerError::CommitFailed(message.clone())
            };
            let _ = r.reply.send(Err(error));
        }
    }

    /// One store transaction, its wall time counted in the writer's pauses.
    pub(super) fn commit_timed(&mut self, batch: &CommitBatch) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.store.commit(batch);
        self.shared.pauses.commits.record(started.elapsed());
        result
    }

    /// The batch's timestamp: the clock, truncated to microseconds, never before the last one.
    pub(super) fn now(&self) -> Timestamp {
        let now = to_micros(self.clock.now());
        match self.shared.read_projection().last_recorded_at() {
            Some(last) if last > now => last,
            _ => now,
        }
    }

    fn existing_events(&self, requests: &[Request]) -> Vec<StoredEvent> {
        let ids: Vec<EventId> = requests
            .iter()
            .flat_map(|r| r.commit.events.iter().map(|e| e.event_id))
            .collect();
        // A failed lookup leaves the primary key on `events` to refuse duplicates.
        self.store.events(&ids).unwrap_or_default()
    }

    /// Gives records and changes their seqs, time and chain links.
    pub(super) fn build(
        &self,
        staged: &[Staged],
        now: Timestamp,
    ) -> (CommitBatch, Vec<Record>, Vec<ChangeRecord>) {
        let mut seq = self.shared.read_projection().last_seq();
        let mut change_seq = self.shared.read_registry().last_seq();
        let mut batch = CommitBatch::default();
        let mut records = Vec::new();
        let mut changes = Vec::new();
        let mut prev_change = self.last_change_hash;
        let (mut event_seq, mut prev_event) = self.last_event;
        for s in staged {
            for e in &s.request.commit.events {
                event_seq += 1;
                let mut stored = StoredEvent {
                    seq: event_seq,
                    event_id: e.event_id,
                    event_type: e.event_type.clone(),
                    published_at: e.published_at.map_or(now, to_micros),
                    body: e.body.clone(),
                    hash: [0; 32],
                    app: e.app.clone(),
                    producer_id: e.producer_id.clone(),
                    format: e.format,
                    body_digest: Some(super::chain::body_digest(&e.body)),
                    expunged: false,
                };
                stored.hash = event_link(&prev_event, &stored);
                prev_event = stored.hash;
                batch.events.push(stored);
            }
            for r in &s.records {
                seq += 1;
                records.push(Record {
                    seq,
                    recorded_at: now,
                    key: r.key,
                    body: r.body.clone(),
                });
            }
            for (webhook_id, change) in &s.request.commit.changes {
                change_seq += 1;
                let rec = ChangeRecord {
                    seq: change_seq,
                    recorded_at: now,
                    webhook_id: *webhook_id,
                    change: change.clone(),
                };
                let row = StoredChange::from_change(&rec, &prev_change);
                prev_change = row.hash;
                batch.changes.push(row);
                changes.push(rec);
            }
            batch
                .settings
                .extend(s.request.commit.settings.iter().cloned());
        }
        batch.records = records.iter().map(StoredRecord::from_record).collect();
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            let link = BatchLink {
                first_seq: first.seq,
                last_seq: last.seq,
                hash: batch_hash(&self.last_link, &batch.records),
            };
            batch.link = Some((link, now));
        }
        (batch, records, changes)
    }

    /// After a durable commit: fold it into the in-memory state and wake whoever waits.
    fn publish(&mut self, batch: &CommitBatch, records: &[Record], changes: &[ChangeRecord]) {
        if let Some((link, _)) = &batch.link {
            self.last_link = link.hash;
        }
        if let Some(last) = batch.changes.last() {
            self.last_change_hash = last.hash;
        }
        if let Some(last) = batch.events.last() {
            self.last_event = (last.seq, last.hash);
        }
        {
            let mut projection = self.shared.write_projection();
            for r in records {
                if let Err(e) = projection.apply(r) {
                    tracing::error!(error = %e, "a checked record failed to apply (bug)");
                }
            }
        }
        if !changes.is_empty() {
            let mut registry = self.shared.write_registry();
            for c in changes {
                if let Err(e) = registry.apply(c) {
                    tracing::error!(error = %e, "a checked change failed to apply (bug)");
                }
            }
        }
        self.shared.notify(records.last().map(|r| r.seq));
    }
}
