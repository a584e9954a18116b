//! The what-if core on hand-made records: no database, no clock.

use chrono::DateTime;
use uuid::Uuid;

use super::*;
use crate::delivery::backoff::RetrySchedule;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{ErrorClass, Failure, Record, RecordBody, Terminal, Timestamp};

const MIN: i64 = 60;

fn at(secs: i64) -> Timestamp {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

fn key(e: u128) -> DeliveryKey {
    DeliveryKey::new(WebhookId(Uuid::from_u128(1)), EventId(Uuid::from_u128(e)))
}

#[derive(Default)]
struct Log(Vec<Record>);

impl Log {
    fn push(&mut self, secs: i64, key: DeliveryKey, body: RecordBody) -> &mut Self {
        let seq = self.0.len() as u64 + 1;
        self.0.push(Record {
            seq,
            recorded_at: at(secs),
            key,
            body,
        });
        self
    }
    fn enqueue(&mut self, secs: i64, k: DeliveryKey) -> &mut Self {
        self.push(secs, k, RecordBody::Enqueued { due_at: at(secs) })
    }
    fn attempt(&mut self, secs: i64, k: DeliveryKey, n: u16, up: bool, next: i64) -> &mut Self {
        self.push(secs, k, RecordBody::Attempted { attempt: n });
        if up {
            self.push(
                secs,
                k,
                RecordBody::Delivered {
                    attempt: n,
                    status: 200,
                    duration_ms: 1,
                },
            )
        } else {
            self.push(
                secs,
                k,
                RecordBody::Failed(Failure {
                    attempt: n,
                    status: Some(503),
                    error_class: ErrorClass::Status,
                    error: "HTTP 503".into(),
                    duration_ms: 1,
                    next_due_at: at(next),
                    response_body: None,
                }),
            )
        }
    }
}

fn query(schedule: &str, budget: Option<u32>) -> Query {
    let policy = Policy {
        schedule: RetrySchedule::parse(schedule).unwrap(),
        budget,
    };
    Query::new(Scope::default(), policy, 100).unwrap()
}

/// Delivery 1 fails at 0 and 10 min and is delivered at 30 min (`10m,20m`); delivery 2 is
/// delivered at once at 40 min.
fn two_deliveries() -> Log {
    let mut log = Log::default();
    let (a, b) = (key(1), key(2));
    log.enqueue(0, a).attempt(0, a, 1, false, 10 * MIN);
    log.attempt(10 * MIN, a, 2, false, 30 * MIN);
    log.attempt(30 * MIN, a, 3, true, 0);
    log.enqueue(40 * MIN, b).attempt(40 * MIN, b, 1, true, 0);
    log
}

#[test]
fn the_recorded_schedule_replays_to_the_recorded_outcome() {
    let log = two_deliveries();
    let r = analyse(&log.0, &query("10m,20m", None));
    assert_eq!(r.deliveries, 2);
    assert_eq!(r.actual.delivered, 2);
    assert_eq!(r.optimistic, r.actual);
    assert_eq!(r.pessimistic, r.actual);
    assert_eq!(r.changed_total, 0);
    assert_eq!(r.actual.attempts, 4);
    assert_eq!(r.actual.time_to_delivery_ms.unwrap().max, 30 * 60 * 1000);
}

#[test]
fn a_shorter_budget_kills_and_a_gap_gives_two_bounds() {
    let log = two_deliveries();
    // One retry after 10 min: down then, so dead, whatever the bound.
    let r = analyse(&log.0, &query("10m", None));
    assert_eq!((r.optimistic.dead, r.pessimistic.dead), (1, 1));
    assert_eq!(r.changed_total, 1);
    assert_eq!(r.changed[0].event_id, key(1).event_id);
    // A retry at 20 min falls between a failure (10) and a success (30): unknown.
    let r = analyse(&log.0, &query("20m", None));
    assert_eq!((r.optimistic.delivered, r.pessimistic.delivered), (2, 1));
    assert_eq!(r.changed[0].optimistic.fate, Fate::Delivered);
    assert_eq!(r.changed[0].pessimistic.fate, Fate::Dead);
}

#[test]
fn a_longer_budget_repeats_the_last_delay_and_attempts_past_the_ledger_are_pending() {
    let log = two_deliveries();
    // 10m, then 10m again: the third attempt at 20 min is in the unknown gap.
    let r = analyse(&log.0, &query("10m", Some(3)));
    assert_eq!(r.policy.budget, 3);
    assert_eq!((r.optimistic.delivered, r.pessimistic.dead), (2, 1));
    // A retry after 2 h falls after the ledger's last record (40 min): not simulated.
    let r = analyse(&log.0, &query("2h", None));
    assert_eq!((r.optimistic.pending, r.pessimistic.pending), (1, 1));
}

#[test]
fn parks_and_requeues_are_taken_as_recorded() {
    let mut log = Log::default();
    let (a, b) = (key(1), key(2));
    // a: fails, parked at 5 min before its retry (due at 10 min).
    log.enqueue(0, a).attempt(0, a, 1, false, 10 * MIN);
    log.push(
        5 * MIN,
        a,
        RecordBody::Parked {
            reason: "deactivated".into(),
        },
    );
    // b: fails at 1 and 11 min, dead, requeued at 50 min and delivered then.
    log.enqueue(MIN, b).attempt(MIN, b, 1, false, 11 * MIN);
    log.attempt(11 * MIN, b, 2, false, 11 * MIN);
    log.push(
        11 * MIN,
        b,
        RecordBody::DeadParked {
            reason: "budget".into(),
        },
    );
    let requeue = RecordBody::Requeued {
        from: Terminal::Dead,
        due_at: at(50 * MIN),
        reason: "recover".into(),
    };
    log.push(50 * MIN, b, requeue)
        .attempt(50 * MIN, b, 1, true, 0);
    let r = analyse(&log.0, &query("10m", None));
    assert_eq!(
        (r.actual.parked, r.actual.delivered, r.actual.attempts),
        (1, 1, 4)
    );
    assert_eq!(r.optimistic, r.actual, "{r:#?}");
    assert_eq!(r.pessimistic, r.actual);
    // `30m`: a is still parked before its retry. b's retry at 31 min falls between a failure
    // (11) and a success (50): optimistic delivers it then, so the recover never lifts it;
    // pessimistic leaves it dead, the recover requeues it and it is delivered at 50 min.
    let r = analyse(&log.0, &query("30m", None));
    for side in [&r.optimistic, &r.pessimistic] {
        assert_eq!((side.parked, side.delivered), (1, 1), "{r:#?}");
    }
    assert_eq!(
        r.optimistic.time_to_delivery_ms.unwrap().max,
        30 * 60 * 1000
    );
    assert_eq!(
        r.pessimistic.time_to_delivery_ms.unwrap().max,
        49 * 60 * 1000
    );
    assert_eq!((r.optimistic.attempts, r.pessimistic.attempts), (3, 4));
    assert_eq!(r.changed_total, 0, "same fates, other times");
}

#[test]
fn the_window_and_the_webhook_choose_the_deliveries() {
    let log = two_deliveries();
    let mut q = query("10m,20m", None);
    q.scope.since = Some(at(MIN));
    let r = analyse(&log.0, &q);
    assert_eq!(r.deliveries, 1, "only the one enqueued at 40 min");
    q.scope = Scope {
        webhook: Some(WebhookId(Uuid::from_u128(9))),
        ..Scope::default()
    };
    assert_eq!(analyse(&log.0, &q).deliveries, 0);
    assert_eq!(analyse(&log.0, &q).records, 0);
}

#[test]
fn a_window_that_ends_before_it_starts_or_a_zero_budget_is_refused_naming_the_field() {
    let policy = Policy::new(RetrySchedule::default());
    let scope = Scope {
        since: Some(at(10)),
        until: Some(at(0)),
        webhook: None,
    };
    assert_eq!(
        Query::new(scope, policy.clone(), 1).unwrap_err().field,
        "until"
    );
    let zero = Policy {
        budget: Some(0),
        ..policy
    };
    assert_eq!(
        Query::new(Scope::default(), zero, 1).unwrap_err().field,
        "budget"
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let log = two_deliveries();
    let q = query("20m", None);
    let one = serde_json::to_vec(&analyse(&log.0, &q)).unwrap();
    let two = serde_json::to_vec(&analyse(&log.0, &q)).unwrap();
    assert_eq!(one, two);
    assert_eq!(
        render::render(&analyse(&log.0, &q)),
        render::render(&analyse(&log.0, &q))
    );
}
