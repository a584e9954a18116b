//! Serializable views of the folded state and of single deliveries, shared by the CLI, the API
//! and the snapshot tests.

use serde::Serialize;

use super::projection::{Counts, Live, Projection};
use super::record::{RecordKind, Timestamp};
use crate::ids::{EventId, WebhookId};

/// The queue as reconstructed at one point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct QueueView {
    /// The last record folded.
    pub as_of_seq: u64,
    /// When that record was recorded.
    pub as_of: Option<Timestamp>,
    pub counts: Counts,
    /// Every live delivery, by (webhook, event).
    pub live: Vec<LiveRow>,
}

/// One live delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LiveRow {
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    /// `pending` or `in_attempt`.
    pub state: &'static str,
    /// Attempts made so far (for `in_attempt`: including the one in flight).
    pub attempts: u16,
    pub due_at: Option<Timestamp>,
}

impl QueueView {
    pub fn of(projection: &Projection) -> Self {
        Self::of_webhooks(projection, None)
    }

    /// The view restricted to deliveries of `webhooks` (an app's): its live rows, and counts of
    /// those rows plus `finished` (delivered, dead, parked counted in the log up to the same
    /// seq, see `DuckStore::finished_counts`).
    pub fn of_app(
        projection: &Projection,
        webhooks: &std::collections::HashSet<WebhookId>,
        finished: (u64, u64, u64),
    ) -> Self {
        let mut view = Self::of_webhooks(projection, Some(webhooks));
        let (delivered, dead, parked) = finished;
        view.counts = Counts {
            pending: view.live.iter().filter(|r| r.state == "pending").count() as u64,
            in_attempt: view.live.iter().filter(|r| r.state == "in_attempt").count() as u64,
            delivered,
            dead,
            parked,
        };
        view
    }

    fn of_webhooks(
        projection: &Projection,
        webhooks: Option<&std::collections::HashSet<WebhookId>>,
    ) -> Self {
        let live = projection
            .live_rows()
            .into_iter()
            .filter(|(key, _)| webhooks.is_none_or(|w| w.contains(&key.webhook_id)))
            .map(|(key, live)| {
                let (state, attempts, due_at) = match live {
                    Live::Pending { attempts, due_us } => (
                        "pending",
                        attempts,
                        chrono::DateTime::from_timestamp_micros(due_us),
                    ),
                    Live::InAttempt { attempt } => ("in_attempt", attempt, None),
                };
                LiveRow {
                    webhook_id: key.webhook_id,
                    event_id: key.event_id,
                    state,
                    attempts,
                    due_at,
                }
            })
            .collect();
        Self {
            as_of_seq: projection.last_seq(),
            as_of: projection.last_recorded_at(),
            counts: projection.counts(),
            live,
        }
    }
}

/// Where one delivery stands: live (`pending`, `in_attempt`) or finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    InAttempt,
    Delivered,
    Dead,
    Parked,
}

impl DeliveryState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::InAttempt,
        Self::Delivered,
        Self::Dead,
        Self::Parked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InAttempt => "in_attempt",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Parked => "parked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The state a delivery is in after its last record. (The SQL of
    /// [`crate::store::Store::deliveries`] makes the same mapping; a conformance test holds
    /// the two together.)
    pub fn after(last: RecordKind) -> Self {
        match last {
            RecordKind::Enqueued | RecordKind::Failed | RecordKind::Requeued => Self::Pending,
            RecordKind::Attempted => Self::InAttempt,
            RecordKind::Delivered => Self::Delivered,
            RecordKind::DeadParked => Self::Dead,
            RecordKind::Parked => Self::Parked,
        }
    }
}

/// One delivery as it stands, summarised from its records (the rows of `GET /v1/deliveries`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeliverySummary {
    pub webhook_id: WebhookId,
    /// The event's 16-byte key (answers show the producer's id beside it as `event_id`).
    #[serde(rename = "event_key")]
    pub event_id: EventId,
    pub state: DeliveryState,
    /// `attempted` records over the whole history (redeliveries included).
    pub attempts: u32,
    /// When it is next due; only for pending deliveries.
    pub due_at: Option<Timestamp>,
    /// The last HTTP status a receiver answered, if any did.
    pub last_status: Option<u16>,
    /// The error class of the last failure, if any.
    pub last_error_class: Option<String>,
    /// The seq of its `enqueued` record: its place in the listing (the cursor).
    pub enqueued_seq: u64,
    /// The seq and time of its last record.
    pub last_seq: u64,
    pub updated_at: Timestamp,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub webhook: Option<WebhookId>,
    /// Only deliveries of these webhooks (an app's), when set.
    pub webhooks: Option<Vec<WebhookId>>,
    pub event: Option<EventId>,
    pub state: Option<DeliveryState>,
    /// Only deliveries whose `enqueued` record was recorded at or after this instant.
    pub since: Option<Timestamp>,
    /// Only deliveries whose `enqueued` record was recorded before this instant.
    pub until: Option<Timestamp>,
    /// List the latest enqueued first; the cursor then names the deliveries enqueued *before*
    /// it (0: no cursor, start at the newest).
    pub newest_first: bool,
}
