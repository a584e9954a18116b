//! Unit tests of the fold: every allowed transition, and every refused one.

use chrono::DateTime;
use uuid::Uuid;

use super::*;
use crate::ids::{EventId, WebhookId};
use crate::ledger::record::{ErrorClass, Failure, RecordKind};

fn t(s: i64) -> Timestamp {
    DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
}

fn key(n: u128) -> DeliveryKey {
    DeliveryKey::new(WebhookId(Uuid::from_u128(1)), EventId(Uuid::from_u128(n)))
}

fn enqueued(at: i64) -> RecordBody {
    RecordBody::Enqueued { due_at: t(at) }
}
fn attempted(attempt: u16) -> RecordBody {
    RecordBody::Attempted { attempt }
}
fn delivered(attempt: u16) -> RecordBody {
    RecordBody::Delivered {
        attempt,
        status: 200,
        duration_ms: 3,
    }
}
fn failed(attempt: u16, next_due: i64) -> RecordBody {
    RecordBody::Failed(Failure {
        attempt,
        status: Some(500),
        error_class: ErrorClass::Status,
        error: "HTTP 500".into(),
        duration_ms: 3,
        next_due_at: t(next_due),
        response_body: None,
    })
}
fn dead() -> RecordBody {
    RecordBody::DeadParked {
        reason: "budget".into(),
    }
}
fn parked() -> RecordBody {
    RecordBody::Parked {
        reason: "deactivated".into(),
    }
}
fn requeued(from: Terminal, at: i64) -> RecordBody {
    RecordBody::Requeued {
        from,
        due_at: t(at),
        reason: "operator".into(),
    }
}

/// Folds bodies for key 1 in order, as records with consecutive seqs.
fn fold(bodies: &[RecordBody]) -> Result<Projection, LedgerError> {
    let mut p = Projection::new();
    for (i, body) in bodies.iter().enumerate() {
        p.apply(&Record {
            seq: i as u64 + 1,
            recorded_at: t(i as i64),
            key: key(1),
            body: body.clone(),
        })?;
    }
    Ok(p)
}

#[test]
fn enqueued_makes_a_pending_delivery_due_at_its_time() {
    let p = fold(&[enqueued(5)]).unwrap();
    assert_eq!(
        p.get(&key(1)),
        Some(Live::Pending {
            attempts: 0,
            due_us: t(5).timestamp_micros()
        })
    );
    assert_eq!(p.next_due(), Some(t(5)));
    assert_eq!(p.counts().pending, 1);
}

#[test]
fn attempted_moves_pending_into_an_attempt_and_out_of_the_due_index() {
    let p = fold(&[enqueued(0), attempted(1)]).unwrap();
    assert_eq!(p.get(&key(1)), Some(Live::InAttempt { attempt: 1 }));
    assert_eq!(p.next_due(), None);
    assert_eq!(p.counts().in_attempt, 1);
}

#[test]
fn delivered_ends_the_delivery_and_keeps_only_a_count() {
    let p = fold(&[enqueued(0), attempted(1), delivered(1)]).unwrap();
    assert_eq!(p.get(&key(1)), None);
    assert_eq!(p.live_len(), 0);
    assert_eq!(p.counts().delivered, 1);
}

#[test]
fn failed_returns_to_pending_at_the_recorded_due_time() {
    let p = fold(&[enqueued(0), attempted(1), failed(1, 300)]).unwrap();
    assert_eq!(
        p.get(&key(1)),
        Some(Live::Pending {
            attempts: 1,
            due_us: t(300).timestamp_micros()
        })
    );
    assert_eq!(p.next_due(), Some(t(300)));
}

#[test]
fn a_second_attempt_follows_a_failure() {
    let p = fold(&[
        enqueued(0),
        attempted(1),
        failed(1, 5),
        attempted(2),
        delivered(2),
    ])
    .unwrap();
    assert_eq!(p.counts().delivered, 1);
}

#[test]
fn dead_parked_and_parked_end_a_pending_delivery() {
    let p = fold(&[enqueued(0), attempted(1), failed(1, 5), dead()]).unwrap();
    assert_eq!((p.counts().dead, p.live_len(), p.next_due()), (1, 0, None));
    let p = fold(&[enqueued(0), parked()]).unwrap();
    assert_eq!(
        (p.counts().parked, p.live_len(), p.next_due()),
        (1, 0, None)
    );
}

#[test]
fn requeued_lifts_each_terminal_state_back_to_pending_with_a_fresh_budget() {
    let histories = [
        (
            Terminal::Delivered,
            vec![enqueued(0), attempted(1), delivered(1)],
        ),
        (
            Terminal::Dead,
            vec![enqueued(0), attempted(1), failed(1, 1), dead()],
        ),
        (Terminal::Parked, vec![enqueued(0), parked()]),
    ];
    for (from, mut bodies) in histories {
        bodies.push(requeued(from, 50));
        let p = fold(&bodies).unwrap();
        assert_eq!(
            p.get(&key(1)),
            Some(Live::Pending {
                attempts: 0,
                due_us: t(50).timestamp_micros()
            }),
            "{from:?}"
        );
        assert_eq!(
            p.counts(),
            Counts {
                pending: 1,
                ..Counts::default()
            },
            "{from:?}"
        );
    }
}

/// Every (state, record) pair not in the table is refused.
#[test]
fn every_transition_outside_the_table_is_refused() {
    let prefixes: Vec<(&str, Vec<RecordBody>)> = vec![
        ("none", vec![]),
        ("pending", vec![enqueued(0)]),
        ("in_attempt", vec![enqueued(0), attempted(1)]),
        ("delivered", vec![enqueued(0), attempted(1), delivered(1)]),
        ("parked", vec![enqueued(0), parked()]),
    ];
    let allowed = |state: &str, kind: RecordKind| {
        matches!(
            (state, kind),
            ("none", RecordKind::Enqueued)
                | ("pending", RecordKind::Attempted)
                | ("pending", RecordKind::DeadParked)
                | ("pending", RecordKind::Parked)
                | ("in_attempt", RecordKind::Delivered)
                | ("in_attempt", RecordKind::Failed)
                | ("delivered", RecordKind::Requeued)
                | ("parked", RecordKind::Requeued)
        )
    };
    let candidates = || {
        vec![
            enqueued(0),
            attempted(1),
            delivered(1),
            failed(1, 9),
            dead(),
            parked(),
            // A requeue must name the terminal state the delivery is in.
            requeued(Terminal::Delivered, 9),
            requeued(Terminal::Parked, 9),
        ]
    };
    for (state, prefix) in &prefixes {
        for body in candidates() {
            let mut bodies = prefix.clone();
            bodies.push(body.clone());
            let result = fold(&bodies);
            let requeue_matches = match (&body, *state) {
                (RecordBody::Requeued { from, .. }, "delivered") => *from == Terminal::Delivered,
                (RecordBody::Requeued { from, .. }, "parked") => *from == Terminal::Parked,
                _ => true,
            };
            // The fold forgets finished deliveries, so a second `enqueued` after one is not
            // visible here: the writer refuses it (an enqueue needs a new event) and `verify`
            // finds it in SQL; both are tested in tests/it.
            let forgotten =
                matches!(*state, "delivered" | "parked") && body.kind() == RecordKind::Enqueued;
            let expect_ok = (allowed(state, body.kind()) && requeue_matches) || forgotten;
            assert_eq!(
                result.is_ok(),
                expect_ok,
                "{state} + {:?}: {result:?}",
                body.kind()
            );
            if let Err(e) = result {
                assert!(
                    matches!(e, LedgerError::Corrupt { seq, .. } if seq == bodies.len() as u64)
                );
            }
        }
    }
}

#[test]
fn attempts_must_count_up_by_one_and_outcomes_name_the_attempt() {
    assert!(
        fold(&[enqueued(0), attempted(2)]).is_err(),
        "skipped attempt 1"
    );
    assert!(fold(&[enqueued(0), attempted(1), delivered(2)]).is_err());
    assert!(fold(&[enqueued(0), attempted(1), failed(2, 1)]).is_err());
    assert!(fold(&[enqueued(0), attempted(1), failed(1, 1), attempted(1)]).is_err());
}

#[test]
fn a_gap_in_seq_is_corruption() {
    let mut p = Projection::new();
    let err = p
        .apply(&Record {
            seq: 2,
            recorded_at: t(0),
            key: key(1),
            body: enqueued(0),
        })
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Corrupt { seq: 1, .. }),
        "names the missing seq"
    );
}

#[test]
fn the_due_index_answers_the_earliest_due_first_and_stops_at_now() {
    let mut p = Projection::new();
    for (i, due) in [30, 10, 20, 40].into_iter().enumerate() {
        p.apply(&Record {
            seq: i as u64 + 1,
            recorded_at: t(0),
            key: key(i as u128 + 1),
            body: enqueued(due),
        })
        .unwrap();
    }
    let due: Vec<_> = p.due(t(30), 10).into_iter().map(|(k, _)| k).collect();
    assert_eq!(due, vec![key(2), key(3), key(1)]);
    assert_eq!(p.due(t(30), 2).len(), 2);
    assert!(p.due(t(9), 10).is_empty());
    assert_eq!(p.next_due(), Some(t(10)));
}
