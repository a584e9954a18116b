//! Body retention: with `HOOKLEDGER_BODY_RETENTION` set (e.g. `30d`; unset: keep forever),
//! the bodies of events published longer ago than that, whose deliveries are all finished
//! (none pending or in an attempt), are expunged like a manual expunge, with the policy as the
//! fact's actor (`policy:body_retention=30d`).
//!
//! The decision is pure ([`Retention::cutoff`] from the injected [`Clock`], the live
//! deliveries from the projection); [`run_once`] reads candidates by seq in pages of
//! [`PAGE`] and commits each page's orders as one expunge (one bucket rewrite and one scrub
//! per page and bucket). `serve` runs it every [`Retention::interval`].
//!
//! Invariant: an event with a live delivery keeps its body; nothing younger than the policy
//! is touched (the cutoff is `now - retention`, strictly older).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{LedgerError, Result};
use crate::ids::EventId;
use crate::ledger::expunge::ExpungeOrder;
use crate::ledger::record::Timestamp;
use crate::ledger::writer::Commit;
use crate::ledger::Ledger;
use crate::store::Store as _;

/// The variable that sets the policy.
pub const ENV: &str = "HOOKLEDGER_BODY_RETENTION";

/// Candidates read and expunged per commit.
pub const PAGE: usize = 1000;

/// How long bodies are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep: Duration,
    /// As configured (`30d`), for the fact's actor.
    pub label: String,
}

impl Retention {
    /// Parses `30d`, `12h`, `90m`, `1w` (humantime syntax); an empty value, `forever` or
    /// `off` is `None` (keep forever). A zero or unreadable value is refused.
    pub fn parse(value: &str) -> Result<Option<Self>> {
        let v = value.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("forever") || v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let keep = humantime::parse_duration(v).map_err(|e| {
            LedgerError::Invalid(format!("{ENV}=`{v}` is not a duration such as 30d: {e}"))
        })?;
        if keep.is_zero() {
            return Err(LedgerError::Invalid(format!(
                "{ENV}=`{v}` must be longer than zero (unset it to keep bodies forever)"
            )));
        }
        Ok(Some(Self {
            keep,
            label: v.to_owned(),
        }))
    }

    /// The policy from the environment (`None`: keep forever).
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(None),
        }
    }

    /// Events published before this instant are old enough.
    pub fn cutoff(&self, now: Timestamp) -> Timestamp {
        let keep = chrono::Duration::from_std(self.keep).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(keep).unwrap_or(Timestamp::MIN_UTC)
    }

    /// The fact's actor.
    pub fn actor(&self) -> String {
        format!("policy:body_retention={}", self.label)
    }

    /// How often `serve` applies it: a tenth of the retention, between 1 s and 1 min.
    pub fn interval(&self) -> Duration {
        (self.keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Applies the policy once: expunges every body it covers now. Answers how many.
pub fn run_once(ledger: &Ledger, clock: &dyn Clock, policy: &Retention) -> Result<usize> {
    let cutoff = policy.cutoff(clock.now());
    let mut after = 0u64;
    let mut expunged = 0;
    loop {
        let reader = ledger.reader()?;
        let page = reader.bodies_published_before(cutoff, after, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(expunged);
        };
        after = last;
        let live: HashSet<EventId> = ledger
            .shared()
            .read_projection()
            .live_rows()
            .into_iter()
            .map(|(k, _)| k.event_id)
            .collect();
        let orders: Vec<ExpungeOrder> = page
            .into_iter()
            .filter(|(_, id)| !live.contains(id))
            .map(|(_, event_id)| ExpungeOrder {
                event_id,
                actor: policy.actor(),
                reason: format!(
                    "published more than {} ago, every delivery finished",
                    policy.label
                ),
            })
            .collect();
        if orders.is_empty() {
            continue;
        }
        let n = orders.len();
        ledger.commit_blocking(Commit {
            expunge: orders,
            ..Commit::default()
        })?;
        expunged += n;
    }
}

/// `serve`'s loop: applies the policy every interval until `shutdown` turns true. A failed
/// pass is logged and tried again at the next one.
pub async fn run(
    ledger: Arc<Ledger>,
    clock: Arc<dyn Clock>,
    policy: Retention,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (l, c, p) = (ledger.clone(), clock.clone(), policy.clone());
        match tokio::task::spawn_blocking(move || run_once(&l, c.as_ref(), &p)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(bodies = n, "retention expunged bodies"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            Err(e) => tracing::error!(error = %e, "retention pass panicked"),
        }
        tokio::select! {
            () = tokio::time::sleep(policy.interval()) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_a_positive_duration_or_nothing() {
        assert_eq!(Retention::parse("").unwrap(), None);
        assert_eq!(Retention::parse("forever").unwrap(), None);
        let p = Retention::parse("30d").unwrap().unwrap();
        assert_eq!(p.keep, Duration::from_secs(30 * 86_400));
        assert_eq!(p.actor(), "policy:body_retention=30d");
        assert!(Retention::parse("0s").is_err());
        assert!(Retention::parse("soon").is_err());
    }

    #[test]
    fn the_cutoff_is_now_minus_the_retention() {
        let p = Retention::parse("1h").unwrap().unwrap();
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(p.cutoff(now).timestamp(), 1_700_000_000 - 3600);
        assert_eq!(p.interval(), Duration::from_secs(60));
    }
}
