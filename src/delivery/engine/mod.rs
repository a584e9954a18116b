//! The delivery engine: publish with fan-out, the inline first attempt, re-drive from the
//! projection's due index, and the outcome records.
//!
//! Invariants:
//! - An attempt starts only after its `attempted` record is durable, and the writer refuses a
//!   second `attempted` for a delivery already in an attempt, so one process never starts a
//!   delivery twice.
//! - `attempted` is recorded only for an attempt that holds its slots (global and per webhook,
//!   the webhook's sized by its own `max_in_flight` when it has one and resized when that
//!   changes: [`hold`]) or a place ahead of them, which its webhook's recent pace bounds (see
//!   [`super::gate`]). A delivery that gets neither stays `pending` in the log: a crash cannot
//!   burn the budget of deliveries queued behind a stalled webhook. Slots are held for the
//!   request only, not while its record is committed, so a fast webhook is not limited to one
//!   slot's worth of requests per commit.
//! - Every outcome, whatever went wrong, becomes a record (`delivered`, or `failed` with its
//!   computed next due time, followed by `dead_parked` when the budget is spent or `parked` when
//!   the webhook is no longer active): no error can stall a delivery.
//! - Re-drive reads the due index, never the log; it wakes at the earliest due time or when a
//!   commit lands.
//! - While the disk fails ([`LedgerError::StorageUnavailable`]), an attempt's outcome is kept
//!   and its commit retried with a growing delay, so the delivery does not stay `in_attempt`
//!   once the disk is back (at shutdown the retries stop and the next start records the
//!   attempt as abandoned); a failing re-drive pass backs off the same way instead of spinning.
//!
//! - Rate limits ([`super::rate`]): an attempt of a rate-limited webhook is recorded only with
//!   a token from its bucket, taken before its ticket ([`hold`]); without one the delivery
//!   stays `pending` and the loop wakes when the next token is due. Other webhooks have no
//!   bucket and are not held back.
//!
//! - FIFO webhooks ([`super::fifo`], [`fifo`]): one delivery at a time, the head of the
//!   webhook's line (publish order; a requeue goes to the back), and a failing head holds the
//!   ones behind it until it is delivered, dead-parked or parked.
//!
//! - Auto-disable ([`super::health`]): the outcomes it records feed each webhook's failing
//!   span, and every re-drive pass deactivates (and parks the pending deliveries of) the
//!   webhooks whose span is long enough by the injected clock ([`disable`]).
//!
//! Split by stage: [`publish`] (publish with fan-out, test deliveries), [`redrive`] (the due
//! index, abandoned attempts, redeliver and recover), [`attempt`] (sending one attempt and
//! recording its outcome) and [`takeover`] (another node's cut-off attempts, beside other
//! nodes on one database: `crate::cluster`).

mod attempt;
mod disable;
mod fifo;
mod hold;
mod publish;
mod redrive;
mod takeover;

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
    /// Attempts in flight at once, over all webhooks (`HOOKLEDGER_MAX_IN_FLIGHT`): protects
    /// this process's sockets and memory, and the machine.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one webhook without a `max_in_flight` of its own
    /// (`HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`): protects the receivers.
    pub per_webhook: usize,
}

/// The default of [`EngineConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// The default of [`EngineConfig::per_webhook`].
pub const DEFAULT_MAX_IN_FLIGHT_PER_WEBHOOK: usize = 16;

/// The operations settings beside [`EngineConfig`] (see [`Engine::with_ops`]); the default
/// turns them all off, which is what [`Engine::new`] runs with.
#[derive(Clone, Debug, Default)]
pub struct OpsConfig {
    /// Seals the secrets of registry changes and opens stored ones to sign (`None`: secrets
    /// are stored as given, as before sealing existed).
    pub keyring: Option<Arc<crate::secrets::Keyring>>,
    /// When a webhook failing for long is deactivated ([`super::health`]).
    pub disable: super::health::DisablePolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            per_webhook: DEFAULT_MAX_IN_FLIGHT_PER_WEBHOOK,
        }
    }
}

/// A publish request: the payload is serialised once into the stored body, from which every
/// attempt builds the same bytes ([`super::envelope`]).
#[derive(Clone, Debug)]
pub struct Publish {
    /// The app the event is published to: only its webhooks receive it.
    pub app: crate::ids::AppUid,
    /// The producer's own id (`None`: a new UUIDv7).
    pub producer_id: Option<crate::ids::ProducerId>,
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl Publish {
    /// A publish to the default app.
    pub fn new(
        producer_id: Option<crate::ids::ProducerId>,
        event_type: String,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            app: crate::ids::AppUid::default_app(),
            producer_id,
            event_type,
            payload,
        }
    }
}

/// The event type of [`Engine::test_delivery`].
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// The answer to a test delivery: its event and the outcome records it appended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TestDelivery {
    /// The producer id of the test event (a UUID).
    pub event_id: String,
    /// Its 16-byte key in the ledger.
    #[serde(skip)]
    pub key: EventId,
    pub records: Vec<RecordBody>,
}

/// The answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The producer's id, as stored with the event.
    pub event_id: String,
    /// The event's 16-byte key in the ledger.
    #[serde(skip)]
    pub key: EventId,
    #[serde(skip)]
    pub app: crate::ids::AppUid,
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
    ops: OpsConfig,
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
    /// Each webhook's failing span, for auto-disable (std Mutex, never held across an await).
    health: Mutex<super::health::Health>,
    /// The rate-limited webhooks' token buckets (std Mutex, never held across an await).
    rates: Mutex<super::rate::Buckets>,
    /// The FIFO webhooks' lines (std Mutex, never held across an await).
    lines: Mutex<super::fifo::Lines>,
    /// The registry seq the gates were last resized at ([`Engine::apply_limits`]).
    limits_at: std::sync::atomic::AtomicU64,
}

impl Engine {
    pub fn new(
        ledger: Arc<Ledger>,
        sender: Sender,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Self::with_ops(ledger, sender, clock, config, OpsConfig::default())
    }

    /// An engine with operations settings (sealing, auto-disable).
    pub fn with_ops(
        ledger: Arc<Ledger>,
        sender: Sender,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        ops: OpsConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            gates: Gates::new(config.max_in_flight, config.per_webhook),
            ledger,
            sender,
            clock,
            config,
            ops,
            running: watch::Sender::new(0),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            metrics: Metrics::new(),
            waiting: Mutex::new(WaitingBodies::default()),
            health: Mutex::new(Default::default()),
            rates: Mutex::new(Default::default()),
            lines: Mutex::new(Default::default()),
            limits_at: Default::default(),
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `change` with its secret sealed under the current main key, when there is a key ring:
    /// what every registry change from the API goes through before its commit.
    pub fn seal_change(&self, change: crate::registry::Change) -> crate::registry::Change {
        match &self.ops.keyring {
            Some(ring) => ring.seal_change(change),
            None => change,
        }
    }

    /// Re-drives until `shutdown` turns true: sleeps until the earliest due time, or until a
    /// commit lands, whichever is first. Then waits for attempts in flight to be recorded.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.load_health().await {
            tracing::error!(error = %e, "could not fold the webhooks' failing spans");
        }
        let mut committed = self.ledger.shared().subscribe();
        let mut backoff = Backoff::new();
        while !*shutdown.borrow() {
            if let Err(e) = self.take_over().await {
                tracing::error!(error = %e, "could not abandon a stopped node's attempts");
            }
            let (saturated, failed, retry_at, held) = match self.redrive_pass().await {
                Ok(pass) => (pass.blocked || pass.held, false, pass.retry_at, pass.held),
                Err(e) => {
                    tracing::error!(error = %e, "re-drive pass failed");
                    (false, true, None, false)
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
            // Work held by time (a rate limit's next token) wakes the loop when it can go.
            let wait = match retry_at {
                Some(at) => wait.min((at - self.clock.now()).to_std().unwrap_or(Duration::ZERO)),
                None => wait,
            };
            // Rows held behind a FIFO head keep the earliest due time at now: the loop polls
            // instead of sleeping an hour past other webhooks' due work.
            let wait = if held { wait.min(HOLD_POLL) } else { wait };
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

    /// Drops an expunged event's body from the memory kept for waiting deliveries.
    pub fn forget_body(&self, event: EventId) {
        self.waiting_bodies().forget(event);
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
}

/// How long the loop sleeps at most while deliveries are held behind a FIFO head.
const HOLD_POLL: Duration = Duration::from_millis(200);

/// The growing wait between retries of a commit the disk refused: 50 ms doubling to 5 s.
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(Duration::from_millis(50))
    }
    pub(super) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

/// What one re-drive pass did.
pub(super) struct Pass {
    pub(super) started: usize,
    /// Due work was left for lack of permits (an outcome's commit will free one) or held by
    /// a rate limit (then `retry_at` says when).
    pub(super) blocked: bool,
    /// The earliest time work held back by a rate limit or a FIFO head's retry can go.
    pub(super) retry_at: Option<Timestamp>,
    /// Deliveries wait behind a FIFO head.
    pub(super) held: bool,
}

/// The event, and per webhook its `enqueued` record (and the first `attempted` for those in
/// `attempting`, whose permits are held): one commit.
pub(super) fn enqueue_commit(
    event: NewEvent,
    (webhooks, attempting): (&[WebhookId], &[WebhookId]),
    now: Timestamp,
) -> Commit {
    let mut records = Vec::with_capacity(webhooks.len() * 2);
    for w in webhooks {
        let key = DeliveryKey::new(*w, event.event_id);
        records.push(NewRecord::new(key, RecordBody::Enqueued { due_at: now }));
        if attempting.contains(w) {
            records.push(NewRecord::new(key, RecordBody::Attempted { attempt: 1 }));
        }
    }
    Commit {
        events: vec![event],
        records,
        ..Commit::default()
    }
}

/// Runs blocking DuckDB reads off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Invalid(format!("a blocking read failed: {e}")))?
}
