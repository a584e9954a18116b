//! `deliver-http`: the whole publish path as producers use it, so that axum, JSON, auth and
//! validation are counted. A `hookledger serve` child on a fresh DuckDB file ([`serve`]), the
//! bench's receiver with `--webhooks` webhooks registered over the API, and [`PUBLISHERS`]
//! closed-loop publishers sending `POST /v1/events` over HTTP/1.1 keep-alive, until the
//! child's projection counts every delivery `delivered`. Beside it, in the same run, the
//! `baseline` POST loop (the machine's limit for one POST): the rate's ratio is to its posts/s,
//! the CPU's to its CPU per post. CPU is the child's (from /proc) plus this process's (the
//! publishers' client and the receiver), as the baseline's covers both ends of its POSTs.
//!
//! [`through_serve`] is the run itself, shared with [`super::latency`] (which paces it).
//! Invariant: a run's counts must add up or it fails: every event answered 202, every
//! delivery delivered, and the child's own `/metrics` (the child has no input but its HTTP
//! API) counting one attempt and three ledger records per delivery.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::receiver::{self, Tape};
use super::serve::{self, publish, Http, Node, Pace, PUBLISHERS};
use super::{cpu_time, figure, quantile, rate, runtime, Figure, Options};
use crate::error::{LedgerError, Result};

/// What one run through a `serve` child did.
pub struct HttpRun {
    pub deliveries: u64,
    /// From the first publish until every delivery was recorded delivered.
    pub elapsed: Duration,
    /// From the first publish until the last was answered.
    pub publishing: Duration,
    /// Publish (just before the request is sent) → first attempt at the receiver, ns, sorted.
    pub latencies: Vec<u64>,
    /// The child's CPU over `elapsed`.
    pub serve_cpu: Duration,
    /// This process's CPU over `elapsed` (publishers, receiver).
    pub own_cpu: Duration,
    /// Attempts and ledger records, as the child's `/metrics` counts them.
    pub attempts: u64,
    pub records: u64,
}

/// Each webhook's `max_in_flight` in the child: the 64 attempts in flight `deliver` runs with
/// (the child's default is 16 a webhook).
pub const IN_FLIGHT: usize = 64;

pub fn run(dir: &Path, o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let exe = serve::serve_exe(o, "deliver-http")?;
    let (base, base_cpu) = runtime()?.block_on(async {
        let tape = Arc::new(Tape::new(0, 1, 0.0, o.receiver_latency));
        let url = format!("{}/hook/0", receiver::start(tape).await?);
        let cpu = cpu_time();
        let elapsed = receiver::baseline(&url, o.concurrency, o.events).await?;
        let cpu = cpu_time().saturating_sub(cpu);
        Ok::<_, LedgerError>((rate(o.events as u64, elapsed), us_per(cpu, o.events as u64)))
    })?;
    progress(&format!("deliver-http: baseline {base:.0} posts/s"));
    let webhooks = o.webhooks.max(1);
    let run = through_serve(
        &exe,
        dir,
        "deliver-http",
        webhooks,
        o.events,
        Pace::Closed(PUBLISHERS),
        progress,
    )?;
    let r = rate(run.deliveries, run.elapsed);
    let cpu = run.serve_cpu + run.own_cpu;
    let per = us_per(cpu, run.deliveries);
    let serve_per = us_per(run.serve_cpu, run.deliveries);
    let cores = cpu.as_secs_f64() / run.elapsed.as_secs_f64().max(1e-9);
    let per_delivery = |n: u64| n as f64 / run.deliveries.max(1) as f64;
    let lat = &run.latencies;
    let f = |id: &str, name: &str, value: f64, unit: &'static str, ratio: Option<f64>| {
        figure("deliver-http", id, name, value, unit, ratio)
    };
    Ok(vec![
        f(
            "baseline",
            &format!(
                "baseline in this run: plain reqwest POST loop, concurrency {}",
                o.concurrency
            ),
            base,
            "posts/s",
            None,
        ),
        f(
            "baseline_cpu",
            "baseline in this run: process CPU per post",
            base_cpu,
            "µs",
            None,
        ),
        f(
            "rate",
            &format!(
                "POST /v1/events → delivered via `serve`, {webhooks} webhook(s), {IN_FLIGHT} in flight each, {PUBLISHERS} publishers (ratio to baseline)"
            ),
            r,
            "deliveries/s",
            Some(r / base.max(1e-9)),
        ),
        f(
            "cpu",
            &format!(
                "CPU per delivery, serve child + publishers + receiver, {cores:.2} cores busy (ratio to baseline's per post)"
            ),
            per,
            "µs",
            Some(per / base_cpu.max(1e-9)),
        ),
        f(
            "serve_cpu",
            "CPU per delivery, the serve child alone (ratio to baseline's per post)",
            serve_per,
            "µs",
            Some(serve_per / base_cpu.max(1e-9)),
        ),
        f(
            "delivered",
            "deliveries the child recorded delivered",
            run.deliveries as f64,
            "deliveries",
            None,
        ),
        f(
            "attempts_per_delivery",
            "attempts per delivery (the child's /metrics)",
            per_delivery(run.attempts),
            "attempts",
            None,
        ),
        f(
            "records_per_delivery",
            "ledger records per delivery (the child's /metrics)",
            per_delivery(run.records),
            "records",
            None,
        ),
        f(
            "p50",
            "publish → first attempt at the receiver, full rate, p50",
            ms(quantile(lat, 0.5)),
            "ms",
            None,
        ),
        f(
            "p99",
            "publish → first attempt at the receiver, full rate, p99",
            ms(quantile(lat, 0.99)),
            "ms",
            None,
        ),
    ])
}

/// Starts a `serve` child on `dir/<name>.duckdb`, registers `webhooks` webhooks at the
/// bench's receiver, publishes `events` events over HTTP as `pace` says, waits until every
/// delivery is recorded delivered, checks the counts, and stops the child.
pub fn through_serve(
    exe: &Path,
    dir: &Path,
    name: &str,
    webhooks: usize,
    events: usize,
    pace: Pace,
    progress: &mut dyn FnMut(&str),
) -> Result<HttpRun> {
    let db = dir.join(format!("{name}.duckdb"));
    let db = db.to_string_lossy().into_owned();
    let log = dir.join(format!("{name}.log"));
    let node = Node::start(exe, &["--db", &db], &serve::secret_key(), &log)?;
    progress(&format!("{name}: serve child pid {}", node.pid()));
    let tape = Arc::new(Tape::new(events, webhooks, 0.0, Duration::ZERO));
    let deliveries = (events * webhooks) as u64;
    let rt = runtime()?;
    let (http, hooks) = rt.block_on(async {
        let hooks = receiver::start(tape.clone()).await?;
        let http = Http::new(vec![node.base.clone()])?;
        http.register(&hooks, webhooks, Some(IN_FLIGHT)).await?;
        Ok::<_, LedgerError>((http, hooks))
    })?;
    let (serve_before, own_before) = (node.cpu(), cpu_time());
    let started = Instant::now();
    let publishing = rt.block_on(async {
        publish(&http, &tape, events, pace).await?;
        let publishing = started.elapsed();
        http.until_delivered(deliveries).await?;
        Ok::<_, LedgerError>(publishing)
    })?;
    let elapsed = started.elapsed();
    let (serve_cpu, own_cpu) = (
        node.cpu().saturating_sub(serve_before),
        cpu_time().saturating_sub(own_before),
    );
    let (attempts, records) = rt.block_on(async {
        let attempts = http.attempts(0).await?;
        let records = http.metric(0, "hookledger_ledger_seq").await? as u64;
        Ok::<_, LedgerError>((attempts, records))
    })?;
    drop(node);
    let latencies = tape.latencies(events);
    let arrived = tape.attempts.load(Ordering::Relaxed);
    let label = format!("{name} ({events} events × {webhooks} webhooks at {hooks})");
    if attempts != deliveries || arrived != deliveries || latencies.len() as u64 != deliveries {
        return Err(LedgerError::Invalid(format!(
            "{label}: the child made {attempts} attempts, the receiver saw {arrived} \
             ({} first attempts), for {deliveries} deliveries",
            latencies.len()
        )));
    }
    if records != 3 * deliveries {
        return Err(LedgerError::Invalid(format!(
            "{label}: {records} ledger records for {deliveries} deliveries (3 each expected)"
        )));
    }
    progress(&format!(
        "{name}: {:.0} deliveries/s",
        rate(deliveries, elapsed)
    ));
    Ok(HttpRun {
        deliveries,
        elapsed,
        publishing,
        latencies,
        serve_cpu,
        own_cpu,
        attempts,
        records,
    })
}

fn us_per(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
