//! What an attempt's outcome appends to the ledger, decided once and recorded: `delivered`, or
//! `failed` with its computed next due time (backoff, jitter, Retry-After), followed by
//! `parked` when the webhook is no longer active or `dead_parked` when the budget is spent.
//! Pure: the clock reading and the random source come in as arguments.

use super::backoff::RetrySchedule;
use super::sender::Outcome;
use crate::ids::DeliveryKey;
use crate::ledger::record::{ErrorClass, Failure, NewRecord, RecordBody, Timestamp};

/// The pure core of [`super::engine::Engine`]'s outcome recording: what an attempt's outcome appends.
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
pub(super) fn local_failure(class: ErrorClass, error: &str) -> Outcome {
    Outcome::Failed {
        status: None,
        class,
        error: error.to_owned(),
        duration_ms: 0,
        retry_after: None,
        response_body: None,
    }
}
