//! Reconstructed scenarios pinned by insta snapshots (stored in the top-level `snapshots/`).
//! Each snapshot shows a delivery's audit trail and the queue state folded from the log after a
//! full rebuild; a reviewer reads the diff to see a behaviour change. Outcomes are recorded
//! through the engine's own decision ([`outcome_records`]: next due time, dead-park, reason),
//! so a snapshot shows what the program writes, not a history made up for the test.

use hookledger::cli::{render_record, render_state};
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::outcome::outcome_records;
use hookledger::delivery::sender::Outcome;
use hookledger::delivery::signing::Secret;
use hookledger::ids::DeliveryKey;
use hookledger::ledger::projection::Live;
use hookledger::ledger::record::{ErrorClass, RecordBody, Terminal};
use hookledger::ledger::view::QueueView;
use hookledger::ledger::writer::Commit;
use hookledger::registry::Change;

use crate::common::*;

/// The text a snapshot pins: the trail of `keys`, then the queue (after a reopen, so the
/// state shown is the one rebuilt from the file, and it must equal the live one).
fn report(t: &mut TestLedger, keys: &[DeliveryKey]) -> String {
    let live = t.ledger().state();
    t.reopen();
    assert_eq!(
        t.ledger().state(),
        live,
        "rebuilt state equals the live one"
    );
    assert!(t.ledger().verify().unwrap().ok());
    let mut out = String::new();
    for key in keys {
        out.push_str(&format!("history of {key}:\n"));
        for r in t.ledger().history(*key).unwrap() {
            out.push_str(&render_record(&r));
            out.push('\n');
        }
    }
    out.push_str("\nstate:\n");
    out.push_str(&render_state(&QueueView::of(&t.ledger().state())));
    out
}

#[test]
fn happy_path() {
    let mut t = TestLedger::new();
    let k = key(1, 1);
    t.publish(1, &[webhook(1)]).unwrap();
    t.append(k, attempted(1)).unwrap();
    t.advance(1);
    t.append(k, delivered(1)).unwrap();
    snapshot!("happy_path", report(&mut t, &[k]));
}

/// A receiver's answer as the sender reports it.
fn answered(status: u16, ms: u32) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Delivered {
            status,
            duration_ms: ms,
        };
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    Outcome::Failed {
        status: Some(status),
        class: ErrorClass::Status,
        error: format!("HTTP {status} {}", reason.unwrap_or_default()),
        duration_ms: ms,
        retry_after: None,
        response_body: Some("try later".into()),
    }
}

/// One attempt as the engine records it: `attempted`, then, once the attempt's time has
/// passed, the records [`outcome_records`] decides (jitter drawn at the middle of its range,
/// that is none), in one commit. After a failure the clock moves to the recorded next due time,
/// where re-drive would start the next attempt.
fn attempt(t: &TestLedger, schedule: &RetrySchedule, k: DeliveryKey, n: u16, outcome: Outcome) {
    t.append(k, attempted(n)).unwrap();
    let ms = match &outcome {
        Outcome::Delivered { duration_ms, .. } | Outcome::Failed { duration_ms, .. } => {
            *duration_ms
        }
    };
    t.clock
        .advance(chrono::Duration::milliseconds(i64::from(ms)));
    let records = outcome_records(schedule, k, n, outcome, t.now(), true, &mut || 0.5);
    t.commit(Commit {
        records,
        ..Commit::default()
    })
    .unwrap();
    if let Some(Live::Pending { due_us, .. }) = t.ledger().state().get(&k) {
        t.clock
            .set(chrono::DateTime::from_timestamp_micros(due_us).unwrap());
    }
}

#[test]
fn fail_fail_succeed() {
    let mut t = TestLedger::new();
    let k = key(1, 1);
    let schedule = RetrySchedule::default();
    t.publish(1, &[webhook(1)]).unwrap();
    attempt(&t, &schedule, k, 1, answered(503, 20));
    attempt(&t, &schedule, k, 2, answered(500, 20));
    attempt(&t, &schedule, k, 3, answered(200, 12));
    snapshot!("fail_fail_succeed", report(&mut t, &[k]));
}

/// Every attempt of a three-attempt budget (`10s,1m`) fails: the last failure is due at once
/// (no retry is left) and the delivery is dead-parked in the same commit.
fn dead_after_three(t: &TestLedger, k: DeliveryKey) {
    let schedule = RetrySchedule::parse("10s,1m").unwrap();
    for n in 1..=3 {
        attempt(t, &schedule, k, n, answered(500, 20));
    }
    assert_eq!(t.ledger().state().counts().dead, 1);
}

#[test]
fn dead_at_max() {
    let mut t = TestLedger::new();
    let k = key(1, 1);
    t.publish(1, &[webhook(1)]).unwrap();
    dead_after_three(&t, k);
    snapshot!("dead_at_max", report(&mut t, &[k]));
}

#[test]
fn parked_on_deactivation() {
    let mut t = TestLedger::new();
    let w = webhook(1);
    let created = Change::Created {
        url: "https://receiver.example/hook".into(),
        event_types: vec!["order".into()],
        description: None,
        secret: Secret::generate(),
        app: hookledger::ids::AppUid::default_app(),
        payload_format: Default::default(),
    };
    t.commit(Commit {
        changes: vec![(w, created)],
        ..Commit::default()
    })
    .unwrap();
    for n in 1..=3 {
        t.publish(n, &[w]).unwrap();
    }
    // Event 3 is mid-attempt when the webhook is deactivated: it is parked once its outcome
    // is in, not before.
    t.append(key(1, 3), attempted(1)).unwrap();
    t.advance(60);
    let receipt = t
        .commit(Commit {
            changes: vec![(
                w,
                Change::Deactivated {
                    reason: "removed by operator".into(),
                },
            )],
            park: Some((w, "webhook deactivated".into())),
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(receipt.parked, vec![key(1, 1), key(1, 2)]);
    assert!(!t.ledger().shared().read_registry().get(&w).unwrap().active);
    // The attempt's outcome arrives for an inactive webhook: `failed`, then `parked`.
    let records = outcome_records(
        &RetrySchedule::default(),
        key(1, 3),
        1,
        answered(500, 20),
        t.now(),
        false,
        &mut || 0.5,
    );
    t.commit(Commit {
        records,
        ..Commit::default()
    })
    .unwrap();
    snapshot!(
        "parked_on_deactivation",
        report(&mut t, &[key(1, 1), key(1, 3)])
    );
}

#[test]
fn requeued_from_dead_then_delivered() {
    let mut t = TestLedger::new();
    let k = key(1, 1);
    t.publish(1, &[webhook(1)]).unwrap();
    dead_after_three(&t, k);
    t.advance(3600);
    let redeliver = RecordBody::Requeued {
        from: Terminal::Dead,
        due_at: t.now(),
        reason: "redeliver requested through the API".into(),
    };
    t.append(k, redeliver).unwrap();
    attempt(&t, &RetrySchedule::default(), k, 1, answered(200, 12));
    snapshot!("requeued_from_dead_then_delivered", report(&mut t, &[k]));
}

/// A longer history over three webhooks; the state at its mid-point, by seq and by time.
#[test]
fn state_at_a_mid_point() {
    let t = TestLedger::new();
    let hooks = [webhook(1), webhook(2), webhook(3)];
    for n in 1..=4 {
        t.publish(n, &hooks).unwrap();
        t.advance(10);
    }
    for n in 1..=4 {
        t.append(key(1, n), attempted(1)).unwrap();
        t.append(key(1, n), delivered(1)).unwrap();
        t.append(key(2, n), attempted(1)).unwrap();
        t.append(
            key(2, n),
            failed(1, 429, t.now() + chrono::Duration::seconds(30)),
        )
        .unwrap();
    }
    let mid_seq = t.ledger().state().last_seq();
    let mid_time = t.now();
    t.advance(60);
    for n in 1..=4 {
        t.append(key(2, n), attempted(2)).unwrap();
        t.append(key(2, n), delivered(2)).unwrap();
        t.append(key(3, n), attempted(1)).unwrap();
    }
    let by_seq = t.ledger().state_at_seq(mid_seq).unwrap();
    let by_time = t.ledger().state_at_time(mid_time).unwrap();
    assert_eq!(by_seq, by_time, "the same mid-point by seq and by time");
    assert_ne!(by_seq, t.ledger().state(), "the mid-point is not the end");
    let text = format!(
        "state at seq {mid_seq} ({mid_time}):\n{}\nfinal state:\n{}",
        render_state(&QueueView::of(&by_seq)),
        render_state(&QueueView::of(&t.ledger().state()))
    );
    snapshot!("state_at_a_mid_point", text);
}
