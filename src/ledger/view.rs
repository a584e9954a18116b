//! Serializable views of the folded state, shared by the CLI, the API and the snapshot tests.

use serde::Serialize;

use super::projection::{Counts, Live, Projection};
use super::record::Timestamp;
use crate::ids::{EventId, WebhookId};

/// The queue as reconstructed at one point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
        let live = projection
            .live_rows()
            .into_iter()
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
