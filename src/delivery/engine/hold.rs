//! What holds a delivery back: its webhook's rate limit, and the concurrency gates sized by
//! its webhook's `max_in_flight` (or the engine's default).
//!
//! Invariant: a ticket (the right to record `attempted`) is handed out only with a token of
//! the webhook's bucket when it has a rate limit; a token taken for a ticket the gates then
//! refuse is given back, so a busy webhook does not lose its pace.

use super::*;

impl Engine {
    fn rates(&self) -> std::sync::MutexGuard<'_, crate::delivery::rate::Buckets> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `webhook`'s rate limit and its own in-flight limit (`None`: the default).
    fn limits_of(&self, webhook: WebhookId) -> (Option<std::num::NonZeroU32>, Option<usize>) {
        let options = self.ledger.shared().read_registry().options_of(&webhook);
        (options.rate_limit, in_flight(options))
    }

    /// Resizes every webhook's slots to its `max_in_flight` as the registry has it now: after
    /// a change (the API calls this once its commit is in) and at every re-drive pass (a
    /// change another node made on a shared database). Nothing to do, and nothing done, while
    /// the registry is at the seq of the last resize.
    pub fn apply_limits(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let registry = self.ledger.shared().read_registry();
        let seq = registry.last_seq();
        if self.limits_at.swap(seq, Relaxed) == seq && seq != 0 {
            return;
        }
        self.gates
            .resize_all(|w| in_flight(registry.options_of(&w)));
    }

    /// How many attempts of `webhook` could get a ticket now: its gates' room and its bucket's
    /// tokens. When the bucket is empty, `retry_at` is lowered to its next token's time.
    pub(super) fn room(
        &self,
        webhook: WebhookId,
        now: Timestamp,
        retry_at: &mut Option<Timestamp>,
    ) -> usize {
        let (rate, limit) = self.limits_of(webhook);
        match self.rates().room(webhook, rate, now) {
            Ok(tokens) => self.gates.open_for(webhook, limit).min(tokens),
            Err(next) => {
                earliest(retry_at, next);
                0
            }
        }
    }

    /// A ticket for one attempt of `webhook` now: a token of its bucket (when rate-limited),
    /// then its slots or a place ahead of them; nothing when either is missing (the delivery
    /// stays pending; `retry_at` is lowered to the next token's time when that was missing).
    pub(super) fn ticket(
        &self,
        webhook: WebhookId,
        now: Timestamp,
        retry_at: &mut Option<Timestamp>,
    ) -> Option<Ticket> {
        let (rate, limit) = self.limits_of(webhook);
        let mut rates = self.rates();
        if let Err(next) = rates.take(webhook, rate, now) {
            earliest(retry_at, next);
            return None;
        }
        let ticket = self.gates.try_ticket(webhook, limit);
        if ticket.is_none() {
            rates.give_back(webhook);
        }
        ticket
    }
}

/// A webhook's own in-flight limit, as the gates take it (`None`: the engine's default).
pub(super) fn in_flight(options: crate::registry::WebhookOptions) -> Option<usize> {
    options.max_in_flight.map(|n| n.get() as usize)
}

/// Lowers `slot` to `at`.
pub(super) fn earliest(slot: &mut Option<Timestamp>, at: Timestamp) {
    *slot = Some(slot.map_or(at, |s| s.min(at)));
}
