//! The single writer: typed refusals that write nothing, group commit with gapless seqs,
//! idempotent events, monotonic record time.

use std::sync::Arc;

use hookledger::ledger::record::{NewRecord, RecordBody, RecordKind};
use hookledger::ledger::writer::{Commit, NewEvent};
use hookledger::store::Store;
use hookledger::LedgerError;

use crate::common::*;

#[test]
fn an_invalid_transition_is_refused_with_a_typed_error_and_writes_nothing() {
    let mut t = TestLedger::new();
    t.publish(1, &[webhook(1)]).unwrap();
    let before = t.ledger().state();
    let err = t.append(key(1, 1), delivered(1)).unwrap_err();
    match err {
        LedgerError::InvalidTransition { key: k, record, .. } => {
            assert_eq!(k, key(1, 1));
            assert_eq!(record, RecordKind::Delivered);
        }
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
    assert_eq!(t.ledger().state(), before);
    t.reopen();
    assert_eq!(t.ledger().state(), before, "nothing reached the file");
}

#[test]
fn failed_after_delivered_is_refused() {
    let t = TestLedger::new();
    t.publish(1, &[webhook(1)]).unwrap();
    t.append(key(1, 1), attempted(1)).unwrap();
    t.append(key(1, 1), delivered(1)).unwrap();
    let err = t.append(key(1, 1), failed(1, 500, t.now())).unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
}

#[test]
fn enqueued_twice_for_one_delivery_is_refused_live_or_finished() {
    let t = TestLedger::new();
    let mut twice = publish_commit(1, &[webhook(1)], t.now());
    twice.records.push(twice.records[0].clone());
    let err = t.commit(twice).unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidTransition { .. }),
        "{err:?}"
    );
    assert_eq!(
        t.ledger().state().last_seq(),
        0,
        "the whole commit was refused"
    );

    t.publish(1, &[webhook(1)]).unwrap();
    t.append(key(1, 1), attempted(1)).unwrap();
    t.append(key(1, 1), delivered(1)).unwrap();
    // Finished deliveries are not in memory; the event's primary key still refuses it.
    let err = t.publish(1, &[webhook(1)]).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::EventExists {
                same_body: true,
                ..
            }
        ),
        "{err:?}"
    );
    let mut other_body = publish_commit(1, &[webhook(1)], t.now());
    other_body.events[0].body = b"{\"order\":999}".to_vec();
    let err = t.commit(other_body).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::EventExists {
                same_body: false,
                ..
            }
        ),
        "{err:?}"
    );
    let enqueue_without_event = Commit {
        records: vec![NewRecord::new(
            key(2, 1),
            RecordBody::Enqueued { due_at: t.now() },
        )],
        ..Commit::default()
    };
    assert!(t.commit(enqueue_without_event).is_err());
    assert_eq!(t.ledger().state().last_seq(), 3);
}

fn assert_refused_requeue(err: LedgerError, k: hookledger::ids::DeliveryKey, says: &str) {
    match err {
        LedgerError::InvalidTransition {
            key: got,
            record,
            from,
        } => {
            assert_eq!((got, record), (k, RecordKind::Requeued));
            assert!(from.contains(says), "{from}");
        }
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
}

#[test]
fn a_requeue_is_checked_against_its_own_deliverys_last_record() {
    use hookledger::ledger::record::Terminal;
    let mut t = TestLedger::new();
    one_delivered_one_dead(&t);
    for (round, n) in [("live", 3), ("after a reopen", 4)] {
        let wrong = t.append(key(1, 1), requeued(Terminal::Dead, t.now()));
        assert_refused_requeue(wrong.unwrap_err(), key(1, 1), "delivered, not dead");
        let wrong = t.append(key(1, 2), requeued(Terminal::Delivered, t.now()));
        assert_refused_requeue(wrong.unwrap_err(), key(1, 2), "dead, not delivered");
        let never = t.append(key(1, 9), requeued(Terminal::Dead, t.now()));
        assert_refused_requeue(never.unwrap_err(), key(1, 9), "never enqueued");
        t.publish(n, &[webhook(1)]).unwrap();
        let before = t.ledger().state();
        let live = t.append(key(1, n), requeued(Terminal::Dead, t.now()));
        assert_refused_requeue(live.unwrap_err(), key(1, n), "pending");
        assert_eq!(
            t.ledger().state(),
            before,
            "{round}: refusals wrote nothing"
        );
        if round == "live" {
            t.reopen();
        }
    }
    // The right states are accepted, each once: a requeued delivery is pending again.
    t.append(key(1, 1), requeued(Terminal::Delivered, t.now()))
        .unwrap();
    t.append(key(1, 2), requeued(Terminal::Dead, t.now()))
        .unwrap();
    let again = t.append(key(1, 1), requeued(Terminal::Delivered, t.now()));
    assert_refused_requeue(again.unwrap_err(), key(1, 1), "pending");
    assert!(t.ledger().verify().unwrap().ok());
}

#[test]
fn a_bulk_requeue_in_one_commit_is_checked_delivery_by_delivery() {
    use hookledger::ledger::record::Terminal;
    let t = TestLedger::new();
    one_delivered_one_dead(&t);
    let both = |first: Terminal| Commit {
        records: vec![
            NewRecord::new(key(1, 1), requeued(first, t.now())),
            NewRecord::new(key(1, 2), requeued(Terminal::Dead, t.now())),
        ],
        ..Commit::default()
    };
    let err = t.commit(both(Terminal::Dead)).unwrap_err();
    assert_refused_requeue(err, key(1, 1), "delivered, not dead");
    assert_eq!(
        t.ledger().state().counts().dead,
        1,
        "nothing of it was applied"
    );
    let receipt = t.commit(both(Terminal::Delivered)).unwrap();
    assert_eq!(receipt.seqs.len(), 2);
    assert_eq!(t.ledger().state().counts().pending, 2);
}

#[test]
fn one_refused_commit_does_not_disturb_the_others_in_its_batch() {
    let t = TestLedger::new();
    for n in 1..=3 {
        t.publish(n, &[webhook(1)]).unwrap();
    }
    // Submitted without waiting, so the writer takes them as one batch.
    let good_a = t.ledger().submit(Commit {
        records: vec![NewRecord::new(key(1, 1), attempted(1))],
        ..Commit::default()
    });
    let bad = t.ledger().submit(Commit {
        records: vec![
            NewRecord::new(key(1, 2), attempted(1)),
            NewRecord::new(key(1, 2), attempted(1)),
        ],
        ..Commit::default()
    });
    let good_b = t.ledger().submit(Commit {
        records: vec![NewRecord::new(key(1, 2), attempted(1))],
        ..Commit::default()
    });
    assert_eq!(good_a.blocking_recv().unwrap().unwrap().seqs, vec![4]);
    assert!(bad.blocking_recv().unwrap().is_err());
    assert_eq!(good_b.blocking_recv().unwrap().unwrap().seqs, vec![5]);
    assert!(t.ledger().verify().unwrap().ok());
}

#[test]
fn a_repeated_event_in_a_batch_is_refused_alone_and_the_rest_of_the_batch_commits() {
    let t = TestLedger::new();
    t.publish(1, &[webhook(1)]).unwrap();
    // Submitted without waiting, so the writer takes them as one batch: the primary key
    // refuses the first try, and the batch is committed again without the repeated event.
    let now = t.now();
    let new_a = t.ledger().submit(publish_commit(2, &[webhook(1)], now));
    let again = t.ledger().submit(publish_commit(1, &[webhook(1)], now));
    let new_b = t.ledger().submit(publish_commit(3, &[webhook(1)], now));
    assert!(new_a.blocking_recv().unwrap().is_ok());
    let err = again.blocking_recv().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::EventExists {
                same_body: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(new_b.blocking_recv().unwrap().is_ok());
    assert_eq!(t.ledger().state().counts().pending, 3);
    assert!(t.ledger().verify().unwrap().ok());
}

#[test]
fn concurrent_callers_share_commits_and_get_gapless_seqs() {
    let t = Arc::new(TestLedger::new());
    let threads = 32;
    let per_thread = 20u128;
    let handles: Vec<_> = (0..threads)
        .map(|th| {
            let t = t.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let n = th as u128 * 1000 + i;
                        t.publish(n, &[webhook(1), webhook(2)]).unwrap().seqs
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for h in handles {
        for seqs in h.join().unwrap() {
            assert_eq!(seqs.len(), 2);
            assert_eq!(seqs[1], seqs[0] + 1, "a caller's records are consecutive");
            all.extend(seqs);
        }
    }
    all.sort_unstable();
    let total = threads as u64 * per_thread as u64 * 2;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "gapless, no duplicates"
    );
    let links = t.ledger().reader().unwrap().links().unwrap();
    let commits = threads * per_thread as usize;
    assert!(
        links.len() < commits,
        "group commit: {} batches for {commits} commits",
        links.len()
    );
    assert!(t.ledger().verify().unwrap().ok());
}

#[test]
fn record_time_never_goes_backwards_even_when_the_clock_does() {
    let t = TestLedger::new();
    t.advance(100);
    let first = t.publish(1, &[webhook(1)]).unwrap().recorded_at;
    t.advance(-50);
    let second = t.publish(2, &[webhook(1)]).unwrap().recorded_at;
    assert_eq!(second, first);
    t.advance(60);
    assert!(t.publish(3, &[webhook(1)]).unwrap().recorded_at > first);
}

#[test]
fn event_bodies_are_stored_once_byte_for_byte() {
    let t = TestLedger::new();
    let body = vec![0xff, 0x00, b'{', b'}'];
    t.commit(Commit {
        events: vec![NewEvent {
            event_id: event(9),
            event_type: "raw".into(),
            body: body.clone(),
            ..Default::default()
        }],
        ..Commit::default()
    })
    .unwrap();
    let stored = t.ledger().reader().unwrap().events(&[event(9)]).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, body);
}

#[test]
fn every_transaction_is_counted_in_the_writers_pauses_and_a_commit_staging_refuses_is_not() {
    let t = TestLedger::new();
    let count = || t.ledger().writer_pauses().commits.snapshot().count();
    let before = count();
    t.publish(1, &[webhook(1)]).unwrap();
    t.append(key(1, 1), attempted(1)).unwrap();
    assert_eq!(count(), before + 2, "one transaction per commit");
    let after = t.ledger().writer_pauses().commits.snapshot();
    assert!(after.sum_us > 0 && after.max_us > 0, "{after:?}");
    // Refused by staging: nothing reaches the store, so no transaction is counted.
    t.append(key(1, 1), failed(1, 500, t.now())).unwrap();
    t.append(key(1, 1), delivered(1)).unwrap_err();
    assert_eq!(count(), before + 3);
}
