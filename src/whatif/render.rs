//! The text form of a what-if [`Report`]: the comparison table, each webhook's availability
//! and load, and the deliveries whose fate changes.
//!
//! Invariant: pure (no I/O, no clock): a function of the report alone.

use std::fmt::Write;
use std::time::Duration;

use super::availability::Seen;
use super::report::{Report, Side};

/// At most this many availability runs per webhook are printed.
const RUNS_PRINTED: usize = 20;

fn duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn latency(side: &Side, pick: fn(&super::report::Latency) -> u64) -> String {
    side.time_to_delivery_ms
        .as_ref()
        .map_or("-".into(), |l| duration_ms(pick(l)))
}

/// The report as a table.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let when =
        |t: Option<crate::ledger::record::Timestamp>| t.map_or("-".to_owned(), |t| t.to_rfc3339());
    let _ = writeln!(
        out,
        "what-if: schedule {} (budget {}, jitter off), enqueued {} .. {}{}",
        r.policy.schedule,
        r.policy.budget,
        when(r.scope.since),
        when(r.scope.until),
        r.scope
            .webhook
            .map_or(String::new(), |w| format!(", webhook {w}")),
    );
    let _ = writeln!(
        out,
        "{} records read, {} deliveries enqueued in the window, ledger ends {}",
        r.records,
        r.deliveries,
        when(r.horizon)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34} {:>14} {:>14} {:>14}",
        "", "actual", "optimistic", "pessimistic"
    );
    let sides = [&r.actual, &r.optimistic, &r.pessimistic];
    let mut row = |name: &str, f: &dyn Fn(&Side) -> String| {
        let _ = writeln!(
            out,
            "{name:<34} {:>14} {:>14} {:>14}",
            f(sides[0]),
            f(sides[1]),
            f(sides[2])
        );
    };
    row("delivered", &|s| s.delivered.to_string());
    row("dead", &|s| s.dead.to_string());
    row("parked", &|s| s.parked.to_string());
    row("pending", &|s| s.pending.to_string());
    row("time to delivery p50", &|s| latency(s, |l| l.p50));
    row("time to delivery p99", &|s| latency(s, |l| l.p99));
    row("time to delivery max", &|s| latency(s, |l| l.max));
    row("attempts", &|s| s.attempts.to_string());
    row("attempts per delivery", &|s| {
        format!("{:.3}", s.attempts_per_delivery)
    });
    row("most attempts of one delivery", &|s| {
        s.max_attempts.to_string()
    });
    row("peak attempts/minute (a webhook)", &|s| {
        s.peak_attempts_per_minute.to_string()
    });
    for w in &r.webhooks {
        let p = w.peak_attempts_per_minute;
        let _ = writeln!(
            out,
            "\nwebhook {}: {} deliveries; observed up {} times, down {}; peak attempts/minute {} actual, {} / {} candidate",
            w.webhook_id, w.deliveries, w.observed_up, w.observed_down, p.actual, p.optimistic, p.pessimistic
        );
        for run in w.availability.iter().take(RUNS_PRINTED) {
            let state = match run.seen {
                Seen::Up => "up".to_owned(),
                Seen::Down(class) => format!("down ({class})"),
            };
            let _ = writeln!(
                out,
                "  {} .. {}  {state}, {} observation(s)",
                run.from.to_rfc3339(),
                run.to.to_rfc3339(),
                run.observations
            );
        }
        let listed = w.availability.len().min(RUNS_PRINTED) as u64;
        if w.availability_runs_total > listed {
            let _ = writeln!(
                out,
                "  ... {} more runs",
                w.availability_runs_total - listed
            );
        }
    }
    let _ = writeln!(out, "\nfate changes: {}", r.changed_total);
    if !r.changed.is_empty() {
        let _ = writeln!(
            out,
            "{:<36}  {:<36}  {:<9} -> {:<10} / {:<11}  optimistic at",
            "webhook_id", "event_id", "actual", "optimistic", "pessimistic"
        );
    }
    for c in &r.changed {
        let _ = writeln!(
            out,
            "{}  {}  {:<9} -> {:<10} / {:<11}  {}",
            c.webhook_id,
            c.event_id,
            c.actual.fate.as_str(),
            c.optimistic.fate.as_str(),
            c.pessimistic.fate.as_str(),
            c.optimistic.at.to_rfc3339()
        );
    }
    if (r.changed.len() as u64) < r.changed_total {
        let _ = writeln!(out, "... {} more", r.changed_total - r.changed.len() as u64);
    }
    out
}
