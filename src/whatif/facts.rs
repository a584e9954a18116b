//! What a what-if needs from the ledger, gathered from its records in one pass: every
//! webhook's availability [`Timeline`] and, for each delivery enqueued in the window, what
//! actually happened to it (its fate, when, after how many attempts) and the operator actions
//! (parks, requeues) that a candidate policy takes as recorded.
//!
//! Invariant: pure (no I/O, no clock): [`Facts::push`] folds records in seq order, and memory
//! grows with the deliveries enqueued in the window and the webhooks' state changes, never with
//! the records of deliveries outside it. `abandoned` failures (the process died mid-attempt)
//! say nothing about the receiver and are not observations.

use std::collections::HashMap;

use serde::Serialize;

use super::availability::{Seen, Timeline};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{ErrorClass, Record, RecordBody, Terminal, Timestamp};

/// Where a delivery ended (or stands, at the end of the ledger).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Delivered,
    Dead,
    Parked,
    /// Still live when the ledger ends (or, simulated, its next attempt falls after it).
    Pending,
}

impl Fate {
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Dead => "dead",
            Fate::Parked => "parked",
            Fate::Pending => "pending",
        }
    }

    pub(crate) fn terminal(self) -> Option<Terminal> {
        match self {
            Fate::Delivered => Some(Terminal::Delivered),
            Fate::Dead => Some(Terminal::Dead),
            Fate::Parked => Some(Terminal::Parked),
            Fate::Pending => None,
        }
    }
}

/// An operator action on a delivery, replayed at its recorded time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Its webhook was deactivated: a pending delivery is parked.
    Park { at_us: i64 },
    /// Requeued with a fresh budget from `from`, due at `due_us`.
    Requeue {
        at_us: i64,
        due_us: i64,
        from: Terminal,
    },
}

impl Op {
    pub fn at_us(&self) -> i64 {
        match *self {
            Op::Park { at_us } | Op::Requeue { at_us, .. } => at_us,
        }
    }
}

/// One delivery enqueued in the window: what the ledger recorded for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub event_id: EventId,
    /// Index into [`Facts::webhooks`].
    pub webhook: u32,
    /// `recorded_at` of its `enqueued` record: where time to delivery counts from.
    pub enqueued_us: i64,
    /// When its first attempt was due.
    pub first_due_us: i64,
    pub fate: Fate,
    /// When it reached `fate` (for pending: when it was enqueued or last requeued).
    pub end_us: i64,
    /// Attempts recorded over all its lives (requeues included).
    pub attempts: u32,
}

/// The window and the webhook a what-if asks about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Scope {
    /// Deliveries enqueued at or after this instant (all when absent).
    pub since: Option<Timestamp>,
    /// ... and before this one (all when absent).
    pub until: Option<Timestamp>,
    /// Only this webhook's deliveries and observations.
    pub webhook: Option<WebhookId>,
}

impl Scope {
    fn enqueued_in(&self, at: Timestamp) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

/// Everything gathered from the records.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub scope: Scope,
    pub webhooks: Vec<WebhookId>,
    pub timelines: Vec<Timeline>,
    pub deliveries: Vec<Delivery>,
    /// Operator actions by delivery index, in time order (few deliveries have any).
    pub ops: HashMap<u32, Vec<Op>>,
    /// Recorded attempts of the window's deliveries, per (webhook index, minute since the epoch).
    pub actual_load: HashMap<(u32, i64), u32>,
    /// Records folded, and the last `recorded_at` seen: the simulation's horizon.
    pub records: u64,
    pub horizon_us: i64,
    webhook_index: HashMap<WebhookId, u32>,
    by_key: HashMap<DeliveryKey, u32>,
}

impl Facts {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            horizon_us: i64::MIN,
            ..Self::default()
        }
    }

    fn webhook(&mut self, id: WebhookId) -> u32 {
        if let Some(&i) = self.webhook_index.get(&id) {
            return i;
        }
        let i = self.webhooks.len() as u32;
        self.webhooks.push(id);
        self.timelines.push(Timeline::new());
        self.webhook_index.insert(id, i);
        i
    }

    /// Folds one record (records come in seq order).
    pub fn push(&mut self, record: &Record) {
        if self
            .scope
            .webhook
            .is_some_and(|w| w != record.key.webhook_id)
        {
            return;
        }
        self.records += 1;
        let at_us = record.recorded_at.timestamp_micros();
        self.horizon_us = self.horizon_us.max(at_us);
        let seen = match &record.body {
            RecordBody::Delivered { .. } => Some(Seen::Up),
            RecordBody::Failed(f) if f.error_class != ErrorClass::Abandoned => {
                Some(Seen::Down(f.error_class))
            }
            _ => None,
        };
        if let Some(seen) = seen {
            let w = self.webhook(record.key.webhook_id);
            self.timelines[w as usize].observe(at_us, seen);
        }
        if let RecordBody::Enqueued { due_at } = &record.body {
            if self.scope.enqueued_in(record.recorded_at) {
                let webhook = self.webhook(record.key.webhook_id);
                let index = self.deliveries.len() as u32;
                self.deliveries.push(Delivery {
                    event_id: record.key.event_id,
                    webhook,
                    enqueued_us: at_us,
                    first_due_us: due_at.timestamp_micros().max(at_us),
                    fate: Fate::Pending,
                    end_us: at_us,
                    attempts: 0,
                });
                self.by_key.insert(record.key, index);
            }
            return;
        }
        let Some(&index) = self.by_key.get(&record.key) else {
            return;
        };
        let d = &mut self.deliveries[index as usize];
        match &record.body {
            RecordBody::Attempted { .. } => {
                d.attempts += 1;
                *self
                    .actual_load
                    .entry((d.webhook, minute(at_us)))
                    .or_default() += 1;
            }
            RecordBody::Delivered { .. } => (d.fate, d.end_us) = (Fate::Delivered, at_us),
            RecordBody::DeadParked { .. } => (d.fate, d.end_us) = (Fate::Dead, at_us),
            RecordBody::Parked { .. } => {
                (d.fate, d.end_us) = (Fate::Parked, at_us);
                self.ops.entry(index).or_default().push(Op::Park { at_us });
            }
            RecordBody::Requeued { from, due_at, .. } => {
                (d.fate, d.end_us) = (Fate::Pending, at_us);
                let due_us = due_at.timestamp_micros().max(at_us);
                let op = Op::Requeue {
                    at_us,
                    due_us,
                    from: *from,
                };
                self.ops.entry(index).or_default().push(op);
            }
            RecordBody::Failed(_) | RecordBody::Enqueued { .. } => {}
        }
    }

    /// The delivery's key.
    pub fn key(&self, d: &Delivery) -> DeliveryKey {
        DeliveryKey::new(self.webhooks[d.webhook as usize], d.event_id)
    }
}

/// The minute (since the epoch) an instant falls in: the unit of receiver load.
pub fn minute(t_us: i64) -> i64 {
    t_us.div_euclid(60_000_000)
}
