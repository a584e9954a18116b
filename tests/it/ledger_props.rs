//! Property test: for random valid command sequences (with invalid ones mixed in, which must
//! be refused: wrong attempts and outcomes, requeues naming a terminal state the delivery is
//! not in, requeues of deliveries never enqueued), the live projection equals the projection
//! rebuilt from the reopened file, and `state_at(last seq)` equals both.

use std::collections::HashMap;

use hookledger::ids::DeliveryKey;
use hookledger::ledger::record::{RecordBody, Terminal};
use proptest::prelude::*;

use crate::common::*;

/// What the test believes each delivery's state is.
#[derive(Clone, Copy, Debug)]
enum Model {
    Pending(u16),
    InAttempt(u16),
    Done(Terminal),
}

/// A valid next record for a delivery in `state`, picked by `choice`, and the state after it.
fn valid_step(state: Model, choice: u8, t: &TestLedger, wait: i64) -> (RecordBody, Model) {
    let later = t.now() + chrono::Duration::seconds(wait);
    match state {
        Model::Pending(n) => match choice % 3 {
            0 => (attempted(n + 1), Model::InAttempt(n + 1)),
            1 => (dead_parked(), Model::Done(Terminal::Dead)),
            _ => (
                RecordBody::Parked {
                    reason: "deactivated".into(),
                },
                Model::Done(Terminal::Parked),
            ),
        },
        Model::InAttempt(a) => match choice % 2 {
            0 => (delivered(a), Model::Done(Terminal::Delivered)),
            _ => (failed(a, 500, later), Model::Pending(a)),
        },
        Model::Done(from) => (requeued(from, later), Model::Pending(0)),
    }
}

/// A record that is invalid in `state`, picked by `choice`: a wrong attempt or outcome, or a
/// requeue naming a terminal state the delivery is not in (while other deliveries may be).
fn invalid_step(state: Model, choice: u8, t: &TestLedger) -> RecordBody {
    let others = |not: Option<Terminal>| {
        let all = [Terminal::Delivered, Terminal::Dead, Terminal::Parked];
        let wrong: Vec<_> = all.into_iter().filter(|t| Some(*t) != not).collect();
        wrong[choice as usize % wrong.len()]
    };
    match (state, choice % 2) {
        (Model::Pending(n), 0) => delivered(n + 1),
        (Model::InAttempt(a), 0) => attempted(a + 1),
        (Model::Done(_), 0) => attempted(1),
        (Model::Done(from), _) => requeued(others(Some(from)), t.now()),
        (_, _) => requeued(others(None), t.now()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_rebuilt_state_and_state_at_last_seq(
        ops in prop::collection::vec((any::<u8>(), any::<u8>(), 0i64..600), 1..64)
    ) {
        let mut t = TestLedger::new();
        let mut model: HashMap<DeliveryKey, Model> = HashMap::new();
        let mut keys: Vec<DeliveryKey> = Vec::new();
        let mut next_event = 1u128;
        for (pick, choice, wait) in ops {
            t.advance(wait / 10);
            let i = pick as usize % (keys.len() + 1);
            if i == keys.len() {
                let hooks = [webhook(1), webhook(2)];
                let fan_out = &hooks[..1 + (choice as usize % 2)];
                t.publish(next_event, fan_out).unwrap();
                for w in fan_out {
                    let k = DeliveryKey::new(*w, event(next_event));
                    keys.push(k);
                    model.insert(k, Model::Pending(0));
                }
                next_event += 1;
                continue;
            }
            let k = keys[i];
            let state = model[&k];
            if choice >= 200 {
                let before = t.ledger().state().last_seq();
                let body = invalid_step(state, choice, &t);
                prop_assert!(t.append(k, body.clone()).is_err(), "{:?} accepted when {:?}", body, state);
                // A requeue of a delivery that was never enqueued.
                let never = DeliveryKey::new(webhook(3), event(u128::from(choice)));
                prop_assert!(t.append(never, invalid_step(state, 1, &t)).is_err());
                prop_assert_eq!(t.ledger().state().last_seq(), before);
                continue;
            }
            let (body, next) = valid_step(state, choice, &t, wait);
            t.append(k, body).unwrap();
            model.insert(k, next);
        }
        let live = t.ledger().state();
        let at_last = t.ledger().state_at_seq(live.last_seq()).unwrap();
        prop_assert_eq!(&at_last, &live);
        t.reopen();
        prop_assert_eq!(&t.ledger().state(), &live);
        prop_assert!(t.ledger().verify().unwrap().ok());
    }
}
