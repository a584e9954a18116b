//! Rate limits: one token bucket per rate-limited webhook, beside the concurrency gates
//! ([`super::gate`]).
//!
//! Invariant: an attempt of a rate-limited webhook is recorded (`attempted`) only after it took
//! a token from its webhook's bucket; a delivery that finds the bucket empty stays `pending`
//! (nothing recorded, so a crash burns none of its budget) and the re-drive loop wakes when the
//! next token is due ([`Buckets::take`] answers when). Tokens refill at `rate_limit` per
//! second by the engine's injected clock (pure: every call is given the time), up to a burst
//! of a fifth of a second's worth (at least one), so a late re-drive pass does not lose the
//! pace and a backlog starts with a short burst at most. A bucket of a webhook whose limit
//! changed starts afresh; other webhooks have no bucket and are never held back by one.

use std::collections::HashMap;
use std::num::NonZeroU32;

use chrono::Duration;

use crate::ids::WebhookId;
use crate::ledger::record::Timestamp;

/// One webhook's tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    rate: NonZeroU32,
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: NonZeroU32, now: Timestamp) -> Self {
        Self {
            rate,
            tokens: burst(rate),
            at: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        let passed = (now - self.at).num_microseconds().unwrap_or(i64::MAX);
        if passed <= 0 {
            return;
        }
        let gained = passed as f64 / 1e6 * f64::from(self.rate.get());
        self.tokens = (self.tokens + gained).min(burst(self.rate));
        self.at = now;
    }

    /// Whole tokens there now.
    pub fn available(&mut self, now: Timestamp) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// Takes one token if there is one; else answers when the next one is there.
    pub fn take(&mut self, now: Timestamp) -> Result<(), Timestamp> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(self.next_token())
    }

    /// When the bucket next holds a whole token (as of its last refill).
    fn next_token(&self) -> Timestamp {
        let missing = (1.0 - self.tokens.fract()) / f64::from(self.rate.get());
        // Rounded up to the next microsecond, so a wake at that time finds the token.
        self.at + Duration::microseconds((missing * 1e6).ceil() as i64 + 1)
    }

    /// Gives back a token taken for an attempt that could not start after all.
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(burst(self.rate));
    }
}

/// The most tokens a bucket holds: a fifth of a second's worth, at least one.
fn burst(rate: NonZeroU32) -> f64 {
    (f64::from(rate.get()) / 5.0).ceil().max(1.0)
}

/// Every rate-limited webhook's bucket.
#[derive(Debug, Default)]
pub struct Buckets {
    of: HashMap<WebhookId, Bucket>,
}

impl Buckets {
    /// The bucket of `webhook` at `rate` (`None`: no limit, no bucket).
    fn bucket(
        &mut self,
        webhook: WebhookId,
        rate: Option<NonZeroU32>,
        now: Timestamp,
    ) -> Option<&mut Bucket> {
        let Some(rate) = rate else {
            self.of.remove(&webhook);
            return None;
        };
        let b = self
            .of
            .entry(webhook)
            .or_insert_with(|| Bucket::new(rate, now));
        if b.rate != rate {
            *b = Bucket::new(rate, now);
        }
        Some(b)
    }

    /// How many attempts `webhook` may start now (`usize::MAX` without a limit); when none,
    /// when the next token is there.
    pub fn room(
        &mut self,
        webhook: WebhookId,
        rate: Option<NonZeroU32>,
        now: Timestamp,
    ) -> Result<usize, Timestamp> {
        match self.bucket(webhook, rate, now) {
            None => Ok(usize::MAX),
            Some(b) => match b.available(now) {
                0 => Err(b.next_token()),
                n => Ok(n),
            },
        }
    }

    /// Takes a token for one attempt of `webhook` (always granted without a limit); else when
    /// the next token is there.
    pub fn take(
        &mut self,
        webhook: WebhookId,
        rate: Option<NonZeroU32>,
        now: Timestamp,
    ) -> Result<(), Timestamp> {
        self.bucket(webhook, rate, now)
            .map_or(Ok(()), |b| b.take(now))
    }

    pub fn give_back(&mut self, webhook: WebhookId) {
        if let Some(b) = self.of.get_mut(&webhook) {
            b.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap() + Duration::milliseconds(ms)
    }

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn tokens_come_at_the_rate_after_a_burst_of_a_fifth_of_a_second() {
        let mut b = Bucket::new(rate(10), t(0));
        assert_eq!(b.available(t(0)), 2);
        assert!(b.take(t(0)).is_ok());
        assert!(b.take(t(0)).is_ok());
        // Empty: the next token is 100 ms away.
        let next = b.take(t(0)).unwrap_err();
        assert!(next > t(99) && next <= t(101), "{next}");
        assert!(b.take(t(50)).is_err());
        assert!(b.take(next).is_ok());
        // Over 10 s of steady demand, 100 tokens (and the burst of 2 at the start).
        let mut b = Bucket::new(rate(10), t(0));
        let taken = (0..10_000).filter(|ms| b.take(t(*ms)).is_ok()).count();
        assert!((101..=102).contains(&taken), "{taken}");
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_its_burst_and_time_going_back_adds_nothing() {
        let mut b = Bucket::new(rate(100), t(0));
        assert_eq!(b.available(t(60_000)), 20);
        for _ in 0..20 {
            b.take(t(60_000)).unwrap();
        }
        assert_eq!(b.available(t(1_000)), 0, "the clock went back");
        b.give_back();
        assert_eq!(b.available(t(60_000)), 1);
        assert_eq!(
            Bucket::new(rate(1), t(0)).available(t(0)),
            1,
            "at least one"
        );
    }

    #[test]
    fn webhooks_without_a_limit_are_never_held_and_a_new_limit_starts_afresh() {
        let mut all = Buckets::default();
        let (limited, free) = (WebhookId::new(), WebhookId::new());
        for _ in 0..1000 {
            assert!(all.take(free, None, t(0)).is_ok());
        }
        assert_eq!(all.room(free, None, t(0)), Ok(usize::MAX));
        assert!(all.take(limited, Some(rate(1)), t(0)).is_ok());
        assert!(all.take(limited, Some(rate(1)), t(0)).is_err());
        let next = all.room(limited, Some(rate(1)), t(500)).unwrap_err();
        assert!(next > t(999) && next <= t(1001), "{next}");
        assert_eq!(
            all.room(limited, Some(rate(50)), t(0)),
            Ok(10),
            "new rate, full bucket"
        );
    }
}
