//! Reconstructed scenarios pinned by insta snapshots (stored in the top-level `snapshots/`).
//! Each snapshot shows a delivery's audit trail and the queue state folded from the log after a
//! full rebuild; a reviewer reads the diff to see a behaviour change.

use hookledger::cli::{render_record, render_state};
use hookledger::delivery::signing::Secret;
use hookledger::ids::DeliveryKey;
use hookledger::ledger::record::Terminal;
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

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
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

#[test]
fn fail_fail_succeed() {
    let mut t = TestLedger::new();
    let k = key(1, 1);
    t.publish(1, &[webhook(1)]).unwrap();
    t.append(k, attempted(1)).unwrap();
    t.append(k, failed(1, 503, t.now() + chrono::Duration::seconds(5)))
        .unwrap();
    t.advance(5);
    t.append(k, attempted(2)).unwrap();
    t.append(k, failed(2, 500, t.now() + chrono::Duration::minutes(5)))
        .unwrap();
    t.advance(300);
    t.append(k, attempted(3)).unwrap();
    t.append(k, delivered(3)).unwrap();
    snapshot!("fail_fail_succeed", report(&mut t, &[k]));
}

/// Three attempts fail; the budget (3) is spent, so the delivery is dead-parked.
fn dead_after_three(t: &TestLedger, k: DeliveryKey) {
    for attempt in 1..=3 {
        t.append(k, attempted(attempt)).unwrap();
        t.append(
            k,
            failed(attempt, 500, t.now() + chrono::Duration::seconds(10)),
        )
        .unwrap();
        t.advance(10);
    }
    t.append(k, dead_parked()).unwrap();
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
    t.append(key(1, 3), failed(1, 500, t.now())).unwrap();
    t.append(
        key(1, 3),
        hookledger::ledger::record::RecordBody::Parked {
            reason: "webhook deactivated".into(),
        },
    )
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
    t.append(k, requeued(Terminal::Dead, t.now())).unwrap();
    t.append(k, attempted(1)).unwrap();
    t.append(k, delivered(1)).unwrap();
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
