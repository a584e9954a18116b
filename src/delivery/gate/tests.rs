//! The gates' slots, resizing and pace, on a fixed pace clock.

use super::*;

/// One instant for the whole test: every finished attempt is in the current window.
fn fixed() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

#[test]
fn recent_counts_the_last_one_to_two_windows_only() {
    let t0 = Instant::now();
    let mut r = Recent::default();
    assert_eq!(r.count(t0), 0);
    for _ in 0..5 {
        r.note(t0);
    }
    assert_eq!(r.count(t0 + WINDOW / 2), 5);
    r.note(t0 + WINDOW + Duration::from_millis(1));
    assert_eq!(r.count(t0 + WINDOW + Duration::from_millis(2)), 6);
    // Two quiet windows later nothing counts.
    assert_eq!(r.count(t0 + 4 * WINDOW), 0);
}

#[tokio::test]
async fn a_webhook_that_finished_nothing_gets_nothing_recorded_ahead() {
    let gates = Gates::with_pace_clock(8, 2, fixed);
    let w = WebhookId::new();
    let held: Vec<_> = (0..2).map(|_| gates.try_ticket(w, None).unwrap()).collect();
    assert!(held.iter().all(|t| matches!(t, Ticket::Ready(_))));
    assert!(
        gates.try_ticket(w, None).is_none(),
        "no slot and no pace: pending"
    );
    assert_eq!(gates.ahead_room(), 0);
}

#[tokio::test]
async fn finished_attempts_allow_as_many_ahead_up_to_the_factor() {
    let gates = Gates::with_pace_clock(64, 2, fixed);
    let w = WebhookId::new();
    // Three attempts finish: three may be recorded ahead while both slots are busy.
    for _ in 0..3 {
        drop(gates.try_permits(w, None).unwrap());
    }
    let busy: Vec<_> = (0..2)
        .map(|_| gates.try_permits(w, None).unwrap())
        .collect();
    let ahead: Vec<_> = (0..3).map(|_| gates.try_ticket(w, None).unwrap()).collect();
    assert!(ahead.iter().all(|t| matches!(t, Ticket::Ahead(_))));
    assert!(gates.try_ticket(w, None).is_none());
    assert_eq!(gates.ahead_room(), 0);
    // A dropped place ahead is given back.
    drop(ahead);
    assert_eq!(gates.ahead_room(), 3);
    // Many finished attempts allow at most AHEAD_FACTOR x slots.
    for _ in 0..100 {
        gates.gate(w, None).note_finished(fixed());
    }
    assert_eq!(gates.ahead_room(), 2 * AHEAD_FACTOR);
    drop(busy);
}

#[tokio::test]
async fn an_attempt_recorded_ahead_waits_for_a_slot_then_holds_it() {
    let gates = Gates::with_pace_clock(64, 1, fixed);
    let w = WebhookId::new();
    drop(gates.try_permits(w, None).unwrap());
    let busy = gates.try_permits(w, None).unwrap();
    let ahead = gates.try_ticket(w, None).unwrap();
    let waiting = tokio::spawn(ahead.permits());
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "the slot is still busy");
    drop(busy);
    let permits = waiting.await.unwrap();
    assert!(
        gates.try_permits(w, None).is_none(),
        "the waiter holds the slot"
    );
    assert_eq!(gates.gate(w, None).ahead.load(Ordering::Acquire), 0);
    drop(permits);
    assert!(gates.try_permits(w, None).is_some());
}

#[tokio::test]
async fn a_webhook_with_its_own_limit_never_gets_more_slots_and_raising_it_frees_more() {
    let gates = Gates::with_pace_clock(64, 16, fixed);
    let (w, other) = (WebhookId::new(), WebhookId::new());
    let held: Vec<_> = (0..2)
        .map(|_| gates.try_permits(w, Some(2)).unwrap())
        .collect();
    assert!(
        gates.try_permits(w, Some(2)).is_none(),
        "a third while two are held"
    );
    assert_eq!(gates.held(w), 2);
    assert_eq!(gates.open_for(w, Some(2)), 0);
    // Another webhook has the default.
    let others: Vec<_> = (0..16)
        .map(|_| gates.try_permits(other, None).unwrap())
        .collect();
    assert!(gates.try_permits(other, None).is_none());
    drop(others);
    // A waiter for the full webhook gets a slot as soon as the limit is raised.
    let waiter = {
        let gate = gates.gate(w, Some(2));
        let global = gates.global.clone();
        tokio::spawn(async move { acquire(gate, &global).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "both slots are held");
    gates.resize_all(|_| Some(4));
    let third = waiter.await.unwrap();
    let fourth = gates.try_permits(w, Some(4)).unwrap();
    assert!(
        gates.try_permits(w, Some(4)).is_none(),
        "a fifth at a limit of 4"
    );
    assert_eq!(gates.held(w), 4);
    drop((held, third, fourth));
    assert_eq!(gates.held(w), 0);
    assert_eq!(gates.open_for(w, Some(4)), 4 + 4.min(4 * AHEAD_FACTOR));
}

#[tokio::test]
async fn a_lowered_limit_lets_nothing_new_leave_until_the_held_slots_are_below_it() {
    let gates = Gates::with_pace_clock(64, 16, fixed);
    let w = WebhookId::new();
    let mut held: Vec<_> = (0..4)
        .map(|_| gates.try_permits(w, Some(4)).unwrap())
        .collect();
    // Lowered to 1 while 4 are on the wire: they finish, nothing new starts.
    gates.resize_all(|_| Some(1));
    for left in (1..4).rev() {
        drop(held.pop());
        assert_eq!(gates.held(w), left);
        assert!(
            gates.try_permits(w, Some(1)).is_none(),
            "{left} held at a limit of 1"
        );
    }
    drop(held.pop());
    assert_eq!(gates.held(w), 0);
    let one = gates.try_permits(w, Some(1)).unwrap();
    assert!(gates.try_permits(w, Some(1)).is_none());
    // Raised: two more are free at once.
    gates.resize_all(|_| Some(3));
    let two = gates.try_permits(w, Some(3)).unwrap();
    let three = gates.try_permits(w, Some(3)).unwrap();
    assert!(gates.try_permits(w, Some(3)).is_none());
    // Lowered to 2 with 3 held, raised to 3 again with the debt unpaid: still 3 at most.
    gates.resize_all(|_| Some(2));
    gates.resize_all(|_| Some(3));
    assert!(gates.try_permits(w, Some(3)).is_none());
    drop((one, two, three));
    assert_eq!(gates.held(w), 0);
    let all: Vec<_> = (0..3)
        .map(|_| gates.try_permits(w, Some(3)).unwrap())
        .collect();
    assert!(gates.try_permits(w, Some(3)).is_none());
    drop(all);
}

#[tokio::test]
async fn recording_ahead_scales_with_the_webhooks_own_limit() {
    let gates = Gates::with_pace_clock(1024, 16, fixed);
    let w = WebhookId::new();
    for _ in 0..100 {
        gates.gate(w, Some(2)).note_finished(fixed());
    }
    assert_eq!(gates.ahead_room(), 2 * AHEAD_FACTOR);
    gates.resize_all(|_| Some(5));
    assert_eq!(gates.ahead_room(), 5 * AHEAD_FACTOR);
    gates.resize_all(|_| None);
    assert_eq!(gates.ahead_room(), 16 * AHEAD_FACTOR);
}
