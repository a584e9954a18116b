//! The `whatif` scenario: how fast a what-if ([`crate::whatif::run`]) answers over a week of a
//! busy ledger, against fetching and folding the same records in the same run.
//!
//! The ledger is written through the real writer with a manual clock that walks through seven
//! days: deliveries to four webhooks, one of them down for four hours on day two (longer than the
//! retries' reach, so some are dead-parked) and half an hour on day five, one failing a tenth of its attempts, two healthy; failed attempts are retried on
//! `5s,5m,30m,2h` (budget 5) and dead-parked after it. The what-if asks about the whole week
//! under a candidate `1m,10m,1h,3h,6h`. Its counts are checked: every generated delivery is in
//! the report, and the actual dead-parked ones are the ones the generator gave up on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;

use super::{figure, rate, resident_bytes, Figure};
use crate::clock::{Clock, ManualClock};
use crate::delivery::backoff::RetrySchedule;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{ErrorClass, Failure, NewRecord, RecordBody, Timestamp};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::{fold_records, Ledger};
use crate::store::duck::{DuckStore, OpenMode};
use crate::store::Store;
use crate::whatif::{self, Policy, Query, Scope};

const ACTUAL: [i64; 4] = [5, 5 * 60, 30 * 60, 2 * 60 * 60];
const CANDIDATE: &str = "1m,10m,1h,3h,6h";
const WEEK_SECS: i64 = 7 * 24 * 60 * 60;
const PER_STEP: usize = 1000;

pub fn run(dir: &Path, sizes: &[u64], progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let figures = super::per_size(dir, "whatif", sizes, progress, one)?;
    Ok(figures.into_iter().flatten().collect())
}

fn one(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let built = fill(path, records, progress)?;
    let store = DuckStore::open(path, OpenMode::ReadOnly)?;
    let query = Query::new(
        Scope::default(),
        Policy::new(
            RetrySchedule::parse(CANDIDATE).map_err(|e| LedgerError::Invalid(e.to_string()))?,
        ),
        100,
    )
    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    // Each figure is the better of two passes (the first also warms DuckDB's cache).
    let (mut fetch, mut fold, mut ask) = (0.0f64, 0.0f64, 0.0f64);
    let (mut seconds, mut growth) = (f64::MAX, 0u64);
    let mut report = None;
    for _ in 0..2 {
        let started = Instant::now();
        let mut fetched = 0u64;
        store.scan_records(1, u64::MAX, &mut |_| {
            fetched += 1;
            Ok(())
        })?;
        fetch = fetch.max(rate(fetched, started.elapsed()));
        let started = Instant::now();
        let folded = fold_records(&store, u64::MAX)?.last_seq();
        fold = fold.max(rate(folded, started.elapsed()));
        // The what-if frees its per-delivery state when it returns: its peak is what it costs.
        let before = resident_bytes();
        reset_peak();
        let started = Instant::now();
        let r = whatif::run(&store, &query, &mut |_| {})?;
        let elapsed = started.elapsed();
        growth = growth.max(peak_resident_bytes().saturating_sub(before));
        seconds = seconds.min(elapsed.as_secs_f64());
        ask = ask.max(rate(r.records, elapsed));
        progress(&format!(
            "whatif: asked about {} records in {elapsed:?}",
            r.records
        ));
        report = Some(r);
    }
    let report = report.expect("two passes ran");
    if report.deliveries != built.deliveries || report.actual.dead != built.dead {
        return Err(LedgerError::Invalid(format!(
            "whatif saw {} deliveries ({} dead), the generator wrote {} ({} dead)",
            report.deliveries, report.actual.dead, built.deliveries, built.dead
        )));
    }
    let n = super::rebuild::human(built.records);
    let id = records;
    Ok(vec![
        figure(
            "whatif",
            &format!("fetch_{id}"),
            &format!("fetch {n} records, nothing else (baseline)"),
            fetch,
            "records/s",
            None,
        ),
        figure(
            "whatif",
            &format!("fold_{id}"),
            &format!("fold {n} records (ratio to fetch)"),
            fold,
            "records/s",
            Some(fold / fetch),
        ),
        figure(
            "whatif",
            &format!("rate_{id}"),
            &format!("what-if over {n} records, a week (ratio to the fold)"),
            ask,
            "records/s",
            Some(ask / fold),
        ),
        figure(
            "whatif",
            &format!("seconds_{id}"),
            &format!("what-if over {n} records, time"),
            seconds,
            "s",
            None,
        ),
        figure(
            "whatif",
            &format!("memory_{id}"),
            &format!("what-if over {n} records, peak resident growth"),
            growth as f64 / 1e6,
            "MB",
            None,
        ),
        figure(
            "whatif",
            &format!("deliveries_{id}"),
            &format!("deliveries in the week of {n}"),
            report.deliveries as f64,
            "deliveries",
            None,
        ),
        figure(
            "whatif",
            &format!("dead_{id}"),
            &format!("dead-parked in the week of {n} (actual)"),
            report.actual.dead as f64,
            "deliveries",
            None,
        ),
        figure(
            "whatif",
            &format!("recovered_{id}"),
            &format!("of them delivered under {CANDIDATE} (pessimistic)"),
            report
                .pessimistic
                .delivered
                .saturating_sub(report.actual.delivered) as f64,
            "deliveries",
            None,
        ),
    ])
}

/// What the generator wrote.
struct Built {
    records: u64,
    deliveries: u64,
    dead: u64,
}

/// Whether webhook `w` answers an attempt at `t` (seconds into the week), `n` a per-attempt
/// counter that spreads webhook 1's failures.
fn answers(w: usize, t: i64, n: u64) -> bool {
    const DAY: i64 = 24 * 60 * 60;
    match w {
        0 => {
            let day2 = (DAY + 10 * 3600..DAY + 14 * 3600).contains(&t);
            let day5 = (4 * DAY + 3 * 3600..4 * DAY + 3 * 3600 + 1800).contains(&t);
            !(day2 || day5)
        }
        1 => n % 10 != 7,
        _ => true,
    }
}

/// Writes about `records` records over a week; returns the counts.
fn fill(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    let clock = ManualClock::at_epoch();
    let start = clock.now();
    let ledger = Ledger::open(path, Arc::new(clock.clone()))?;
    let webhooks: Vec<WebhookId> = (0..4).map(|_| WebhookId::new()).collect();
    let steps = (records / (PER_STEP as u64 * 3)).max(1) as i64;
    let step_secs = (WEEK_SECS / steps).max(1);
    // Retries waiting: (due second, delivery number, attempt just failed).
    let mut waiting: BinaryHeap<Reverse<(i64, u64, u16)>> = BinaryHeap::new();
    let mut keys: Vec<(DeliveryKey, usize)> = Vec::new();
    let (mut written, mut dead, mut attempts_made) = (0u64, 0u64, 0u64);
    let (started, mut told) = (Instant::now(), Instant::now());
    let mut step = 0i64;
    while written < records || !waiting.is_empty() {
        let t = step * step_secs;
        step += 1;
        clock.set(start + Duration::seconds(t));
        let mut first = Commit::default();
        let mut tried: Vec<(u64, u16)> = Vec::new();
        if written < records {
            for _ in 0..PER_STEP {
                let n = keys.len() as u64;
                let w = (n % 4) as usize;
                let key = DeliveryKey::new(webhooks[w], EventId::new());
                keys.push((key, w));
                first.events.push(NewEvent {
                    event_id: key.event_id,
                    event_type: "bench".into(),
                    body: b"{}".to_vec(),
                    ..Default::default()
                });
                first.records.push(NewRecord::new(
                    key,
                    RecordBody::Enqueued {
                        due_at: at(start, t),
                    },
                ));
                first
                    .records
                    .push(NewRecord::new(key, RecordBody::Attempted { attempt: 1 }));
                tried.push((n, 1));
            }
        }
        while let Some(&Reverse((due, n, attempt))) = waiting.peek() {
            if due > t {
                break;
            }
            waiting.pop();
            let key = keys[n as usize].0;
            first.records.push(NewRecord::new(
                key,
                RecordBody::Attempted {
                    attempt: attempt + 1,
                },
            ));
            tried.push((n, attempt + 1));
        }
        let mut outcomes = Vec::with_capacity(tried.len());
        for &(n, attempt) in &tried {
            let (key, w) = keys[n as usize];
            attempts_made += 1;
            if answers(w, t, attempts_made) {
                outcomes.push(NewRecord::new(
                    key,
                    RecordBody::Delivered {
                        attempt,
                        status: 200,
                        duration_ms: 3,
                    },
                ));
                continue;
            }
            let delay = ACTUAL.get(usize::from(attempt) - 1).copied();
            outcomes.push(NewRecord::new(
                key,
                RecordBody::Failed(Failure {
                    attempt,
                    status: Some(503),
                    error_class: ErrorClass::Status,
                    error: "HTTP 503".into(),
                    duration_ms: 3,
                    next_due_at: at(start, t + delay.unwrap_or(0)),
                    response_body: None,
                }),
            ));
            match delay {
                Some(d) => waiting.push(Reverse((t + d, n, attempt))),
                None => {
                    dead += 1;
                    let reason = "attempt budget spent".to_owned();
                    outcomes.push(NewRecord::new(key, RecordBody::DeadParked { reason }));
                }
            }
        }
        written += (first.records.len() + outcomes.len()) as u64;
        if !first.records.is_empty() {
            ledger.commit_blocking(first)?;
            ledger.commit_blocking(Commit {
                records: outcomes,
                ..Commit::default()
            })?;
        }
        if told.elapsed().as_secs() >= 5 {
            told = Instant::now();
            let r = rate(written, started.elapsed());
            progress(&format!(
                "whatif: wrote {written} of {records} records ({r:.0}/s)"
            ));
        }
    }
    ledger.close();
    Ok(Built {
        records: written,
        deliveries: keys.len() as u64,
        dead,
    })
}

fn at(start: Timestamp, secs: i64) -> Timestamp {
    start + Duration::seconds(secs)
}

/// Resets this process's peak resident set (`VmHWM`) to its current size (Linux; elsewhere the
/// figure is the peak since start).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident memory in bytes (`VmHWM`; 0 where there is no /proc).
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
