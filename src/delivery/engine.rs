//! The delivery engine: publish with fan-out, the inline first attempt, re-drive from the
//! projection's due index, and the outcome records.
//!
//! Invariants:
//! - An attempt starts only after its `attempted` record is durable, and the writer refuses a
//!   second `attempted` for a delivery already in an attempt, so one process never starts a
//!   delivery twice.
//! - `attempted` is recorded only for an attempt that holds its slots (global and per webhook)
//!   or a place ahead of them, which its webhook's recent pace bounds (see [`super::gate`]). A
//!   delivery that gets neither stays `pending` in the log: a crash cannot burn the budget of
//!   deliveries queued behind a stalled webhook. Slots are held for the request only, not while
//!   its record is committed, so a fast webhook is not limited to one slot's worth of requests
//!   per commit.
//! - Every outcome, whatever went wrong, becomes a record (`delivered`, or `failed` with its
//!   computed next due time, followed by `dead_parked` when the budget is spent or `parked` when
//!   the webhook is no longer active): no error can stall a delivery.
//! - Re-drive reads the due index, never the log; it wakes at the earliest due time or when a
//!   commit lands.
//! - While the disk fails ([`LedgerError::StorageUnavailable`]), an attempt's outcome is kept
//!   and its commit retried with a growing delay, so the delivery does not stay `in_attempt`
//!   once the disk is back (at shutdown the retries stop and the next start records the
//!   attempt as abandoned); a failing re-drive pass backs off the same way instead of spinning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::backoff::RetrySchedule;
use super::bodies::WaitingBodies;
use super::gate::{Gates, Permits, Ticket};
use super::outcome::local_failure;
pub use super::outcome::outcome_records;
use super::sender::{Attempt, Outcome, Sender};
use crate::clock::Clock;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::projection::Live;
use crate::ledger::record::{ErrorClass, NewRecord, RecordBody, Terminal, Timestamp};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::store::Store;

/// How the engine paces and retries.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub schedule: RetrySchedule,
    /// Attempts in flight at once, over all webhooks.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one webhook.
    pub per_webhook: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::default(),
            max_in_flight: 256,
            per_webhook: 16,
        }
    }
}

/// A publish request: the payload is serialised once into the body that every attempt sends.
#[derive(Clone, Debug)]
pub struct Publish {
    pub event_id: EventId,
    pub event_type: String,
    pub payload: serde_json::Value,
}

/// The event type of [`Engine::test_delivery`].
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// The answer to a test delivery: its event and the outcome records it appended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TestDelivery {
    pub event_id: EventId,
    pub records: Vec<RecordBody>,
}

/// The answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub event_id: EventId,
    /// The webhooks that got a delivery.
    pub deliveries: Vec<WebhookId>,
    /// True when the event had been published before with the same body (nothing new written).
    pub duplicate: bool,
}

pub struct Engine {
    ledger: Arc<Ledger>,
    sender: Sender,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    gates: Gates,
    /// Attempts spawned and not yet recorded, for draining.
    running: watch::Sender<usize>,
    /// Wakes the re-drive loop early (for example after the clock was moved).
    wake: Notify,
    /// Set when the re-drive loop stops: outcome commits that fail are no longer retried.
    stopping: AtomicBool,
    /// Attempt outcomes and latencies, for `/metrics`.
    metrics: Metrics,
    /// Bodies of published deliveries that wait for a permit (std Mutex: held for map
    /// operations only, never across an await).
    waiting: Mutex<WaitingBodies>,
}

impl Engine {
    pub fn new(
        ledger: Arc<Ledger>,
        sender: Sender,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            gates: Gates::new(config.max_in_flight, config.per_webhook),
            ledger,
            sender,
            clock,
            config,
            running: watch::Sender::new(0),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            metrics: Metrics::new(),
            waiting: Mutex::new(WaitingBodies::default()),
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stores the event and enqueues one delivery per matching active webhook, with its first
    /// `attempted` record, in one commit; then starts the first attempts.
    pub async fn publish(self: &Arc<Self>, req: Publish) -> Result<Published> {
        let body = serde_json::to_vec(&req.payload)
            .map_err(|e| LedgerError::Invalid(format!("payload: {e}")))?;
        let now = self.clock.now();
        let webhooks: Vec<WebhookId> = self
            .ledger
            .shared()
            .read_registry()
            .matching(&req.event_type)
            .map(|w| w.id)
            .collect();
        let mut attempting = Vec::with_capacity(webhooks.len());
        let mut first_attempts = Vec::with_capacity(webhooks.len());
        for w in &webhooks {
            // Without a ticket the delivery stays pending, due now, for the re-drive.
            if let Some(ticket) = self.gates.try_ticket(*w) {
                attempting.push(*w);
                first_attempts.push((DeliveryKey::new(*w, req.event_id), ticket));
            }
        }
        let commit = enqueue_commit(
            req.event_id,
            &req.event_type,
            &body,
            (&webhooks, &attempting),
            now,
        );
        // Kept before the commit, so a re-drive pass that starts a waiting delivery right
        // after it finds the body.
        let body = Arc::new(body);
        let waiting = webhooks.len() - attempting.len();
        self.waiting_bodies().keep(req.event_id, &body, waiting);
        let committed = self.ledger.commit(commit).await;
        if committed.is_err() {
            self.waiting_bodies().forget(req.event_id);
        }
        match committed {
            Ok(_) => {}
            Err(LedgerError::EventExists {
                same_body: true, ..
            }) => return self.original(req.event_id).await,
            Err(e) => return Err(e),
        }
        for (key, ticket) in first_attempts {
            self.spawn_attempt(key, 1, body.clone(), ticket);
        }
        Ok(Published {
            event_id: req.event_id,
            deliveries: webhooks,
            duplicate: false,
        })
    }

    /// The first answer to an event published again with the same body.
    async fn original(&self, event_id: EventId) -> Result<Published> {
        let reader = self.ledger.reader()?;
        let deliveries = blocking(move || reader.enqueued_webhooks(event_id)).await?;
        Ok(Published {
            event_id,
            deliveries,
            duplicate: true,
        })
    }

    /// Sends one signed test event (`webhook.test`) to `webhook` whatever its filter, recorded
    /// like any delivery (event, `enqueued`, `attempted`, outcome), and waits for the attempt:
    /// answers the event id and the outcome records. A failed test is retried on the schedule
    /// like any other delivery.
    pub async fn test_delivery(self: &Arc<Self>, webhook: WebhookId) -> Result<TestDelivery> {
        if !self.webhook_active(webhook) {
            return Err(LedgerError::Invalid(format!(
                "webhook {webhook} is not active"
            )));
        }
        let now = self.clock.now();
        let event_id = EventId::new();
        let payload = serde_json::json!({
            "type": TEST_EVENT_TYPE,
            "webhook_id": webhook,
            "sent_at": now,
        });
        let body = payload.to_string().into_bytes();
        // A test waits for its permits (its webhook's first), then records its attempt.
        let permits = self.gates.wait_permits(webhook).await;
        let commit = enqueue_commit(
            event_id,
            TEST_EVENT_TYPE,
            &body,
            (&[webhook], &[webhook]),
            now,
        );
        self.ledger.commit(commit).await?;
        let key = DeliveryKey::new(webhook, event_id);
        self.running.send_modify(|n| *n += 1);
        let outcome = self.send(key, &body, permits).await;
        let records = self.record(key, 1, outcome).await;
        self.running.send_modify(|n| *n -= 1);
        Ok(TestDelivery { event_id, records })
    }

    /// One re-drive pass: takes the deliveries due now that get a ticket (free slots, or a place
    /// ahead of them), records their `attempted` in one commit, and starts them. Returns how
    /// many started.
    pub async fn redrive_once(self: &Arc<Self>) -> Result<usize> {
        Ok(self.redrive_pass().await?.started)
    }

    async fn redrive_pass(self: &Arc<Self>) -> Result<Pass> {
        let open = self.gates.free() + self.gates.ahead_room();
        if open == 0 {
            return Ok(Pass {
                started: 0,
                blocked: true,
            });
        }
        // A webhook that can take nothing is skipped, however many rows it has due.
        let mut blocked = false;
        let due =
            self.ledger
                .shared()
                .read_projection()
                .due_fair(self.clock.now(), open, |webhook| {
                    let open = self.gates.open_for(webhook);
                    blocked |= open == 0;
                    open
                });
        let mut records = Vec::new();
        let mut tickets = Vec::new();
        for (key, live) in &due {
            let Live::Pending { attempts, .. } = live else {
                continue;
            };
            let Some(t) = self.gates.try_ticket(key.webhook_id) else {
                blocked = true;
                continue;
            };
            let attempt = attempts + 1;
            records.push(NewRecord::new(*key, RecordBody::Attempted { attempt }));
            tickets.push(t);
        }
        if records.is_empty() {
            return Ok(Pass {
                started: 0,
                blocked,
            });
        }
        let receipt = self
            .ledger
            .commit(Commit {
                records: records.clone(),
                ..Commit::default()
            })
            .await?;
        let bodies = self
            .bodies(records.iter().map(|r| r.key.event_id).collect())
            .await?;
        for (r, ticket) in records.iter().zip(tickets) {
            let RecordBody::Attempted { attempt } = r.body else {
                continue;
            };
            match bodies.get(&r.key.event_id) {
                Some(body) => self.spawn_attempt(r.key, attempt, body.clone(), ticket),
                None => self.spawn_missing_body(r.key, attempt),
            }
        }
        Ok(Pass {
            started: receipt.seqs.len(),
            blocked,
        })
    }

    /// The body of each delivery starting now (one id per delivery): kept since its publish,
    /// or read back from the events table.
    async fn bodies(&self, ids: Vec<EventId>) -> Result<HashMap<EventId, Arc<Vec<u8>>>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut waiting = self.waiting_bodies();
            for id in ids {
                match waiting.take(id) {
                    Some(body) => {
                        found.insert(id, body);
                    }
                    None if !found.contains_key(&id) => missing.push(id),
                    None => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.sort_unstable();
        missing.dedup();
        let reader = self.ledger.reader()?;
        let events = blocking(move || reader.events(&missing)).await?;
        found.extend(events.into_iter().map(|e| (e.event_id, Arc::new(e.body))));
        Ok(found)
    }

    fn waiting_bodies(&self) -> std::sync::MutexGuard<'_, WaitingBodies> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At startup: every delivery left `in_attempt` belonged to a process that died mid-attempt.
    /// Each gets `failed` (`abandoned`) with its backoff, or is dead-parked when that was its
    /// last attempt, so a payload that kills the process cannot loop forever.
    pub async fn recover_abandoned(&self) -> Result<usize> {
        let now = self.clock.now();
        let cut_off: Vec<(DeliveryKey, u16)> = self
            .ledger
            .state()
            .live_rows()
            .into_iter()
            .filter_map(|(k, l)| match l {
                Live::InAttempt { attempt } => Some((k, attempt)),
                Live::Pending { .. } => None,
            })
            .collect();
        let mut records = Vec::new();
        for (key, attempt) in &cut_off {
            let outcome = local_failure(
                ErrorClass::Abandoned,
                "the process stopped during the attempt",
            );
            let active = self.webhook_active(key.webhook_id);
            records.extend(self.outcome_records(*key, *attempt, outcome, now, active));
        }
        if !records.is_empty() {
            self.ledger
                .commit(Commit {
                    records,
                    ..Commit::default()
                })
                .await?;
        }
        Ok(cut_off.len())
    }

    /// Re-drives until `shutdown` turns true: sleeps until the earliest due time, or until a
    /// commit lands, whichever is first. Then waits for attempts in flight to be recorded.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut committed = self.ledger.shared().subscribe();
        let mut backoff = Backoff::new();
        while !*shutdown.borrow() {
            let (saturated, failed) = match self.redrive_pass().await {
                Ok(pass) => (pass.blocked, false),
                Err(e) => {
                    tracing::error!(error = %e, "re-drive pass failed");
                    (false, true)
                }
            };
            let next = self.ledger.shared().read_projection().next_due();
            // When due work waits for permits, nothing more can start before an outcome is
            // committed (permits return first), and that commit wakes the loop: no need to
            // wake for the due time.
            let wait = match next {
                Some(due) if !saturated => {
                    (due - self.clock.now()).to_std().unwrap_or(Duration::ZERO)
                }
                _ => Duration::from_secs(3600),
            };
            let wait = if failed {
                wait.max(backoff.next())
            } else {
                backoff = Backoff::new();
                wait.max(Duration::from_millis(1))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = committed.changed() => {}
                _ = shutdown.changed() => {}
                _ = self.wake.notified() => {}
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        self.drain().await;
    }

    /// Makes the re-drive loop look at the due index now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until every spawned attempt has recorded its outcome.
    pub async fn drain(&self) {
        let mut running = self.running.subscribe();
        let _ = running.wait_for(|n| *n == 0).await;
    }

    fn spawn_attempt(
        self: &Arc<Self>,
        key: DeliveryKey,
        attempt: u16,
        body: Arc<Vec<u8>>,
        ticket: Ticket,
    ) {
        self.running.send_modify(|n| *n += 1);
        let engine = self.clone();
        tokio::spawn(async move {
            let permits = ticket.permits().await;
            engine.attempt(key, attempt, &body, permits).await;
            engine.running.send_modify(|n| *n -= 1);
        });
    }

    /// An attempt whose event body is gone (expunged) fails at once, visibly.
    fn spawn_missing_body(self: &Arc<Self>, key: DeliveryKey, attempt: u16) {
        let outcome = local_failure(ErrorClass::Other, "the event body is missing");
        self.running.send_modify(|n| *n += 1);
        let engine = self.clone();
        tokio::spawn(async move {
            engine.record(key, attempt, outcome).await;
            engine.running.send_modify(|n| *n -= 1);
        });
    }

    async fn attempt(&self, key: DeliveryKey, attempt: u16, body: &[u8], permits: Permits) {
        let outcome = self.send(key, body, permits).await;
        // The permits are back before the outcome's commit wakes the re-drive loop, so the
        // loop never sees a stale "all busy" and sleeps past due work.
        self.record(key, attempt, outcome).await;
    }

    /// Sends one attempt; its permits are held until the answer (or failure) is in.
    async fn send(&self, key: DeliveryKey, body: &[u8], _permits: Permits) -> Outcome {
        let webhook = self
            .ledger
            .shared()
            .read_registry()
            .get(&key.webhook_id)
            .cloned();
        let now = self.clock.now();
        let Some(w) = webhook.filter(|w| w.active) else {
            return local_failure(ErrorClass::Other, "the webhook is not active");
        };
        let secrets = w.signing_secrets(now);
        let msg_id = key.event_id.to_string();
        let a = Attempt {
            url: &w.url,
            msg_id: &msg_id,
            body,
            secrets: &secrets,
            timestamp: now.timestamp(),
        };
        self.sender.send(&a, now).await
    }

    /// Commits an attempt's outcome records and answers them.
    async fn record(&self, key: DeliveryKey, attempt: u16, outcome: Outcome) -> Vec<RecordBody> {
        self.metrics.observe(&outcome);
        let active = self.webhook_active(key.webhook_id);
        let records = self.outcome_records(key, attempt, outcome, self.clock.now(), active);
        let bodies = records.iter().map(|r| r.body.clone()).collect();
        let mut backoff = Backoff::new();
        loop {
            let commit = Commit {
                records: records.clone(),
                ..Commit::default()
            };
            match self.ledger.commit(commit).await {
                Ok(_) => break,
                Err(e @ LedgerError::StorageUnavailable { .. })
                    if !self.stopping.load(Ordering::Relaxed) =>
                {
                    tracing::warn!(delivery = %key, error = %e, "could not record an attempt's outcome; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => {
                    // The delivery stays in_attempt in the log; a restart records it as abandoned.
                    tracing::error!(delivery = %key, error = %e, "could not record an attempt's outcome");
                    break;
                }
            }
        }
        bodies
    }

    fn webhook_active(&self, id: WebhookId) -> bool {
        self.ledger
            .shared()
            .read_registry()
            .get(&id)
            .is_some_and(|w| w.active)
    }

    /// The records an outcome becomes: the decision (next due time, dead or parked) is made
    /// here, once, and recorded.
    fn outcome_records(
        &self,
        key: DeliveryKey,
        attempt: u16,
        outcome: Outcome,
        now: Timestamp,
        webhook_active: bool,
    ) -> Vec<NewRecord> {
        outcome_records(
            &self.config.schedule,
            key,
            attempt,
            outcome,
            now,
            webhook_active,
            &mut fastrand::f64,
        )
    }

    /// Requeues one finished delivery (delivered, dead or parked) with a fresh budget.
    pub async fn redeliver(&self, key: DeliveryKey, reason: &str) -> Result<u64> {
        let reader = self.ledger.reader()?;
        let trail = blocking(move || reader.history(key)).await?;
        let from = match trail.last().map(|r| r.kind.as_str()) {
            Some("delivered") => Terminal::Delivered,
            Some("dead_parked") => Terminal::Dead,
            Some("parked") => Terminal::Parked,
            Some(_) => {
                return Err(LedgerError::Invalid(format!(
                    "delivery {key} is still pending or in an attempt"
                )))
            }
            None => return Err(LedgerError::UnknownDelivery(key)),
        };
        let body = RecordBody::Requeued {
            from,
            due_at: self.clock.now(),
            reason: reason.to_owned(),
        };
        let receipt = self
            .ledger
            .commit(Commit {
                records: vec![NewRecord::new(key, body)],
                ..Commit::default()
            })
            .await?;
        Ok(receipt.seqs[0])
    }
}

impl Engine {
    /// Requeues every dead or parked delivery of `webhook` that finished in `since..until`
    /// (a bulk recover) in one commit; answers how many.
    pub async fn recover(
        &self,
        webhook: WebhookId,
        since: Timestamp,
        until: Timestamp,
        reason: &str,
    ) -> Result<usize> {
        let reader = self.ledger.reader()?;
        let finished = blocking(move || reader.finished_in_window(webhook, since, until)).await?;
        let due_at = self.clock.now();
        let records: Vec<NewRecord> = finished
            .into_iter()
            .map(|(event_id, from)| {
                let body = RecordBody::Requeued {
                    from,
                    due_at,
                    reason: reason.to_owned(),
                };
                NewRecord::new(DeliveryKey::new(webhook, event_id), body)
            })
            .collect();
        if records.is_empty() {
            return Ok(0);
        }
        let receipt = self
            .ledger
            .commit(Commit {
                records,
                ..Commit::default()
            })
            .await?;
        self.wake();
        Ok(receipt.seqs.len())
    }
}

/// The growing wait between retries of a commit the disk refused: 50 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(50))
    }
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

/// What one re-drive pass did.
struct Pass {
    started: usize,
    /// Due work was left for lack of permits: an outcome's commit will free one.
    blocked: bool,
}

/// The event, and per webhook its `enqueued` record (and the first `attempted` for those in
/// `attempting`, whose permits are held): one commit.
fn enqueue_commit(
    event_id: EventId,
    event_type: &str,
    body: &[u8],
    (webhooks, attempting): (&[WebhookId], &[WebhookId]),
    now: Timestamp,
) -> Commit {
    let mut records = Vec::with_capacity(webhooks.len() * 2);
    for w in webhooks {
        let key = DeliveryKey::new(*w, event_id);
        records.push(NewRecord::new(key, RecordBody::Enqueued { due_at: now }));
        if attempting.contains(w) {
            records.push(NewRecord::new(key, RecordBody::Attempted { attempt: 1 }));
        }
    }
    Commit {
        events: vec![NewEvent {
            event_id,
            event_type: event_type.to_owned(),
            body: body.to_vec(),
        }],
        records,
        ..Commit::default()
    }
}

/// Runs blocking DuckDB reads off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Invalid(format!("a blocking read failed: {e}")))?
}
