//! Concurrency: how many attempts may be on the wire (over all webhooks and per webhook), and
//! how many may be recorded ahead of a free slot.
//!
//! Two limits, each a user setting:
//! - **Global** (`HOOKLEDGER_MAX_IN_FLIGHT`, default 256): attempts of this process on the wire
//!   at once, over all webhooks. It protects this process and its machine: every attempt holds
//!   a socket, a connection's buffers and the body being sent, and a file descriptor.
//! - **Per webhook** (a webhook's `max_in_flight`, else `HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`,
//!   default 16): attempts to one webhook at once. It protects the receiver from being
//!   overwhelmed (a backlog after an outage would otherwise arrive all at once), and keeps one
//!   slow receiver from taking every global slot.
//!
//! A webhook's slots are resized in place when its limit changes ([`Gates::resize_all`], or
//! any call that passes the new limit): growing adds free slots at once; shrinking forgets free
//! slots and, for slots held by requests on the wire, forgets each as its request finishes
//! instead of giving it back. So after a change no new request leaves while as many as the
//! new limit are on the wire; the ones already on the wire finish. Waiters (attempts recorded
//! ahead) wait on the same slots and see the new size.
//!
//! An attempt's `attempted` record must be durable before its request leaves, and a durable
//! commit (a few ms) takes longer than a request to a fast receiver (under 1 ms). If an attempt
//! held its webhook's slot while its record was committed, a webhook with 64 slots could never
//! see more than 64 requests per commit, whatever it can take. So a slot ([`Permits`]) is held
//! for the request only, and an attempt may be recorded *ahead* of a free slot, then wait for
//! one ([`Ticket::Ahead`]). Recording ahead never puts more requests on the wire than the
//! limits allow (an attempt ahead waits for its slots); it bounds how many `attempted` records
//! may wait for a slot, which scales with the webhook's limit.
//!
//! Invariant: attempts recorded ahead of a slot are bounded per webhook by how many attempts
//! that webhook finished in the last one to two [`WINDOW`]s (at most [`AHEAD_FACTOR`] x its
//! slots). A
//! webhook that stops answering finishes nothing, so it gets no attempt recorded beyond those on
//! the wire: a crash cannot burn the budget of deliveries queued behind a stalled webhook. For a
//! webhook that answers, a crash abandons at most the attempts it would have taken within about
//! one window. Requests on the wire of a webhook are never more than its limit, except for the
//! ones that were already on the wire when the limit was lowered.

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
    /// The slots of a webhook without a limit of its own.
    per_webhook: usize,
    /// The pace clock (wall time; a fixed instant in tests).
    now: fn() -> Instant,
    /// std Mutex: held for a map lookup only, never across an await.
    webhooks: Mutex<HashMap<WebhookId, Arc<Gate>>>,
}

/// One webhook's slots and its recent pace.
struct Gate {
    slots: Arc<Semaphore>,
    /// std Mutex: held to resize or give a slot back, never across an await.
    size: Mutex<Size>,
    now: fn() -> Instant,
    /// Attempts recorded ahead of a slot and still waiting for one.
    ahead: AtomicUsize,
    /// std Mutex: held to count, never across an await.
    finished: Mutex<Recent>,
}

/// A gate's size. Free slots + held slots = `slots` + `owed`: `owed` are held slots beyond a
/// lowered limit, forgotten (not given back) as their requests finish.
#[derive(Debug, Default)]
struct Size {
    slots: usize,
    owed: usize,
}

/// The global slot and the webhook's, held while a request is on the wire.
pub struct Permits {
    _global: OwnedSemaphorePermit,
    /// `None` once given back (in `drop`).
    own: Option<OwnedSemaphorePermit>,
    gate: Arc<Gate>,
}

impl Drop for Permits {
    /// A finished attempt (whatever its outcome) is what lets its webhook record more ahead.
    fn drop(&mut self) {
        if let Some(own) = self.own.take() {
            self.gate.give_back(own);
        }
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
    /// `max_in_flight` slots over all webhooks, and `per_webhook` for each webhook without a
    /// limit of its own (both at least 1).
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
        gates.iter().map(|g| g.room(now)).sum()
    }

    /// How many attempts of `webhook` (whose own limit is `limit`, `None`: the default) could
    /// get a ticket now: free slots (its own and global) plus its room ahead.
    pub fn open_for(&self, webhook: WebhookId, limit: Option<usize>) -> usize {
        let gate = self.gate(webhook, limit);
        let free = gate.slots.available_permits().min(self.free());
        free + gate.room((self.now)())
    }

    /// Slots if both are free now, else a place ahead if the webhook's pace allows one, else
    /// nothing (the delivery stays pending). Never waits.
    pub fn try_ticket(&self, webhook: WebhookId, limit: Option<usize>) -> Option<Ticket> {
        if let Some(p) = self.try_permits(webhook, limit) {
            return Some(Ticket::Ready(p));
        }
        let gate = self.gate(webhook, limit);
        gate.try_ahead((self.now)()).then(|| {
            Ticket::Ahead(AheadOf {
                gate,
                global: self.global.clone(),
            })
        })
    }

    /// The global slot and the webhook's, if both are free now.
    fn try_permits(&self, webhook: WebhookId, limit: Option<usize>) -> Option<Permits> {
        let global = self.global.clone().try_acquire_owned().ok()?;
        let gate = self.gate(webhook, limit);
        let own = gate.slots.clone().try_acquire_owned().ok()?;
        Some(Permits {
            _global: global,
            own: Some(own),
            gate,
        })
    }

    /// The webhook's slot and then the global one, waiting for each.
    pub async fn wait_permits(&self, webhook: WebhookId, limit: Option<usize>) -> Permits {
        acquire(self.gate(webhook, limit), &self.global).await
    }

    /// Resizes every webhook's slots to its limit now (`limit_of`: its own, `None` for the
    /// default): what makes a changed `max_in_flight` take effect for attempts already
    /// waiting. Webhooks without slots yet get them at their first attempt.
    pub fn resize_all(&self, limit_of: impl Fn(WebhookId) -> Option<usize>) {
        let gates: Vec<(WebhookId, Arc<Gate>)> =
            self.lock().iter().map(|(w, g)| (*w, g.clone())).collect();
        for (w, gate) in gates {
            gate.resize(self.slots_for(limit_of(w)));
        }
    }

    /// `webhook`'s slots held by requests on the wire now.
    pub fn held(&self, webhook: WebhookId) -> usize {
        let Some(gate) = self.lock().get(&webhook).cloned() else {
            return 0;
        };
        let size = gate.lock_size();
        (size.slots + size.owed).saturating_sub(gate.slots.available_permits())
    }

    fn slots_for(&self, limit: Option<usize>) -> usize {
        limit.unwrap_or(self.per_webhook).max(1)
    }

    /// The webhook's gate, made or resized to `limit` (`None`: the default).
    fn gate(&self, webhook: WebhookId, limit: Option<usize>) -> Arc<Gate> {
        let slots = self.slots_for(limit);
        let gate = self
            .lock()
            .entry(webhook)
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(slots)),
                    size: Mutex::new(Size { slots, owed: 0 }),
                    now: self.now,
                    ahead: AtomicUsize::new(0),
                    finished: Mutex::new(Recent::default()),
                })
            })
            .clone();
        gate.resize(slots);
        gate
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
        own: Some(own.expect("the semaphore is never closed")),
        gate,
    }
}

impl Gate {
    fn note_finished(&self, now: Instant) {
        self.recent().note(now);
    }

    /// To `slots` slots: more are free at once; fewer forgets free ones first, then owes the
    /// rest, which held slots pay as they are given back.
    fn resize(&self, slots: usize) {
        let mut size = self.lock_size();
        if slots > size.slots {
            let grow = slots - size.slots;
            let paid = grow.min(size.owed);
            size.owed -= paid;
            self.slots.add_permits(grow - paid);
        } else if slots < size.slots {
            let shrink = size.slots - slots;
            let forgotten = self.slots.forget_permits(shrink);
            size.owed += shrink - forgotten;
        }
        size.slots = slots;
    }

    /// A held slot back: forgotten while the gate owes slots (its limit was lowered), else free.
    fn give_back(&self, own: OwnedSemaphorePermit) {
        let mut size = self.lock_size();
        if size.owed > 0 {
            size.owed -= 1;
            own.forget();
        } else {
            drop(own);
        }
    }

    /// How many more may be recorded ahead now.
    fn room(&self, now: Instant) -> usize {
        let slots = self.lock_size().slots;
        let allowed = self.recent().count(now).min(slots * AHEAD_FACTOR);
        allowed.saturating_sub(self.ahead.load(Ordering::Acquire))
    }

    fn try_ahead(&self, now: Instant) -> bool {
        let slots = self.lock_size().slots;
        let allowed = self.recent().count(now).min(slots * AHEAD_FACTOR);
        self.ahead
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok()
    }

    fn lock_size(&self) -> std::sync::MutexGuard<'_, Size> {
        self.size.lock().unwrap_or_else(|e| e.into_inner())
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
mod tests;
