//! Which committed facts make which operational events: pure, no I/O, no clock.
//!
//! A registry change or a ledger record is a *fact*; [`of_change`] and [`of_record`] say
//! whether it makes an operational event, and [`OpEvent::finish`] completes one that needs its
//! delivery's history (the last error, whether a delivery had failed before it was delivered).
//!
//! Invariants:
//! - No loops: a fact about an operational webhook (a change of it, a record of one of its
//!   deliveries) makes nothing.
//! - One fact makes at most one event, whose id ([`OpEvent::event_uuid`]) is a UUIDv8 of its
//!   kind and the fact's place (change or record seq): the same fact always names the same
//!   event, and its payload ([`OpEvent::payload`]) is built from the fact and its history only
//!   (never from the clock or the webhook's current state), so an emission repeated after a
//!   restart, or by another node, is the same event with the same body: a duplicate publish.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ids::{DeliveryKey, WebhookId};
use crate::ledger::record::{Record, RecordBody, Timestamp};
use crate::registry::{Change, ChangeRecord};

/// The kinds of operational events (their event types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    WebhookCreated,
    WebhookUpdated,
    WebhookDeactivated,
    WebhookAutoDisabled,
    DeliveryFailing,
    DeliveryDeadParked,
    DeliveryRecovered,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::WebhookCreated,
        Kind::WebhookUpdated,
        Kind::WebhookDeactivated,
        Kind::WebhookAutoDisabled,
        Kind::DeliveryFailing,
        Kind::DeliveryDeadParked,
        Kind::DeliveryRecovered,
    ];

    /// The event type operational webhooks receive.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::WebhookCreated => "webhook.created",
            Kind::WebhookUpdated => "webhook.updated",
            Kind::WebhookDeactivated => "webhook.deactivated",
            Kind::WebhookAutoDisabled => "webhook.auto_disabled",
            Kind::DeliveryFailing => "delivery.failing",
            Kind::DeliveryDeadParked => "delivery.dead_parked",
            Kind::DeliveryRecovered => "delivery.recovered",
        }
    }
}

/// Where the causing fact is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A `webhook_changes` row.
    Change(u64),
    /// A `webhook_deliveries` record.
    Record(u64),
}

/// An operational event decided from one fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpEvent {
    pub kind: Kind,
    pub cause: Cause,
    pub webhook: WebhookId,
    /// When the fact was recorded.
    pub at: Timestamp,
    /// The delivery, for `delivery.*` events.
    pub delivery: Option<DeliveryKey>,
    /// Kind-specific details from the fact (a JSON object).
    pub detail: Value,
    /// The last error of the delivery (or of the webhook, for `webhook.auto_disabled`).
    pub last_error: Option<String>,
    /// Whether [`OpEvent::finish`] must see the delivery's history first.
    pub needs_history: bool,
}

/// The operational event a registry change makes, if any. `operational` says whether a
/// webhook is operational (such a webhook's changes make nothing).
pub fn of_change(rec: &ChangeRecord, operational: impl Fn(&WebhookId) -> bool) -> Option<OpEvent> {
    if rec.change.is_app_change() || operational(&rec.webhook_id) {
        return None;
    }
    let (kind, detail, last_error) = match rec.change.bare() {
        Change::Created {
            url, event_types, ..
        } => (
            Kind::WebhookCreated,
            json!({ "url": url, "event_types": event_types }),
            None,
        ),
        Change::Updated {
            url,
            event_types,
            description,
            active,
            payload_format,
        } => {
            let mut changed = Vec::new();
            for (name, set) in [
                ("url", url.is_some()),
                ("event_types", event_types.is_some()),
                ("description", description.is_some()),
                ("active", active.is_some()),
                ("payload_format", payload_format.is_some()),
            ] {
                if set {
                    changed.push(name);
                }
            }
            let kind = if *active == Some(false) {
                Kind::WebhookDeactivated
            } else {
                Kind::WebhookUpdated
            };
            (kind, json!({ "changed": changed, "url": url }), None)
        }
        Change::SecretRotated { .. } => {
            (Kind::WebhookUpdated, json!({ "changed": ["secret"] }), None)
        }
        Change::Deactivated { reason } => {
            (Kind::WebhookDeactivated, json!({ "reason": reason }), None)
        }
        Change::AutoDisabled {
            first_failure,
            failures,
            last_error,
        } => (
            Kind::WebhookAutoDisabled,
            json!({ "first_failure": first_failure, "failures": failures }),
            Some(last_error.clone()),
        ),
        // Options come with the `created` or `updated` change of the same request; a re-seal
        // changes nothing about what signs.
        Change::Configured(_) | Change::SecretResealed { .. } => return None,
        _ => return None,
    };
    Some(OpEvent {
        kind,
        cause: Cause::Change(rec.seq),
        webhook: rec.webhook_id,
        at: rec.recorded_at,
        delivery: None,
        detail,
        last_error,
        needs_history: false,
    })
}

/// The operational event a ledger record makes, if any: `failed` at attempt `failing_after`
/// (`delivery.failing`), `dead_parked`, and `delivered` after attempt 1 (a candidate for
/// `delivery.recovered`, which [`OpEvent::finish`] confirms from the history).
pub fn of_record(
    rec: &Record,
    failing_after: u16,
    operational: impl Fn(&WebhookId) -> bool,
) -> Option<OpEvent> {
    if operational(&rec.key.webhook_id) {
        return None;
    }
    let (kind, detail, last_error, needs_history) = match &rec.body {
        RecordBody::Failed(f) if f.attempt == failing_after => (
            Kind::DeliveryFailing,
            json!({ "attempt": f.attempt, "status": f.status }),
            Some(f.error.clone()),
            false,
        ),
        RecordBody::DeadParked { reason } => (
            Kind::DeliveryDeadParked,
            json!({ "reason": reason }),
            None,
            true,
        ),
        RecordBody::Delivered {
            attempt, status, ..
        } if *attempt > 1 => (
            Kind::DeliveryRecovered,
            json!({ "attempt": attempt, "status": status }),
            None,
            true,
        ),
        _ => return None,
    };
    Some(OpEvent {
        kind,
        cause: Cause::Record(rec.seq),
        webhook: rec.key.webhook_id,
        at: rec.recorded_at,
        delivery: Some(rec.key),
        detail,
        last_error,
        needs_history,
    })
}

impl OpEvent {
    /// Completes an event that needs its delivery's `history` (its records in seq order, at
    /// least up to the cause): the last error before the cause; a `delivery.recovered` is
    /// dropped unless an attempt failed since the delivery was last enqueued or requeued.
    pub fn finish(mut self, history: &[Record]) -> Option<Self> {
        if !self.needs_history {
            return Some(self);
        }
        let Cause::Record(seq) = self.cause else {
            return Some(self);
        };
        let mut last_error = None;
        for r in history.iter().filter(|r| r.seq < seq) {
            match &r.body {
                RecordBody::Failed(f) => last_error = Some(f.error.clone()),
                RecordBody::Enqueued { .. } | RecordBody::Requeued { .. }
                    if self.kind == Kind::DeliveryRecovered =>
                {
                    last_error = None
                }
                _ => {}
            }
        }
        if self.kind == Kind::DeliveryRecovered && last_error.is_none() {
            return None;
        }
        self.last_error = last_error;
        self.needs_history = false;
        Some(self)
    }

    /// The event's id: a UUIDv8 of its kind and its cause.
    pub fn event_uuid(&self) -> uuid::Uuid {
        let (source, seq) = match self.cause {
            Cause::Change(s) => ("change", s),
            Cause::Record(s) => ("record", s),
        };
        let mut h = Sha256::new();
        h.update(b"hookledger/operational/v1\0");
        h.update(self.kind.event_type().as_bytes());
        h.update([0u8]);
        h.update(source.as_bytes());
        h.update(seq.to_be_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// The payload operational webhooks receive; `event` is the delivery's event as
    /// `(producer id, event type)`, when it is known.
    pub fn payload(&self, event: Option<(&str, &str)>) -> Value {
        let (source, seq) = match self.cause {
            Cause::Change(s) => ("change_seq", s),
            Cause::Record(s) => ("record_seq", s),
        };
        let mut v = json!({
            "type": self.kind.event_type(),
            "at": self.at,
            "webhook_id": self.webhook,
            "last_error": self.last_error,
            "detail": self.detail,
            "cause": { source: seq },
        });
        if let Some(key) = &self.delivery {
            v["event"] = json!({
                "key": key.event_id.to_string(),
                "id": event.map(|e| e.0),
                "type": event.map(|e| e.1),
            });
        }
        v
    }
}

#[cfg(test)]
#[path = "facts_tests.rs"]
mod tests;
