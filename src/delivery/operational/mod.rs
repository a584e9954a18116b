//! Operational webhooks: hookledger's own events (`webhook.created`, `webhook.updated`,
//! `webhook.deactivated`, `webhook.auto_disabled`, `delivery.failing`, `delivery.dead_parked`,
//! `delivery.recovered`) delivered to the webhooks registered with `"operational": true`.
//!
//! [`facts`] decides, purely, which committed facts make which events; this module is the edge:
//! a [`Watcher`] follows the commits (the ledger's commit notifications, never a timer), reads
//! the facts after its cursor from the store, and publishes each event through the engine's
//! normal publish path ([`Engine::publish_operational`]), so it is signed, recorded and retried
//! like any delivery.
//!
//! Invariants:
//! - Operational events fan out to operational webhooks only, and published events never reach
//!   an operational webhook ([`Engine::publish_operational`]).
//! - No loops: facts about operational webhooks and their deliveries make nothing
//!   ([`facts`]).
//! - Exactly once in the ledger: an event's id is derived from its kind and its cause's seq
//!   and its body from the fact alone, so publishing it again (after a crash, or from a second
//!   node) is answered as a duplicate and writes nothing.
//! - Nothing committed is missed: the cursor (`operational_cursor` setting: last record seq,
//!   last change seq) is stored only after the events up to it were committed, and the
//!   watcher starts from it, so facts committed just before a crash get their event at the
//!   next start. A database without the setting starts at its end (no events for history).
//!   While no operational webhook is active, facts are passed over without reading them.

pub mod facts;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::engine::{Engine, Publish};
use crate::error::{LedgerError, Result};
use crate::ids::{AppUid, EventId, ProducerId, WebhookId};
use crate::ledger::writer::Commit;
use crate::store::Store;
use facts::OpEvent;

/// The setting that holds the watcher's cursor (`<record seq>:<change seq>`).
pub const CURSOR_SETTING: &str = "operational_cursor";

/// `delivery.failing` is sent when a delivery's attempt number this fails, by default.
pub const DEFAULT_FAILING_AFTER: u16 = 4;

/// The cursor is stored at least every this many facts passed over.
const SAVE_EVERY: u64 = 4096;

/// The last record and change seq whose facts were handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    record: u64,
    change: u64,
}

impl Cursor {
    fn parse(s: &str) -> Option<Self> {
        let (r, c) = s.split_once(':')?;
        Some(Self {
            record: r.parse().ok()?,
            change: c.parse().ok()?,
        })
    }
}

struct State {
    cursor: Option<Cursor>,
    /// Facts passed since the cursor was last stored.
    unsaved: u64,
}

/// Follows the commits of one engine's ledger and publishes the operational events.
pub struct Watcher {
    engine: Arc<Engine>,
    failing_after: u16,
    state: tokio::sync::Mutex<State>,
}

fn invalid(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Invalid(e.to_string())
}

impl Watcher {
    /// A watcher of `engine`'s ledger; `failing_after` is the attempt whose failure sends
    /// `delivery.failing` (at least 1).
    pub fn new(engine: Arc<Engine>, failing_after: u16) -> Arc<Self> {
        Arc::new(Self {
            engine,
            failing_after: failing_after.max(1),
            state: tokio::sync::Mutex::new(State {
                cursor: None,
                unsaved: 0,
            }),
        })
    }

    /// Catches up, then again after every commit, until `shutdown` turns true; a failed round
    /// is tried again after a growing delay (its cursor did not move).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut committed = self.engine.ledger().shared().subscribe();
        let mut delay = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let retry = match self.catch_up().await {
                Ok(_) => {
                    delay = Duration::from_millis(100);
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "operational events: catch-up failed; retrying");
                    delay = (delay * 2).min(Duration::from_secs(5));
                    Some(delay)
                }
            };
            tokio::select! {
                _ = committed.changed(), if retry.is_none() => {}
                _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
                _ = shutdown.changed() => {}
            }
        }
        let mut state = self.state.lock().await;
        if state.unsaved > 0 {
            if let Some(cursor) = state.cursor {
                if self.save(cursor).await.is_ok() {
                    state.unsaved = 0;
                }
            }
        }
    }

    /// Publishes the operational events of every fact committed after the cursor; answers how
    /// many it published (a repeated one counts too: it was a no-op).
    pub async fn catch_up(&self) -> Result<usize> {
        let mut state = self.state.lock().await;
        let from = match state.cursor {
            Some(c) => c,
            None => {
                let c = self.load_cursor().await?;
                state.cursor = Some(c);
                c
            }
        };
        let shared = self.engine.ledger().shared();
        let to = Cursor {
            record: shared.read_projection().last_seq(),
            change: shared.read_registry().last_seq(),
        };
        if to == from {
            return Ok(0);
        }
        let (operational, any_active) = operational_webhooks(&shared.read_registry());
        let events = if !any_active {
            Vec::new()
        } else {
            self.read_events(from, to, operational).await?
        };
        for (event, body) in &events {
            self.engine
                .publish_operational(Publish {
                    app: AppUid::default_app(),
                    producer_id: Some(ProducerId::of_uuid(EventId(event.event_uuid()))),
                    event_type: event.kind.event_type().to_owned(),
                    payload: body.clone(),
                })
                .await?;
        }
        state.cursor = Some(to);
        state.unsaved +=
            to.record.saturating_sub(from.record) + to.change.saturating_sub(from.change);
        if !events.is_empty() || state.unsaved >= SAVE_EVERY {
            self.save(to).await?;
            state.unsaved = 0;
        }
        Ok(events.len())
    }

    /// The stored cursor, or (first start) the ledger's end, stored at once.
    async fn load_cursor(&self) -> Result<Cursor> {
        let reader = self.engine.ledger().reader()?;
        let stored = tokio::task::spawn_blocking(move || reader.setting(CURSOR_SETTING))
            .await
            .map_err(invalid)??;
        if let Some(c) = stored.as_deref().and_then(Cursor::parse) {
            return Ok(c);
        }
        let shared = self.engine.ledger().shared();
        let end = Cursor {
            record: shared.read_projection().last_seq(),
            change: shared.read_registry().last_seq(),
        };
        self.save(end).await?;
        Ok(end)
    }

    async fn save(&self, c: Cursor) -> Result<()> {
        self.engine
            .ledger()
            .commit(Commit {
                settings: vec![(
                    CURSOR_SETTING.to_owned(),
                    format!("{}:{}", c.record, c.change),
                )],
                ..Commit::default()
            })
            .await?;
        Ok(())
    }

    /// The events of the facts in `(from, to]`, with their payloads (reads on a blocking
    /// thread: the store's client must not run on a runtime worker).
    async fn read_events(
        &self,
        from: Cursor,
        to: Cursor,
        operational: HashSet<WebhookId>,
    ) -> Result<Vec<(OpEvent, serde_json::Value)>> {
        let store = self.engine.ledger().reader()?;
        let failing_after = self.failing_after;
        tokio::task::spawn_blocking(move || {
            let is_op = |w: &WebhookId| operational.contains(w);
            let mut out = Vec::new();
            for row in store.changes_after(from.change)? {
                let change = row.into_change()?;
                if change.seq > to.change {
                    break;
                }
                out.extend(facts::of_change(&change, is_op));
            }
            if to.record > from.record {
                store.scan_records(from.record + 1, to.record, &mut |row| {
                    let rec = row.into_record()?;
                    out.extend(facts::of_record(&rec, failing_after, is_op));
                    Ok(())
                })?;
            }
            let mut finished = Vec::with_capacity(out.len());
            for e in out {
                let e = match e.delivery {
                    Some(key) if e.needs_history => {
                        let history = store
                            .history(key)?
                            .into_iter()
                            .map(|r| r.into_record())
                            .collect::<Result<Vec<_>>>()?;
                        e.finish(&history)
                    }
                    _ => Some(e),
                };
                finished.extend(e);
            }
            let ids: Vec<EventId> = finished
                .iter()
                .filter_map(|e| e.delivery.map(|k| k.event_id))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let named: HashMap<EventId, (String, String)> = if ids.is_empty() {
                HashMap::new()
            } else {
                store
                    .events(&ids)?
                    .into_iter()
                    .map(|e| (e.event_id, (e.producer_event_id(), e.event_type.clone())))
                    .collect()
            };
            Ok(finished
                .into_iter()
                .map(|e| {
                    let event = e
                        .delivery
                        .and_then(|k| named.get(&k.event_id))
                        .map(|(id, t)| (id.as_str(), t.as_str()));
                    let body = e.payload(event);
                    (e, body)
                })
                .collect())
        })
        .await
        .map_err(invalid)?
    }
}

/// The webhooks registered as operational (active or not: a fact about one makes nothing),
/// and whether one of them is active (else no event would reach anyone).
fn operational_webhooks(registry: &crate::registry::Registry) -> (HashSet<WebhookId>, bool) {
    let ops: Vec<_> = registry
        .all()
        .filter(|w| registry.options_of(&w.id).operational)
        .collect();
    let any_active = ops.iter().any(|w| w.active);
    (ops.into_iter().map(|w| w.id).collect(), any_active)
}
