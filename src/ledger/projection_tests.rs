//! Unit tests of the fold: every allowed transition, and every refused one.

use std::collections::HashMap;

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

/// The histories that put key 1 in each state the tables below start from.
fn prefixes() -> Vec<(&'static str, Vec<RecordBody>)> {
    vec![
        ("none", vec![]),
        ("pending", vec![enqueued(0)]),
        ("in_attempt", vec![enqueued(0), attempted(1)]),
        ("delivered", vec![enqueued(0), attempted(1), delivered(1)]),
        (
            "dead",
            vec![enqueued(0), attempted(1), failed(1, 1), dead()],
        ),
        ("parked", vec![enqueued(0), parked()]),
    ]
}

/// One record of every kind, with a requeue naming each terminal state.
fn candidates() -> Vec<RecordBody> {
    vec![
        enqueued(0),
        attempted(1),
        delivered(1),
        failed(1, 9),
        dead(),
        parked(),
        requeued(Terminal::Delivered, 9),
        requeued(Terminal::Dead, 9),
        requeued(Terminal::Parked, 9),
    ]
}

fn allowed(state: &str, body: &RecordBody) -> bool {
    use RecordKind as K;
    match (state, body) {
        (_, RecordBody::Requeued { from, .. }) => state == from.as_str(),
        _ => matches!(
            (state, body.kind()),
            ("none", K::Enqueued)
                | ("pending", K::Attempted | K::DeadParked | K::Parked)
                | ("in_attempt", K::Delivered | K::Failed)
        ),
    }
}

/// Key 1 after `prefix`, beside key 2 finished as `other` (so that every terminal counter a
/// wrong requeue could lean on is non-zero), and the finished states the writer would read
/// from the store for the keys that are not live.
fn two_deliveries(
    prefix: &[RecordBody],
    other: Terminal,
) -> (Projection, HashMap<DeliveryKey, Terminal>) {
    let other_history = match other {
        Terminal::Delivered => vec![enqueued(0), attempted(1), delivered(1)],
        Terminal::Dead => vec![enqueued(0), attempted(1), failed(1, 1), dead()],
        Terminal::Parked => vec![enqueued(0), parked()],
    };
    let mut p = Projection::new();
    let mut seq = 0;
    for (k, bodies) in [(key(2), &other_history[..]), (key(1), prefix)] {
        for body in bodies {
            seq += 1;
            p.apply(&Record {
                seq,
                recorded_at: t(seq as i64),
                key: k,
                body: body.clone(),
            })
            .unwrap();
        }
    }
    let mut finished = HashMap::from([(key(2), other)]);
    if let Some(t) = prefix.last().and_then(|b| Terminal::after(b.kind())) {
        finished.insert(key(1), t);
    }
    (p, finished)
}

/// The writer's check ([`Staging`]): every (state, record) pair outside the transition table is
/// refused, and a requeue is accepted only from the state its own delivery is in, whatever
/// other deliveries are counted in.
#[test]
fn staging_refuses_every_transition_outside_the_table() {
    for (state, prefix) in prefixes() {
        for other in [Terminal::Delivered, Terminal::Dead, Terminal::Parked] {
            for body in candidates() {
                let (p, finished) = two_deliveries(&prefix, other);
                let mut staging = Staging::new(&p, &finished);
                let result = staging.stage(key(1), &body);
                // The base projection forgets finished deliveries, and the writer refuses a
                // second `enqueued` by its event (an enqueue needs a new one); `verify` finds
                // it in SQL. Both are tested in tests/it.
                let forgotten = matches!(state, "delivered" | "dead" | "parked")
                    && body.kind() == RecordKind::Enqueued;
                assert_eq!(
                    result.is_ok(),
                    allowed(state, &body) || forgotten,
                    "{state} (other delivery {other:?}) + {body:?}: {result:?}"
                );
                if let Err(e) = result {
                    assert!(
                        matches!(e, LedgerError::InvalidTransition { key: k, .. } if k == key(1)),
                        "{e:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn staging_names_what_is_wrong_with_a_requeue() {
    let (p, finished) = two_deliveries(&[enqueued(0), attempted(1), delivered(1)], Terminal::Dead);
    let mut staging = Staging::new(&p, &finished);
    let wrong = staging
        .stage(key(1), &requeued(Terminal::Dead, 9))
        .unwrap_err();
    assert!(wrong.to_string().contains("delivered, not dead"), "{wrong}");
    let never = staging
        .stage(key(3), &requeued(Terminal::Dead, 9))
        .unwrap_err();
    assert!(never.to_string().contains("never enqueued"), "{never}");
}

#[test]
fn staging_follows_a_delivery_through_its_own_batch() {
    let (p, finished) = two_deliveries(&[enqueued(0), attempted(1)], Terminal::Parked);
    let mut staging = Staging::new(&p, &finished);
    staging.stage(key(1), &delivered(1)).unwrap();
    assert!(staging
        .stage(key(1), &requeued(Terminal::Parked, 9))
        .is_err());
    staging
        .stage(key(1), &requeued(Terminal::Delivered, 9))
        .unwrap();
    assert!(
        staging
            .stage(key(1), &requeued(Terminal::Delivered, 9))
            .is_err(),
        "a requeued delivery is pending again, not delivered"
    );
    staging
        .stage(key(2), &requeued(Terminal::Parked, 9))
        .unwrap();
}

/// The fold alone: it keeps no memory of finished deliveries, so a requeue is refused only when
/// no delivery at all is counted in the state it names. This is the documented limit that the
/// writer's lookup and `verify`'s SQL check close (tests/it/writer.rs, tests/it/tamper.rs).
#[test]
fn the_fold_refuses_a_requeue_only_when_no_delivery_is_in_that_state() {
    for (state, prefix) in prefixes() {
        for from in [Terminal::Delivered, Terminal::Dead, Terminal::Parked] {
            let mut bodies = prefix.clone();
            bodies.push(requeued(from, 50));
            let result = fold(&bodies);
            assert_eq!(result.is_ok(), state == from.as_str(), "{state} + {from:?}");
            if let Err(e) = result {
                assert!(
                    matches!(e, LedgerError::Corrupt { seq, .. } if seq == bodies.len() as u64)
                );
            }
        }
    }
}

/// The fold's own transitions (requeues aside, see above) follow the table.
#[test]
fn the_fold_refuses_every_other_transition_outside_the_table() {
    for (state, prefix) in prefixes() {
        for body in candidates() {
            if body.kind() == RecordKind::Requeued {
                continue;
            }
            let mut bodies = prefix.clone();
            bodies.push(body.clone());
            let result = fold(&bodies);
            let forgotten = matches!(state, "delivered" | "dead" | "parked")
                && body.kind() == RecordKind::Enqueued;
            assert_eq!(
                result.is_ok(),
                allowed(state, &body) || forgotten,
                "{state} + {:?}: {result:?}",
                body.kind()
            );
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
