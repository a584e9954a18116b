//! The writer's pause distribution over a bench window: how long its transactions and idle
//! checkpoints held it (`crate::ledger::pauses`), the part of a publish's tail that is
//! waiting for the writer.
//!
//! The figures are bucket bounds (0.25 ms doubling), not exact quantiles: "p99 ≤ 8 ms" means
//! the 99th percentile transaction took at most 8 ms and more than 4 ms.

use super::{figure, Figure};
use crate::ledger::pauses::PauseSnapshot;
use crate::ledger::Ledger;

/// The writer's transactions and idle checkpoints: counts so far ([`Pauses::now`]), or over
/// a window ([`Pauses::since`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pauses {
    pub commits: PauseSnapshot,
    pub idle: PauseSnapshot,
}

impl Pauses {
    pub fn now(ledger: &Ledger) -> Self {
        let p = ledger.writer_pauses();
        Self {
            commits: p.commits.snapshot(),
            idle: p.idle.snapshot(),
        }
    }

    /// What the writer counted after `earlier`.
    pub fn since(&self, earlier: &Pauses) -> Pauses {
        Pauses {
            commits: self.commits.since(&earlier.commits),
            idle: self.idle.since(&earlier.idle),
        }
    }
}

/// Figures `{scenario}.{prefix}_writer_*`; ratios to one durable commit's p50 (`commit_ns`).
pub fn figures(scenario: &'static str, prefix: &str, p: &Pauses, commit_ns: u64) -> Vec<Figure> {
    let ms = |us: u64| us as f64 / 1000.0;
    let ratio = |us: u64| Some(us as f64 * 1000.0 / commit_ns.max(1) as f64);
    let bound = |q| p.commits.quantile_bound_us(q).unwrap_or(u64::MAX);
    let (p50, p99) = (bound(0.5), bound(0.99));
    vec![
        figure(
            scenario,
            &format!("{prefix}_writer_commits"),
            &format!("{prefix}: writer transactions"),
            p.commits.count() as f64,
            "transactions",
            None,
        ),
        figure(
            scenario,
            &format!("{prefix}_writer_p50"),
            &format!("{prefix}: writer transaction p50 at most (ratio to one commit)"),
            ms(p50),
            "ms",
            ratio(p50),
        ),
        figure(
            scenario,
            &format!("{prefix}_writer_p99"),
            &format!("{prefix}: writer transaction p99 at most (ratio to one commit)"),
            ms(p99),
            "ms",
            ratio(p99),
        ),
        figure(
            scenario,
            &format!("{prefix}_writer_over_16ms"),
            &format!("{prefix}: writer transactions over 16 ms"),
            p.commits.longer_than(16_000) as f64,
            "transactions",
            None,
        ),
        figure(
            scenario,
            &format!("{prefix}_writer_max"),
            &format!("{prefix}: longest writer transaction since the ledger opened"),
            ms(p.commits.max_us),
            "ms",
            ratio(p.commits.max_us),
        ),
        figure(
            scenario,
            &format!("{prefix}_idle_checkpoints"),
            &format!(
                "{prefix}: idle checkpoints, {:.1} ms in all",
                ms(p.idle.sum_us)
            ),
            p.idle.count() as f64,
            "checkpoints",
            None,
        ),
    ]
}
