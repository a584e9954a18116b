//! Concurrency: how many attempts may be on the wire (over all webhooks and per webhook), and
//! how many may be recorded ahead of a free slot.
//!
//! An attempt's `attempted` record must be durable before its request leaves, and a durable
//! commit (a few ms) takes longer than a request to a fast receiver (under 1 ms). If an attempt
//! held its webhook's slot while its record was committed, a webhook with 64 slots could never
//! see more than 64 requests per commit, whatever it can take. So a slot ([`Permits`]) is held
//! for the request only, and an attempt may be recorded *ahead* of a free slot, then wait for
//! one ([`Ticket::Ahead`]).
//!
//! Invariant: attempts recorded ahead of a slot are bounded per webhook by how many attempts
//! that webhook finished in the last one to two [`WINDOW`]s (at most [`AHEAD_FACTOR`] x its
//! slots). A
//! webhook that stops answering finishes nothing, so it gets no attempt recorded beyond those on
//! the wire: a crash cannot burn the budget of deliveries queued behind a stalled webhook. For a
//! webhook that answers, a crash abandons at most the attempts it would have taken within about
//! one window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ids::WebhookId;

/// How far back a webhook's finished attempts count towards recording ahead of a slot.
pub const WINDOW: Duration = Duration::from_millis(20);
/// At most this many times a webhook's slots may be recorded ahead of a free slot.
pub const AHEAD_FACTOR: usize = 4;

/// The global and per-webhook slots.
pub struct Gates {
    global: Arc<Semaphore>,
    per_webhook: usize,
    /// The pace clock (wall time; a fixed instant in tests).
    now: fn() -> Instant,
    /// std Mutex: held for a map lookup only, never across an await.
    webhooks: Mutex<HashMap<WebhookId, Arc<Gate>>>,
}

/// One webhook's slots and its recent pace.
struct Gate {
    slots: Arc<Semaphore>,
    now: fn() -> Instant,
    /// Attempts recorded ahead of a slot and still waiting for one.
    ahead: AtomicUsize,
    /// std Mutex: held to count, never across an await.
    finished: Mutex<Recent>,
}

/// The global slot and the webhook's, held while a request is on the wire.
pub struct Permits {
    _global: OwnedSemaphorePermit,
    _own: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Permits {
    /// A finished attempt (whatever its outcome) is what lets its webhook record more ahead.
    fn drop(&mut self) {
        self.gate.note_finished((self.gate.now)());
    }
}

/// The right to record an attempt now.
pub enum Ticket {
    /// Slots are held: the request can leave as soon as the record is durable.
    Ready(Permits),
    /// Recorded ahead: waits for the slots after the record is durable.
    Ahead(AheadOf),
}

/// A place in the webhook's "ahead" count, given back when the slots are taken or the ticket is
/// dropped.
pub struct AheadOf {
    gate: Arc<Gate>,
    global: Arc<Semaphore>,
}

impl Drop for AheadOf {
    fn drop(&mut self) {
        self.gate.ahead.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticket {
    /// The slots, waiting for them when recorded ahead (the webhook's first, then the global
    /// one: nothing waits for the webhook's slot while holding a global one).
    pub async fn permits(self) -> Permits {
        match self {
            Ticket::Ready(p) => p,
            // The place ahead is given back (dropped) only once the slots are held.
            Ticket::Ahead(a) => acquire(a.gate.clone(), &a.global).await,
        }
    }
}

impl Gates {
    pub fn new(max_in_flight: usize, per_webhook: usize) -> Self {
        Self::with_pace_clock(max_in_flight, per_webhook, Instant::now)
    }

    fn with_pace_clock(max_in_flight: usize, per_webhook: usize, now: fn() -> Instant) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_in_flight.max(1))),
            per_webhook: per_webhook.max(1),
            now,
            webhooks: Mutex::new(HashMap::new()),
        }
    }

    /// Free global slots now.
    pub fn free(&self) -> usize {
        self.global.available_permits()
    }

    /// How many attempts could be recorded ahead of a slot now, over all webhooks.
    pub fn ahead_room(&self) -> usize {
        let now = (self.now)();
        let gates: Vec<Arc<Gate>> = self.lock().values().cloned().collect();
        gates.iter().map(|g| g.room(now, self.per_webhook)).sum()
    }

    /// How many attempts of `webhook` could get a ticket now: free slots (its own and global)
    /// plus its room ahead.
    pub fn open_for(&self, webhook: WebhookId) -> usize {
        let gate = self.gate(webhook);
        let free = gate.slots.available_permits().min(self.free());
        free + gate.room((self.now)(), self.per_webhook)
    }

    /// Slots if both are free now, else a place ahead if the webhook's pace allows one, else
    /// nothing (the delivery stays pending). Never waits.
    pub fn try_ticket(&self, webhook: WebhookId) -> Option<Ticket> {
        if let Some(p) = self.try_permits(webhook) {
            return Some(Ticket::Ready(p));
        }
        let gate = self.gate(webhook);
        gate.try_ahead((self.now)(), self.per_webhook).then(|| {
            Ticket::Ahead(AheadOf {
                gate,
                global: self.global.clone(),
            })
        })
    }

    /// The global slot and the webhook's, if both are free now.
    fn try_permits(&self, webhook: WebhookId) -> Option<Permits> {
        let global = self.global.clone().try_acquire_owned().ok()?;
        let gate = self.gate(webhook);
        let own = gate.slots.clone().try_acquire_owned().ok()?;
        Some(Permits {
            _global: global,
            _own: own,
            gate,
        })
    }

    /// The webhook's slot and then the global one, waiting for each.
    pub async fn wait_permits(&self, webhook: WebhookId) -> Permits {
        acquire(self.gate(webhook), &self.global).await
    }

    fn gate(&self, webhook: WebhookId) -> Arc<Gate> {
        self.lock()
            .entry(webhook)
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(self.per_webhook)),
                    now: self.now,
                    ahead: AtomicUsize::new(0),
                    finished: Mutex::new(Recent::default()),
                })
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WebhookId, Arc<Gate>>> {
        self.webhooks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The webhook's slot, then the global one, waiting for each.
async fn acquire(gate: Arc<Gate>, global: &Arc<Semaphore>) -> Permits {
    let own = gate.slots.clone().acquire_owned().await;
    let global = global.clone().acquire_owned().await;
    Permits {
        _global: global.expect("the semaphore is never closed"),
        _own: own.expect("the semaphore is never closed"),
        gate,
    }
}

impl Gate {
    fn note_finished(&self, now: Instant) {
        self.recent().note(now);
    }

    /// How many more may be recorded ahead now.
    fn room(&self, now: Instant, slots: usize) -> usize {
        let allowed = self.recent().count(now).min(slots * AHEAD_FACTOR);
        allowed.saturating_sub(self.ahead.load(Ordering::Acquire))
    }

    fn try_ahead(&self, now: Instant, slots: usize) -> bool {
        let allowed = self.recent().count(now).min(slots * AHEAD_FACTOR);
        self.ahead
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.finished.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Events counted in two consecutive windows: `count` is what happened in the last one to two
/// windows (pure: the caller passes the time).
#[derive(Debug, Default)]
struct Recent {
    started: Option<Instant>,
    current: usize,
    previous: usize,
}

impl Recent {
    fn note(&mut self, now: Instant) {
        self.roll(now);
        self.current += 1;
    }

    fn count(&mut self, now: Instant) -> usize {
        self.roll(now);
        self.current + self.previous
    }

    fn roll(&mut self, now: Instant) {
        let Some(started) = self.started else {
            self.started = Some(now);
            return;
        };
        let passed = now.saturating_duration_since(started);
        if passed < WINDOW {
            return;
        }
        self.previous = if passed < 2 * WINDOW { self.current } else { 0 };
        self.current = 0;
        self.started = Some(now);
    }
}

#[cfg(test)]
mod tests {
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
        let held: Vec<_> = (0..2).map(|_| gates.try_ticket(w).unwrap()).collect();
        assert!(held.iter().all(|t| matches!(t, Ticket::Ready(_))));
        assert!(
            gates.try_ticket(w).is_none(),
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
            drop(gates.try_permits(w).unwrap());
        }
        let busy: Vec<_> = (0..2).map(|_| gates.try_permits(w).unwrap()).collect();
        let ahead: Vec<_> = (0..3).map(|_| gates.try_ticket(w).unwrap()).collect();
        assert!(ahead.iter().all(|t| matches!(t, Ticket::Ahead(_))));
        assert!(gates.try_ticket(w).is_none());
        assert_eq!(gates.ahead_room(), 0);
        // A dropped place ahead is given back.
        drop(ahead);
        assert_eq!(gates.ahead_room(), 3);
        // Many finished attempts allow at most AHEAD_FACTOR x slots.
        for _ in 0..100 {
            gates.gate(w).note_finished(fixed());
        }
        assert_eq!(gates.ahead_room(), 2 * AHEAD_FACTOR);
        drop(busy);
    }

    #[tokio::test]
    async fn an_attempt_recorded_ahead_waits_for_a_slot_then_holds_it() {
        let gates = Gates::with_pace_clock(64, 1, fixed);
        let w = WebhookId::new();
        drop(gates.try_permits(w).unwrap());
        let busy = gates.try_permits(w).unwrap();
        let ahead = gates.try_ticket(w).unwrap();
        let waiting = tokio::spawn(ahead.permits());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the slot is still busy");
        drop(busy);
        let permits = waiting.await.unwrap();
        assert!(gates.try_permits(w).is_none(), "the waiter holds the slot");
        assert_eq!(gates.gate(w).ahead.load(Ordering::Acquire), 0);
        drop(permits);
        assert!(gates.try_permits(w).is_some());
    }
}
