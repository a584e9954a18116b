//! `latency`: publish → receiver at a steady low rate (`--rate` events/s for `--seconds`,
//! default 200 for 10 s) through a `serve` child over HTTP, as [`super::deliver_http`] runs
//! it, but paced: one `POST /v1/events` started at each tick, whatever is in flight. Its
//! reference, measured in the same run (half before the paced run, half after), is the
//! floor under any durable write on this disk: a one-row, one-table DuckDB commit
//! ([`commit::one_row_commit_ns`]). p50 is divided by the commit's p50 and p99 by its p99.
//! Beside it, the same commit paced at the run's rate ([`commit::one_row_commit_paced_ns`]):
//! a commit after an idle gap costs 1.3x-1.8x one issued back to back on this machine, and
//! at 200 events/s every publish commit comes after such a gap, so the latencies are divided
//! by that floor too (`*_paced`).
//!
//! Invariant: as `deliver-http`'s (every delivery delivered, one attempt and three records
//! each, or the run fails); the achieved publish rate is reported with its ratio to the asked
//! one, so a run whose publishers fell behind says so beside its latencies.

use std::path::Path;
use std::time::Duration;

use super::deliver_http::{ms, through_serve};
use super::serve::{self, Pace};
use super::{commit, figure, quantile, rate, Figure, Options};
use crate::error::Result;

/// One-row commits timed before the paced run, and again after it.
const COMMITS: usize = 100;

pub fn run(dir: &Path, o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let exe = serve::serve_exe(o, "latency")?;
    let events = ((o.rate * o.seconds).round() as usize).max(1);
    let webhooks = o.webhooks.max(1);
    let gap = Duration::from_secs_f64(1.0 / o.rate);
    let mut commits = commit::one_row_commit_ns(&dir.join("one-row-before.duckdb"), COMMITS)?;
    let mut paced =
        commit::one_row_commit_paced_ns(&dir.join("paced-before.duckdb"), COMMITS, gap)?;
    let run = through_serve(
        &exe,
        dir,
        "latency",
        webhooks,
        events,
        Pace::Rate(o.rate),
        progress,
    )?;
    commits.extend(commit::one_row_commit_ns(
        &dir.join("one-row-after.duckdb"),
        COMMITS,
    )?);
    paced.extend(commit::one_row_commit_paced_ns(
        &dir.join("paced-after.duckdb"),
        COMMITS,
        gap,
    )?);
    commits.sort_unstable();
    paced.sort_unstable();
    let (c50, c99) = (quantile(&commits, 0.5), quantile(&commits, 0.99));
    let (g50, g99) = (quantile(&paced, 0.5), quantile(&paced, 0.99));
    let lat = &run.latencies;
    let (p50, p99) = (quantile(lat, 0.5), quantile(lat, 0.99));
    let achieved = rate(events as u64, run.publishing);
    progress(&format!(
        "latency: p50 {:.2} ms, p99 {:.2} ms; one-row commit p50 {:.2} ms, paced {:.2} ms",
        ms(p50),
        ms(p99),
        ms(c50),
        ms(g50)
    ));
    let ratio = |a: u64, b: u64| Some(a as f64 / b.max(1) as f64);
    let shape = format!(
        "{:.0} events/s for {:.1} s, {webhooks} webhook(s)",
        o.rate, o.seconds
    );
    let f = |id: &str, name: &str, value: f64, unit: &'static str, ratio: Option<f64>| {
        figure("latency", id, name, value, unit, ratio)
    };
    Ok(vec![
        f(
            "commit_p50",
            "one-row, one-table DuckDB commit, p50 (reference)",
            ms(c50),
            "ms",
            None,
        ),
        f(
            "commit_p99",
            "one-row, one-table DuckDB commit, p99 (reference)",
            ms(c99),
            "ms",
            None,
        ),
        f(
            "commit_paced_p50",
            &format!(
                "the same commit, one every {:.1} ms (the run's pace), p50",
                ms(gap.as_nanos() as u64)
            ),
            ms(g50),
            "ms",
            None,
        ),
        f(
            "commit_paced_p99",
            &format!(
                "the same commit, one every {:.1} ms (the run's pace), p99",
                ms(gap.as_nanos() as u64)
            ),
            ms(g99),
            "ms",
            None,
        ),
        f(
            "rate",
            &format!("events published per second, asked {shape} (ratio to asked)"),
            achieved,
            "events/s",
            Some(achieved / o.rate.max(1e-9)),
        ),
        f(
            "p50",
            "HTTP publish → first attempt at the receiver, p50 (ratio to the commit's p50)",
            ms(p50),
            "ms",
            ratio(p50, c50),
        ),
        f(
            "p99",
            "HTTP publish → first attempt at the receiver, p99 (ratio to the commit's p99)",
            ms(p99),
            "ms",
            ratio(p99, c99),
        ),
        f(
            "p50_paced",
            "HTTP publish → first attempt at the receiver, p50 (ratio to the paced commit's p50)",
            ms(p50),
            "ms",
            ratio(p50, g50),
        ),
        f(
            "p99_paced",
            "HTTP publish → first attempt at the receiver, p99 (ratio to the paced commit's p99)",
            ms(p99),
            "ms",
            ratio(p99, g99),
        ),
        f(
            "max",
            "HTTP publish → first attempt at the receiver, max",
            ms(lat.last().copied().unwrap_or(0)),
            "ms",
            None,
        ),
        f(
            "delivered",
            "deliveries the child recorded delivered",
            run.deliveries as f64,
            "deliveries",
            None,
        ),
    ])
}
