//! `hookledger bench`: measures the ledger on this machine and prints its figures, each beside
//! a baseline measured in the same run (the machine is shared and noisy, so ratios travel and
//! absolute numbers do not).
//!
//! Every scenario starts what it needs itself: a temporary database and, where HTTP is
//! involved, an in-process receiver on 127.0.0.1 ([`receiver`]); those that run the whole
//! service start `hookledger serve` children and publish to them over HTTP ([`serve`]).
//!
//! | scenario | what it measures | module |
//! |---|---|---|
//! | `baseline` | a plain reqwest POST loop to the receiver: this machine's limit | [`receiver`] |
//! | `deliver` | publish → recorded `delivered`, vs. `baseline`; publish→receiver latency at full and half rate | [`deliver`] |
//! | `deliver-http` | `POST /v1/events` over HTTP/1.1 keep-alive from 64 publishers to a `serve` child → delivered, vs. `baseline` in the same run: rate, and CPU per delivery (child + bench process) vs. per post | [`deliver_http`] |
//! | `latency` | `--rate` events/s for `--seconds` (200 for 10 s) through `deliver-http`'s path: publish → receiver p50/p99, vs. a one-row, one-table DuckDB commit's p50/p99 | [`latency`] |
//! | `retry` | the same with 30 % of first attempts answered 500 and a short backoff | [`deliver`] |
//! | `disk` | ledger bytes per happy-path delivery | [`disk`] |
//! | `rebuild` | folding N records vs. fetching them; memory after the fold | [`rebuild`] |
//! | `commit` | one durable commit of a few rows; group commit under concurrent publishers | [`commit`] |
//! | `due` | a re-drive pass's pick (`due_fair`: 256 at most, 16 a webhook, over 64 webhooks, a quarter of them stalled) with 10 k vs. 1 M pending; projection memory | [`due`] |
//! | `whatif` | a what-if over a week of 1 M and 10 M records vs. fetching and folding them | [`whatif`] |
//! | `commit`, `deliver` with `--store URL` | the same on PostgreSQL, one node, ratio to DuckDB's | [`pg`] |
//! | `cluster` with `--store URL` | `serve` child processes over HTTP: DuckDB 1 node, PostgreSQL 1 node, PostgreSQL 2 nodes on one schema | [`cluster`] |
//! | `sqlload` | `deliver` without and with an auditor's heavy query (`POST /v1/sql`'s code and limits) running back to back | [`sqlload`] |
//! | `history` | open-to-ready, memory, commit latency, checkpoint pauses and `state_at` at two ledger sizes, and their ratios | [`history`] |
//!
//! Each [`Figure`] has a stable `id` (for `--json` consumers and the tests) and, where the
//! figure has a same-run baseline or target reference, the ratio to it. Scenarios check their
//! own counts (every delivery delivered, records add up) and fail rather than print a figure
//! from a run that went wrong.

mod cluster;
mod commit;
mod deliver;
mod deliver_http;
mod disk;
mod duck_checkpoint;
mod due;
pub mod history;
mod history_window;
mod latency;
mod pauses;
mod pg;
pub(crate) mod rebuild;
mod receiver;
mod serve;
mod sqlload;
mod whatif;

use std::time::Duration;

use serde::Serialize;

use crate::error::{LedgerError, Result};

/// The scenario names `--scenario` accepts (`all` runs every one).
pub const SCENARIOS: &[&str] = &[
    "baseline",
    "deliver",
    "deliver-http",
    "latency",
    "retry",
    "rebuild",
    "commit",
    "due",
    "disk",
    "whatif",
    "history",
    "cluster",
    "sqlload",
    "all",
];

/// What to run, and at what size.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: String,
    /// Rebuild sizes, in records (one fold per size).
    pub records: Vec<u64>,
    /// Events published by `deliver`, `retry` and `disk`, and POSTs made by `baseline`.
    pub events: usize,
    /// Webhooks every event fans out to.
    pub webhooks: usize,
    /// Attempts in flight at once (and the baseline's concurrent POSTs).
    pub concurrency: usize,
    /// Concurrent publishers in the full-rate run (more publishers, larger group commits).
    pub publishers: usize,
    /// How long the receiver waits before answering.
    pub receiver_latency: Duration,
    /// Pending-queue sizes for `due` (the first is the reference for the ratio).
    pub pending: Vec<usize>,
    /// Ledger sizes for `history` (the first is the reference for the ratios).
    pub history_records: Vec<u64>,
    /// Ledger sizes for `whatif`, in records (one week each).
    pub whatif_records: Vec<u64>,
    /// Events per second `latency` publishes at.
    pub rate: f64,
    /// How long `latency` publishes for, in seconds.
    pub seconds: f64,
    /// A PostgreSQL server (`--store`): `commit` and `deliver` also run there, each in a
    /// schema of its own.
    pub store: Option<String>,
    /// The `hookledger` binary `cluster`, `deliver-http` and `latency` start as `serve`
    /// children (default: this process's own executable, when it is `hookledger`).
    pub exe: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenario: "all".into(),
            records: vec![1_000_000],
            events: 200_000,
            webhooks: 1,
            concurrency: 64,
            publishers: 512,
            receiver_latency: Duration::ZERO,
            pending: vec![10_000, 1_000_000],
            history_records: vec![1_000_000, 10_000_000],
            whatif_records: vec![1_000_000, 10_000_000],
            rate: 200.0,
            seconds: 10.0,
            store: None,
            exe: None,
        }
    }
}

impl Options {
    /// Small sizes that finish in a second or two: for tests of the scenarios' logic.
    pub fn small(scenario: &str) -> Self {
        Self {
            scenario: scenario.into(),
            records: vec![30_000],
            events: 1_000,
            webhooks: 1,
            concurrency: 16,
            publishers: 64,
            receiver_latency: Duration::ZERO,
            pending: vec![1_000, 10_000],
            history_records: vec![30_000, 60_000],
            whatif_records: vec![20_000],
            rate: 200.0,
            seconds: 0.5,
            store: None,
            exe: None,
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    /// A stable key, e.g. `deliver.rate`.
    pub id: String,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The figure divided by its reference in the same run (named in `name`), where there is one.
    pub ratio: Option<f64>,
}

/// Runs the chosen scenario (or all of them) and returns the figures. Progress lines go to
/// `progress`.
pub fn run(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let dir = tempdir()?;
    let result = run_in(&dir, options, progress);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    dir: &std::path::Path,
    o: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Figure>> {
    let wants = |name: &str| o.scenario == name || o.scenario == "all";
    if !SCENARIOS.contains(&o.scenario.as_str()) {
        return Err(LedgerError::Invalid(format!(
            "unknown scenario `{}`; one of {}",
            o.scenario,
            SCENARIOS.join(", ")
        )));
    }
    let mut figures = Vec::new();
    // `due` first: its memory figure is an RSS delta, cleanest before other scenarios have
    // grown and freed the heap.
    if wants("due") {
        figures.extend(due::run(&o.pending, progress)?);
    }
    if wants("commit") {
        figures.extend(commit::run(dir, o.store.as_deref(), progress)?);
    }
    if wants("rebuild") {
        figures.extend(rebuild::run(dir, &o.records, progress)?);
    }
    if wants("whatif") {
        figures.extend(whatif::run(dir, &o.whatif_records, progress)?);
    }
    // Only when asked by name: at the default sizes it writes 11 M records.
    if o.scenario == "history" {
        figures.extend(history::run(dir, &o.history_records, progress)?);
    }
    // By name, or in `all` when there is a PostgreSQL server to run it on.
    if o.scenario == "cluster" || (o.scenario == "all" && o.store.is_some()) {
        figures.extend(cluster::run(dir, o, progress)?);
    }
    if wants("deliver-http") {
        figures.extend(deliver_http::run(dir, o, progress)?);
    }
    if wants("latency") {
        figures.extend(latency::run(dir, o, progress)?);
    }
    let http = ["baseline", "deliver", "retry", "disk", "sqlload"];
    if http.iter().any(|s| wants(s)) {
        let want: Vec<&str> = http.into_iter().filter(|s| wants(s)).collect();
        figures.extend(deliver::run(dir, o, &want, progress)?);
    }
    Ok(figures)
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hookledger-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| LedgerError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub(crate) fn figure(
    scenario: &'static str,
    id: &str,
    name: &str,
    value: f64,
    unit: &'static str,
    ratio: Option<f64>,
) -> Figure {
    Figure {
        scenario,
        id: format!("{scenario}.{id}"),
        name: name.to_owned(),
        value,
        unit,
        ratio,
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// This process's resident memory in bytes (`VmRSS` from /proc/self/status; 0 where there is
/// no /proc).
pub(crate) fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time this process has used so far, user and system, all threads (getrusage).
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LedgerError::Invalid(format!("cannot start a runtime: {e}")))
}

/// The figures as a table.
pub fn render(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<12} {:<66} {:>14} {:<12} {:>8}\n",
        "scenario", "figure", "value", "unit", "ratio"
    );
    for f in figures {
        let ratio = f.ratio.map_or(String::new(), |r| format!("{r:.3}x"));
        let value = if f.value.abs() >= 100.0 || f.value == f.value.trunc() {
            format!("{:.0}", f.value)
        } else {
            format!("{:.2}", f.value)
        };
        out.push_str(&format!(
            "{:<12} {:<66} {:>14} {:<12} {:>8}\n",
            f.scenario, f.name, value, f.unit, ratio
        ));
    }
    out
}

/// The figure with this id, for callers that check a run (the tests).
pub fn find<'a>(figures: &'a [Figure], id: &str) -> Option<&'a Figure> {
    figures.iter().find(|f| f.id == id)
}

/// Runs `one` on a fresh ledger file `<name>-<records>.duckdb` in `dir` for each size, removing
/// the file (and its WAL) after each, and collects what each run answers.
fn per_size<T>(
    dir: &std::path::Path,
    name: &str,
    sizes: &[u64],
    progress: &mut dyn FnMut(&str),
    mut one: impl FnMut(&std::path::Path, u64, &mut dyn FnMut(&str)) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for &records in sizes {
        let path = dir.join(format!("{name}-{records}.duckdb"));
        out.push(one(&path, records, progress)?);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
    }
    Ok(out)
}
