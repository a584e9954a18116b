//! What holds a delivery back besides the concurrency gates: its webhook's rate limit.
//!
//! Invariant: a ticket (the right to record `attempted`) is handed out only with a token of
//! the webhook's bucket when it has a rate limit; a token taken for a ticket the gates then
//! refuse is given back, so a busy webhook does not lose its pace.

use super::*;

impl Engine {
    fn rates(&self) -> std::sync::MutexGuard<'_, crate::delivery::rate::Buckets> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rate_of(&self, webhook: WebhookId) -> Option<std::num::NonZeroU32> {
        self.ledger
            .shared()
            .read_registry()
            .options_of(&webhook)
            .rate_limit
    }

    /// How many attempts of `webhook` could get a ticket now: its gates' room and its bucket's
    /// tokens. When the bucket is empty, `retry_at` is lowered to its next token's time.
    pub(super) fn room(
        &self,
        webhook: WebhookId,
        now: Timestamp,
        retry_at: &mut Option<Timestamp>,
    ) -> usize {
        let rate = self.rate_of(webhook);
        match self.rates().room(webhook, rate, now) {
            Ok(tokens) => self.gates.open_for(webhook).min(tokens),
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
        let rate = self.rate_of(webhook);
        let mut rates = self.rates();
        if let Err(next) = rates.take(webhook, rate, now) {
            earliest(retry_at, next);
            return None;
        }
        let ticket = self.gates.try_ticket(webhook);
        if ticket.is_none() {
            rates.give_back(webhook);
        }
        ticket
    }
}

/// Lowers `slot` to `at`.
pub(super) fn earliest(slot: &mut Option<Timestamp>, at: Timestamp) {
    *slot = Some(slot.map_or(at, |s| s.min(at)));
}
