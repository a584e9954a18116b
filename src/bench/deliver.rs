//! The HTTP scenarios: `baseline`, `deliver`, `retry` and `disk`.
//!
//! [`drive`] runs the real service path in-process: a ledger on a temporary file, W webhooks
//! pointing at the bench's receiver, the engine with its re-drive loop running (as `serve` runs
//! it), and events published through [`Engine::publish`], either by many concurrent publishers
//! (the full rate) or paced at a fixed rate (for latency at a known load). It returns once every
//! delivery is recorded `delivered`, and checks that the records add up: three per happy-path
//! delivery, two more per refused attempt.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::receiver::{self, Tape, BODY};
use super::{commit, cpu_time, disk, figure, quantile, rate, runtime, Figure, Options};
use crate::clock::SystemClock;
use crate::delivery::backoff::RetrySchedule;
use crate::delivery::engine::{Engine, EngineConfig, Publish};
use crate::delivery::guard::EgressPolicy;
use crate::delivery::sender::{Sender, SenderConfig};
use crate::delivery::signing::Secret;
use crate::error::{LedgerError, Result};
use crate::ids::WebhookId;
use crate::ledger::writer::Commit;
use crate::ledger::Ledger;
use crate::registry::Change;
use crate::store::any::Location;

/// Share of first attempts the receiver refuses in `retry`.
const RETRY_FAIL_SHARE: f64 = 0.3;
/// The shortened backoff of `retry`.
const RETRY_SCHEDULE: &str = "20ms,20ms,20ms,20ms,20ms,20ms,20ms";
/// How long the half-rate run publishes for, at most.
const PACED_FOR: Duration = Duration::from_secs(5);

/// One engine run's shape.
struct Spec {
    events: usize,
    webhooks: usize,
    concurrency: usize,
    publishers: usize,
    fail_first: f64,
    latency: Duration,
    /// Events per second, or as fast as `publishers` go.
    pace: Option<f64>,
    schedule: RetrySchedule,
    /// Run [`super::sqlload`]'s heavy query beside the deliveries.
    heavy_sql: bool,
}

/// What one engine run did.
struct Run {
    elapsed: Duration,
    deliveries: u64,
    records: u64,
    attempts: u64,
    /// Publish → first attempt at the receiver, nanoseconds, sorted.
    latencies: Vec<u64>,
    /// CPU time the whole process used (engine, ledger, receiver).
    cpu: Duration,
    /// What the heavy query did, when it ran.
    sql: Option<super::sqlload::Ran>,
    /// How long the writer's transactions and idle checkpoints held it.
    pauses: super::pauses::Pauses,
}

pub fn run(
    dir: &Path,
    o: &Options,
    want: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Figure>> {
    // The commit reference is taken outside the runtime: it blocks on the writer.
    let commit_ns = if want.contains(&"deliver") {
        Some(commit::one_commit_ns(dir, 50)?)
    } else {
        None
    };
    runtime()?.block_on(async {
        let mut figures = Vec::new();
        let mut base = None;
        let mut base_cpu = None;
        if want
            .iter()
            .any(|s| ["baseline", "deliver", "retry"].contains(s))
        {
            let tape = Arc::new(Tape::new(0, 1, 0.0, o.receiver_latency));
            let url = format!("{}/hook/0", receiver::start(tape).await?);
            let cpu = cpu_time();
            let elapsed = receiver::baseline(&url, o.concurrency, o.events).await?;
            let cpu = cpu_time().saturating_sub(cpu);
            let r = rate(o.events as u64, elapsed);
            progress(&format!("baseline: {r:.0} posts/s"));
            base = Some(r);
            let name = format!("plain reqwest POST loop, concurrency {}", o.concurrency);
            figures.push(figure("baseline", "rate", &name, r, "posts/s", None));
            let per_post = us_per(cpu, o.events as u64);
            base_cpu = Some(per_post);
            figures.push(cpu_figure("baseline", "per post", per_post, cpu, elapsed, None));
        }
        let spec = |fail_first: f64, schedule: &str| -> Result<Spec> {
            Ok(Spec {
                events: o.events,
                webhooks: o.webhooks.max(1),
                concurrency: o.concurrency.max(1),
                publishers: o.publishers.max(1),
                fail_first,
                latency: o.receiver_latency,
                pace: None,
                schedule: RetrySchedule::parse(schedule)
                    .map_err(|e| LedgerError::Invalid(e.to_string()))?,
                heavy_sql: false,
            })
        };
        let mut deliver_db = None;
        if want.contains(&"deliver") {
            let path = dir.join("deliver.duckdb");
            let full = drive(&duck(&path), spec(0.0, "5s")?, progress).await?;
            figures.extend(throughput("deliver", &full, base, o));
            let per = us_per(full.cpu, full.deliveries);
            let ceiling = base_cpu.map(|b| b / per);
            figures.push(cpu_figure(
                "deliver",
                "per delivery (ratio: baseline's per post / this, the throughput ratio's ceiling while the cores are saturated)",
                per,
                full.cpu,
                full.elapsed,
                ceiling,
            ));
            let commit_ns = commit_ns.unwrap_or(1);
            let events_per_s = rate(full.deliveries, full.elapsed) / o.webhooks.max(1) as f64 / 2.0;
            let events = ((events_per_s * PACED_FOR.as_secs_f64()) as usize).clamp(1, o.events);
            let paced = Spec {
                events,
                pace: Some(events_per_s),
                ..spec(0.0, "5s")?
            };
            let half = drive(&duck(&dir.join("deliver-half.duckdb")), paced, progress).await?;
            figures.extend(half_rate(&half, commit_ns));
            if let Some(url) = &o.store {
                let url = url.clone();
                let schema = tokio::task::spawn_blocking(move || super::pg::BenchSchema::create(&url))
                    .await
                    .map_err(|e| LedgerError::Invalid(e.to_string()))??;
                let on_pg = drive(&schema.location(), spec(0.0, "5s")?, progress).await?;
                let pg_rate = rate(on_pg.deliveries, on_pg.elapsed);
                figures.push(figure(
                    "deliver",
                    "pg_rate",
                    "published → delivered on PostgreSQL, one node (ratio to the same on DuckDB; target ≥ 0.5)",
                    pg_rate,
                    "deliveries/s",
                    Some(pg_rate / rate(full.deliveries, full.elapsed).max(1e-9)),
                ));
                figures.push(cpu_figure(
                    "deliver",
                    "per delivery on PostgreSQL (this process only, not the server)",
                    us_per(on_pg.cpu, on_pg.deliveries),
                    on_pg.cpu,
                    on_pg.elapsed,
                    None,
                ));
                tokio::task::spawn_blocking(move || drop(schema))
                    .await
                    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
            }
            deliver_db = Some((path, full.deliveries));
        }
        if want.contains(&"retry") {
            let path = dir.join("retry.duckdb");
            let run = drive(&duck(&path), spec(RETRY_FAIL_SHARE, RETRY_SCHEDULE)?, progress).await?;
            figures.extend(throughput("retry", &run, base, o));
        }
        if want.contains(&"sqlload") {
            let plain = drive(&duck(&dir.join("sqlload-plain.duckdb")), spec(0.0, "5s")?, progress).await?;
            let heavy = Spec {
                heavy_sql: true,
                ..spec(0.0, "5s")?
            };
            let loaded = drive(&duck(&dir.join("sqlload-heavy.duckdb")), heavy, progress).await?;
            figures.extend(sql_load(&plain, &loaded));
        }
        if want.contains(&"disk") {
            let (path, deliveries) = match deliver_db {
                Some(found) => found,
                None => {
                    let path = dir.join("disk.duckdb");
                    let run = drive(&duck(&path), spec(0.0, "5s")?, progress).await?;
                    (path, run.deliveries)
                }
            };
            figures.extend(disk::figures(dir, &path, deliveries)?);
        }
        Ok(figures)
    })
}

/// Deliveries with the heavy query running beside them, against the same run without it.
fn sql_load(plain: &Run, loaded: &Run) -> Vec<Figure> {
    let (p, l) = (
        rate(plain.deliveries, plain.elapsed),
        rate(loaded.deliveries, loaded.elapsed),
    );
    let ran = loaded.sql.unwrap_or_default();
    vec![
        figure(
            "sqlload",
            "plain",
            "published → delivered, no query running",
            p,
            "deliveries/s",
            None,
        ),
        figure(
            "sqlload",
            "loaded",
            "the same with the heavy query back to back (ratio to without)",
            l,
            "deliveries/s",
            Some(l / p.max(1e-9)),
        ),
        figure(
            "sqlload",
            "interrupted",
            "heavy queries interrupted at the 10 s limit",
            ran.interrupted as f64,
            "queries",
            None,
        ),
        figure(
            "sqlload",
            "answered",
            "heavy queries that answered within it",
            ran.answered as f64,
            "queries",
            None,
        ),
    ]
}

fn duck(path: &Path) -> Location {
    Location::Duck(path.to_owned())
}

fn us_per(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// CPU per unit of work, and how many cores were busy on average.
fn cpu_figure(
    scenario: &'static str,
    what: &str,
    per: f64,
    cpu: Duration,
    elapsed: Duration,
    ratio: Option<f64>,
) -> Figure {
    let cores = cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    figure(
        scenario,
        "cpu",
        &format!("process CPU {what}, {cores:.2} cores busy"),
        per,
        "µs",
        ratio,
    )
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Rate (with its ratio to the baseline), counts and full-rate latency of one run.
fn throughput(scenario: &'static str, run: &Run, base: Option<f64>, o: &Options) -> Vec<Figure> {
    let r = rate(run.deliveries, run.elapsed);
    let per = |n: u64| n as f64 / run.deliveries.max(1) as f64;
    let lat = &run.latencies;
    let shape = format!(
        "{} webhook(s), {} in flight, {} publishers",
        o.webhooks, o.concurrency, o.publishers
    );
    vec![
        figure(
            scenario,
            "rate",
            &format!("published → delivered, {shape} (ratio to baseline)"),
            r,
            "deliveries/s",
            base.map(|b| r / b),
        ),
        figure(
            scenario,
            "delivered",
            "deliveries recorded delivered",
            run.deliveries as f64,
            "deliveries",
            None,
        ),
        figure(
            scenario,
            "records_per_delivery",
            "ledger records per delivery",
            per(run.records),
            "records",
            None,
        ),
        figure(
            scenario,
            "attempts_per_delivery",
            "attempts per delivery",
            per(run.attempts),
            "attempts",
            None,
        ),
        figure(
            scenario,
            "p50",
            "publish → first attempt at the receiver, full rate, p50",
            ms(quantile(lat, 0.5)),
            "ms",
            None,
        ),
        figure(
            scenario,
            "p99",
            "publish → first attempt at the receiver, full rate, p99",
            ms(quantile(lat, 0.99)),
            "ms",
            None,
        ),
    ]
}

/// Latency at half the full rate, against one durable commit measured in the same run.
fn half_rate(run: &Run, commit_ns: u64) -> Vec<Figure> {
    let lat = &run.latencies;
    let r = rate(run.deliveries, run.elapsed);
    let to_commit = |ns: u64| Some(ns as f64 / commit_ns.max(1) as f64);
    vec![
        figure(
            "deliver",
            "commit_p50",
            "one durable commit, p50 (reference for the next three)",
            ms(commit_ns),
            "ms",
            None,
        ),
        figure(
            "deliver",
            "half_rate",
            "half rate: deliveries/s achieved",
            r,
            "deliveries/s",
            None,
        ),
        figure(
            "deliver",
            "half_p50",
            "half rate: publish → first attempt at the receiver, p50",
            ms(quantile(lat, 0.5)),
            "ms",
            to_commit(quantile(lat, 0.5)),
        ),
        figure(
            "deliver",
            "half_p99",
            "half rate: publish → first attempt at the receiver, p99",
            ms(quantile(lat, 0.99)),
            "ms",
            to_commit(quantile(lat, 0.99)),
        ),
        figure(
            "deliver",
            "half_max",
            "half rate: publish → first attempt at the receiver, max",
            ms(lat.last().copied().unwrap_or(0)),
            "ms",
            to_commit(lat.last().copied().unwrap_or(0)),
        ),
    ]
    .into_iter()
    .chain(super::pauses::figures(
        "deliver",
        "half",
        &run.pauses,
        commit_ns,
    ))
    .collect()
}

/// Publishes `spec.events` events through the engine and waits until every delivery is
/// recorded delivered.
async fn drive(at: &Location, spec: Spec, progress: &mut dyn FnMut(&str)) -> Result<Run> {
    let tape = Arc::new(Tape::new(
        spec.events,
        spec.webhooks,
        spec.fail_first,
        spec.latency,
    ));
    let base_url = receiver::start(tape.clone()).await?;
    let clock = Arc::new(SystemClock);
    let opened = {
        let (at, clock) = (at.clone(), clock.clone());
        tokio::task::spawn_blocking(move || {
            Ledger::open_at(&at, clock, &crate::ledger::LedgerOptions::from_env()?)
        })
        .await
        .map_err(|e| LedgerError::Invalid(e.to_string()))??
    };
    let ledger = Arc::new(opened);
    let changes = (0..spec.webhooks)
        .map(|w| {
            let change = Change::Created {
                url: format!("{base_url}/hook/{w}"),
                event_types: vec![],
                description: None,
                secret: Secret::generate(),
                app: crate::ids::AppUid::default_app(),
                payload_format: Default::default(),
            };
            (WebhookId::new(), change)
        })
        .collect();
    ledger
        .commit(Commit {
            changes,
            ..Commit::default()
        })
        .await?;
    let egress = EgressPolicy::parse_allowlist("127.0.0.1")
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let sender = Sender::new(SenderConfig {
        egress: Arc::new(egress),
        ..SenderConfig::default()
    })
    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let config = EngineConfig {
        schedule: spec.schedule.clone(),
        max_in_flight: spec.concurrency,
        per_webhook: spec.concurrency,
    };
    let engine = Engine::new(ledger.clone(), sender, clock, config);
    let (stop, stopped) = watch::channel(false);
    let redrive = tokio::spawn(engine.clone().run(stopped));
    let load = spec
        .heavy_sql
        .then(|| super::sqlload::Load::start(ledger.clone()));
    let started = Instant::now();
    let cpu = cpu_time();
    let pauses_before = super::pauses::Pauses::now(&ledger);
    let publishers = publish(&engine, &tape, &spec);
    for p in publishers {
        p.await.map_err(|e| LedgerError::Invalid(e.to_string()))??;
    }
    let deliveries = (spec.events * spec.webhooks) as u64;
    wait_delivered(&ledger, deliveries, progress).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    let pauses = super::pauses::Pauses::now(&ledger).since(&pauses_before);
    let _ = stop.send(true);
    let _ = redrive.await;
    let sql = match load {
        Some(load) => Some(
            tokio::task::spawn_blocking(move || load.stop())
                .await
                .map_err(|e| LedgerError::Invalid(e.to_string()))??,
        ),
        None => None,
    };
    let records = ledger.shared().read_projection().last_seq();
    let refused = tape.refused.load(Ordering::Relaxed);
    if records != 3 * deliveries + 2 * refused {
        return Err(LedgerError::Invalid(format!(
            "{records} records for {deliveries} deliveries and {refused} refused attempts"
        )));
    }
    Ok(Run {
        elapsed,
        deliveries,
        records,
        attempts: tape.attempts.load(Ordering::Relaxed),
        latencies: tape.latencies(spec.events),
        cpu,
        sql,
        pauses,
    })
}

/// Starts the publishers: `spec.publishers` closed loops, or one pacer spawning a publish at
/// each tick of `spec.pace`.
fn publish(
    engine: &Arc<Engine>,
    tape: &Arc<Tape>,
    spec: &Spec,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    let payload: serde_json::Value = serde_json::from_str(BODY).unwrap_or_default();
    let one = move |engine: Arc<Engine>, tape: Arc<Tape>, payload: serde_json::Value, i| async move {
        tape.mark_published(i);
        let req = Publish::new(
            Some(crate::ids::ProducerId::of_uuid(tape.event_id(i))),
            "order.created".into(),
            payload,
        );
        engine.publish(req).await.map(|_| ())
    };
    let total = spec.events;
    if let Some(pace) = spec.pace {
        let (engine, tape) = (engine.clone(), tape.clone());
        let pacer = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut running = Vec::with_capacity(total);
            for i in 0..total {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / pace)).await;
                running.push(tokio::spawn(one(
                    engine.clone(),
                    tape.clone(),
                    payload.clone(),
                    i,
                )));
            }
            for r in running {
                r.await.map_err(|e| LedgerError::Invalid(e.to_string()))??;
            }
            Ok(())
        });
        return vec![pacer];
    }
    let next = Arc::new(AtomicUsize::new(0));
    (0..spec.publishers)
        .map(|_| {
            let (engine, tape, next) = (engine.clone(), tape.clone(), next.clone());
            let payload = payload.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(());
                    }
                    one(engine.clone(), tape.clone(), payload.clone(), i).await?;
                }
            })
        })
        .collect()
}

/// Waits until `deliveries` are recorded delivered; fails if nothing moves for 30 s.
async fn wait_delivered(
    ledger: &Ledger,
    deliveries: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut last = (0, Instant::now());
    let mut told = Instant::now();
    loop {
        let delivered = ledger.shared().read_projection().counts().delivered;
        if delivered >= deliveries {
            return Ok(());
        }
        if delivered != last.0 {
            last = (delivered, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(LedgerError::Invalid(format!(
                "stalled at {delivered} of {deliveries} deliveries delivered"
            )));
        }
        if told.elapsed() > Duration::from_secs(3) {
            told = Instant::now();
            progress(&format!("  {delivered} of {deliveries} delivered"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
