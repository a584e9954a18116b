//! The delivery engine: publish with fan-out, the inline first attempt, re-drive from the
//! projection's due index, and the outcome records.
//!
//! Invariants:
//! - An attempt starts only after its `attempted` record is durable, and the writer refuses a
//!   second `attempted` for a delivery already in an attempt, so one process never starts a
//!   delivery twice.
//! - Every outcome, whatever went wrong, becomes a record (`delivered`, or `failed` with its
//!   computed next due time, followed by `dead_parked` when the budget is spent or `parked` when
//!   the webhook is no longer active): no error can stall a delivery.
//! - Re-drive reads the due index, never the log; it wakes at the earliest due time or when a
//!   commit lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use super::backoff::RetrySchedule;
use super::sender::{Attempt, Outcome, Sender};
use crate::clock::Clock;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::projection::Live;
use crate::ledger::record::{ErrorClass, Failure, NewRecord, RecordBody, Terminal, Timestamp};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::Ledger;
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
    global: Arc<Semaphore>,
    per_webhook: Mutex<HashMap<WebhookId, Arc<Semaphore>>>,
    /// Attempts spawned and not yet recorded, for draining.
    running: watch::Sender<usize>,
    /// Wakes the re-drive loop early (for example after the clock was moved).
    wake: Notify,
}

impl Engine {
    pub fn new(
        ledger: Arc<Ledger>,
        sender: Sender,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            ledger,
            sender,
            clock,
            config,
            per_webhook: Mutex::new(HashMap::new()),
            running: watch::Sender::new(0),
            wake: Notify::new(),
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
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
        let mut records = Vec::with_capacity(webhooks.len() * 2);
        for w in &webhooks {
            let key = DeliveryKey::new(*w, req.event_id);
            records.push(NewRecord::new(key, RecordBody::Enqueued { due_at: now }));
            records.push(NewRecord::new(key, RecordBody::Attempted { attempt: 1 }));
        }
        let commit = Commit {
            events: vec![NewEvent {
                event_id: req.event_id,
                event_type: req.event_type.clone(),
                body: body.clone(),
            }],
            records,
            ..Commit::default()
        };
        match self.ledger.commit(commit).await {
            Ok(_) => {}
            Err(LedgerError::EventExists {
                same_body: true, ..
            }) => return self.original(req.event_id).await,
            Err(e) => return Err(e),
        }
        let body = Arc::new(body);
        for w in &webhooks {
            self.spawn_attempt(DeliveryKey::new(*w, req.event_id), 1, body.clone());
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

    /// One re-drive pass: takes the deliveries due now (as many as may run), records their
    /// `attempted` in one commit, and starts them. Returns how many started.
    pub async fn redrive_once(self: &Arc<Self>) -> Result<usize> {
        let limit = self.global.available_permits();
        let due = self
            .ledger
            .shared()
            .read_projection()
            .due(self.clock.now(), limit);
        if due.is_empty() {
            return Ok(0);
        }
        let records: Vec<NewRecord> = due
            .iter()
            .filter_map(|(key, live)| match live {
                Live::Pending { attempts, .. } => Some(NewRecord::new(
                    *key,
                    RecordBody::Attempted {
                        attempt: attempts + 1,
                    },
                )),
                Live::InAttempt { .. } => None,
            })
            .collect();
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
        for r in &records {
            let RecordBody::Attempted { attempt } = r.body else {
                continue;
            };
            match bodies.get(&r.key.event_id) {
                Some(body) => self.spawn_attempt(r.key, attempt, body.clone()),
                None => self.spawn_missing_body(r.key, attempt),
            }
        }
        Ok(receipt.seqs.len())
    }

    async fn bodies(&self, mut ids: Vec<EventId>) -> Result<HashMap<EventId, Arc<Vec<u8>>>> {
        ids.sort_unstable();
        ids.dedup();
        let reader = self.ledger.reader()?;
        let events = blocking(move || reader.events(&ids)).await?;
        Ok(events
            .into_iter()
            .map(|e| (e.event_id, Arc::new(e.body)))
            .collect())
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
        while !*shutdown.borrow() {
            if let Err(e) = self.redrive_once().await {
                tracing::error!(error = %e, "re-drive pass failed");
            }
            let next = self.ledger.shared().read_projection().next_due();
            // With every permit taken, nothing can start before an outcome is committed, and
            // that commit wakes the loop: no need to wake for the due time.
            let saturated = self.global.available_permits() == 0;
            let wait = match next {
                Some(due) if !saturated => {
                    (due - self.clock.now()).to_std().unwrap_or(Duration::ZERO)
                }
                _ => Duration::from_secs(3600),
            };
            let wait = wait.max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = committed.changed() => {}
                _ = shutdown.changed() => {}
                _ = self.wake.notified() => {}
            }
        }
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

    fn spawn_attempt(self: &Arc<Self>, key: DeliveryKey, attempt: u16, body: Arc<Vec<u8>>) {
        self.running.send_modify(|n| *n += 1);
        let engine = self.clone();
        tokio::spawn(async move {
            engine.attempt(key, attempt, &body).await;
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

    async fn attempt(&self, key: DeliveryKey, attempt: u16, body: &[u8]) {
        let outcome = self.send(key, body).await;
        // The permits are back before the outcome's commit wakes the re-drive loop, so the
        // loop never sees a stale "all busy" and sleeps past due work.
        self.record(key, attempt, outcome).await;
    }

    /// Sends one attempt under the global and the webhook's concurrency limits.
    async fn send(&self, key: DeliveryKey, body: &[u8]) -> Outcome {
        let _global = self.global.clone().acquire_owned().await;
        let _own = self.webhook_permit(key.webhook_id).acquire_owned().await;
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

    async fn record(&self, key: DeliveryKey, attempt: u16, outcome: Outcome) {
        let active = self.webhook_active(key.webhook_id);
        let records = self.outcome_records(key, attempt, outcome, self.clock.now(), active);
        let commit = Commit {
            records,
            ..Commit::default()
        };
        if let Err(e) = self.ledger.commit(commit).await {
            // The delivery stays in_attempt in the log; a restart records it as abandoned.
            tracing::error!(delivery = %key, error = %e, "could not record an attempt's outcome");
        }
    }

    fn webhook_active(&self, id: WebhookId) -> bool {
        self.ledger
            .shared()
            .read_registry()
            .get(&id)
            .is_some_and(|w| w.active)
    }

    fn webhook_permit(&self, id: WebhookId) -> Arc<Semaphore> {
        let mut map = self.per_webhook.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_webhook.max(1))))
            .clone()
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
            None => return Err(LedgerError::NoDelivery { key }),
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

/// The pure core of [`Engine::record`]: what an attempt's outcome appends.
pub fn outcome_records(
    schedule: &RetrySchedule,
    key: DeliveryKey,
    attempt: u16,
    outcome: Outcome,
    now: Timestamp,
    webhook_active: bool,
    rng: &mut impl FnMut() -> f64,
) -> Vec<NewRecord> {
    match outcome {
        Outcome::Delivered {
            status,
            duration_ms,
        } => {
            let body = RecordBody::Delivered {
                attempt,
                status,
                duration_ms,
            };
            vec![NewRecord::new(key, body)]
        }
        Outcome::Failed {
            status,
            class,
            error,
            duration_ms,
            retry_after,
            response_body,
        } => {
            let delay = schedule.next_delay(u32::from(attempt), retry_after, rng);
            let wait = delay.and_then(|d| chrono::Duration::from_std(d).ok());
            let failure = Failure {
                attempt,
                status,
                error_class: class,
                error,
                duration_ms,
                next_due_at: now + wait.unwrap_or_default(),
                response_body,
            };
            failed_records(key, failure, delay.is_none(), webhook_active)
        }
    }
}

/// `failed`, then `parked` if the webhook is no longer active, else `dead_parked` if that was
/// the last attempt of the budget.
fn failed_records(
    key: DeliveryKey,
    failure: Failure,
    budget_spent: bool,
    webhook_active: bool,
) -> Vec<NewRecord> {
    let attempt = failure.attempt;
    let mut records = vec![NewRecord::new(key, RecordBody::Failed(failure))];
    if !webhook_active {
        let reason = "webhook deactivated".to_owned();
        records.push(NewRecord::new(key, RecordBody::Parked { reason }));
    } else if budget_spent {
        let reason = format!("attempt budget spent after {attempt} attempts");
        records.push(NewRecord::new(key, RecordBody::DeadParked { reason }));
    }
    records
}

/// A failure decided here, without a request to the receiver.
fn local_failure(class: ErrorClass, error: &str) -> Outcome {
    Outcome::Failed {
        status: None,
        class,
        error: error.to_owned(),
        duration_ms: 0,
        retry_after: None,
        response_body: None,
    }
}

/// Runs blocking DuckDB reads off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Invalid(format!("a blocking read failed: {e}")))?
}
