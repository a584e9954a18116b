//! The what-if report: the ledger's actual outcome beside the candidate's two bounds —
//! deliveries delivered, dead, parked and pending; time to delivery p50/p99/max; attempts per
//! delivery; peak attempts per minute per webhook (the load a receiver would have taken); each
//! webhook's observed availability; and the deliveries whose fate changes.
//!
//! Invariant: pure (no I/O, no clock): built from [`Facts`] and a [`Bounds`] only, with every
//! list in a fixed order, so the same input serialises to the same bytes.

use std::collections::HashMap;

use chrono::DateTime;
use serde::Serialize;

use super::availability::Seen;
use super::facts::{Facts, Fate, Scope};
use super::simulate::{Bounds, Policy, Simulated};
use crate::ids::{EventId, WebhookId};
use crate::ledger::record::Timestamp;

/// At most this many availability runs per webhook are listed (all are counted).
pub const MAX_RUNS_LISTED: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub scope: Scope,
    pub policy: PolicyView,
    /// Ledger records read (of the chosen webhook, when there is one).
    pub records: u64,
    /// Deliveries enqueued in the window.
    pub deliveries: u64,
    /// The ledger's last record: simulated attempts after it are not simulated.
    pub horizon: Option<Timestamp>,
    pub actual: Side,
    /// The candidate where the ledger does not know: unknown gaps up.
    pub optimistic: Side,
    /// ... unknown gaps down.
    pub pessimistic: Side,
    pub webhooks: Vec<WebhookView>,
    /// Deliveries whose fate differs from the actual one under either bound.
    pub changed_total: u64,
    /// The first of them in enqueue order (at most the query's limit).
    pub changed: Vec<Changed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PolicyView {
    pub schedule: String,
    pub budget: u32,
    pub jitter: bool,
}

/// One side of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Side {
    pub delivered: u64,
    pub dead: u64,
    pub parked: u64,
    pub pending: u64,
    /// From enqueue to the delivering attempt, over the delivered ones (absent if none).
    pub time_to_delivery_ms: Option<Latency>,
    pub attempts: u64,
    pub attempts_per_delivery: f64,
    pub max_attempts: u32,
    /// The busiest minute of the busiest webhook.
    pub peak_attempts_per_minute: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct WebhookView {
    pub webhook_id: WebhookId,
    pub deliveries: u64,
    pub observed_up: u64,
    pub observed_down: u64,
    pub availability_runs_total: u64,
    /// Runs of observations in the same state, in time order (at most [`MAX_RUNS_LISTED`]).
    pub availability: Vec<RunView>,
    pub peak_attempts_per_minute: Peaks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RunView {
    pub from: Timestamp,
    pub to: Timestamp,
    #[serde(flatten)]
    pub seen: Seen,
    pub observations: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Peaks {
    pub actual: u32,
    pub optimistic: u32,
    pub pessimistic: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Changed {
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub enqueued_at: Timestamp,
    pub actual: FateAt,
    pub optimistic: FateAt,
    pub pessimistic: FateAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FateAt {
    pub fate: Fate,
    pub at: Timestamp,
    pub attempts: u32,
}

fn ts(us: i64) -> Timestamp {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Builds the report; `limit` caps the listed fate changes.
pub fn build(facts: &Facts, policy: &Policy, bounds: &Bounds, limit: usize) -> Report {
    let actual: Vec<Simulated> = facts
        .deliveries
        .iter()
        .map(|d| Simulated {
            fate: d.fate,
            end_us: d.end_us,
            attempts: d.attempts,
        })
        .collect();
    let peaks_actual = peaks(&facts.actual_load);
    let peaks_opt = peaks(&bounds.optimistic.load);
    let peaks_pes = peaks(&bounds.pessimistic.load);
    let mut changed_total = 0;
    let mut changed = Vec::new();
    for (i, d) in facts.deliveries.iter().enumerate() {
        let (a, o, p) = (
            actual[i],
            bounds.optimistic.outcomes[i],
            bounds.pessimistic.outcomes[i],
        );
        if a.fate == o.fate && a.fate == p.fate {
            continue;
        }
        changed_total += 1;
        if changed.len() < limit {
            let at = |s: Simulated| FateAt {
                fate: s.fate,
                at: ts(s.end_us),
                attempts: s.attempts,
            };
            changed.push(Changed {
                webhook_id: facts.key(d).webhook_id,
                event_id: d.event_id,
                enqueued_at: ts(d.enqueued_us),
                actual: at(a),
                optimistic: at(o),
                pessimistic: at(p),
            });
        }
    }
    let mut per_webhook = vec![0u64; facts.webhooks.len()];
    for d in &facts.deliveries {
        per_webhook[d.webhook as usize] += 1;
    }
    let mut webhooks: Vec<WebhookView> = facts
        .webhooks
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let runs = facts.timelines[i].runs();
            let count = |up: bool| {
                runs.iter()
                    .filter(|r| r.seen.is_up() == up)
                    .map(|r| u64::from(r.observations))
                    .sum()
            };
            let w = i as u32;
            WebhookView {
                webhook_id: *id,
                deliveries: per_webhook[i],
                observed_up: count(true),
                observed_down: count(false),
                availability_runs_total: runs.len() as u64,
                availability: runs
                    .iter()
                    .take(MAX_RUNS_LISTED)
                    .map(|r| RunView {
                        from: ts(r.first_us),
                        to: ts(r.last_us),
                        seen: r.seen,
                        observations: r.observations,
                    })
                    .collect(),
                peak_attempts_per_minute: Peaks {
                    actual: peaks_actual.get(&w).copied().unwrap_or(0),
                    optimistic: peaks_opt.get(&w).copied().unwrap_or(0),
                    pessimistic: peaks_pes.get(&w).copied().unwrap_or(0),
                },
            }
        })
        .collect();
    webhooks.sort_by_key(|w| w.webhook_id);
    Report {
        scope: facts.scope.clone(),
        policy: PolicyView {
            schedule: policy.schedule.to_string(),
            budget: policy.max_attempts(),
            jitter: false,
        },
        records: facts.records,
        deliveries: facts.deliveries.len() as u64,
        horizon: (facts.records > 0).then(|| ts(facts.horizon_us)),
        actual: side(facts, &actual, &peaks_actual),
        optimistic: side(facts, &bounds.optimistic.outcomes, &peaks_opt),
        pessimistic: side(facts, &bounds.pessimistic.outcomes, &peaks_pes),
        webhooks,
        changed_total,
        changed,
    }
}

/// The busiest minute of each webhook.
fn peaks(load: &HashMap<(u32, i64), u32>) -> HashMap<u32, u32> {
    let mut out: HashMap<u32, u32> = HashMap::new();
    for (&(w, _), &n) in load {
        let peak = out.entry(w).or_default();
        *peak = (*peak).max(n);
    }
    out
}

fn side(facts: &Facts, outcomes: &[Simulated], peaks: &HashMap<u32, u32>) -> Side {
    let mut s = Side::default();
    let mut waits = Vec::new();
    for (d, o) in facts.deliveries.iter().zip(outcomes) {
        match o.fate {
            Fate::Delivered => {
                s.delivered += 1;
                waits.push(u64::try_from(o.end_us - d.enqueued_us).unwrap_or(0) / 1000);
            }
            Fate::Dead => s.dead += 1,
            Fate::Parked => s.parked += 1,
            Fate::Pending => s.pending += 1,
        }
        s.attempts += u64::from(o.attempts);
        s.max_attempts = s.max_attempts.max(o.attempts);
    }
    waits.sort_unstable();
    s.time_to_delivery_ms = (!waits.is_empty()).then(|| Latency {
        p50: quantile(&waits, 0.50),
        p99: quantile(&waits, 0.99),
        max: waits[waits.len() - 1],
    });
    let n = outcomes.len().max(1) as f64;
    s.attempts_per_delivery = (s.attempts as f64 / n * 1000.0).round() / 1000.0;
    s.peak_attempts_per_minute = peaks.values().copied().max().unwrap_or(0);
    s
}

/// The `q` quantile of sorted values, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
