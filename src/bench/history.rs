//! The `history` scenario: what running a ledger costs as its history grows. For each size (by
//! default 1 M and 10 M records) it builds a ledger through the real writer (10,000 deliveries
//! left pending from the start, then happy-path deliveries, a projection checkpoint every
//! [`DEFAULT_CHECKPOINT_EVERY`] records), then measures:
//!
//! - open-to-ready with checkpoints, and with them disabled (the full fold, as records/s);
//! - resident memory once ready (in a fresh process when run from the `hookledger` binary);
//! - commit p50/p99/max over fixed windows of publishes (with projection checkpoints every
//!   2,000 records during them) and the longest DuckDB checkpoint after such a window (what
//!   every commit waits behind when DuckDB checkpoints by itself) with the rows DuckDB's vacuum
//!   merged in it (none with the store's default, `duck_checkpoint.rs`), the longest one
//!   without a tail compaction by that vacuum, and the checkpoint right after a bucket seals
//!   (best of 3, measured last);
//! - `state_at` for the instant of the middle record;
//! - the file size;
//!
//! and prints the large/small ratio of each (the last size against the first).
//!
//! With `HOOKLEDGER_BENCH_KEEP=DIR` each ledger is also copied to `DIR` as it was filled, for
//! profiling an open or a checkpoint on it afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::history_window::{commit_window, seal_pause};
use super::{figure, quantile, rate, resident_bytes, Figure};
use crate::clock::SystemClock;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{NewRecord, RecordBody};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::{Ledger, LedgerOptions, DEFAULT_CHECKPOINT_EVERY};

/// Deliveries left pending for the whole history.
pub const LIVE: usize = 10_000;

/// One size's measurements.
#[derive(Clone, Copy, Debug, Default)]
struct Sized {
    records: u64,
    open_ms: f64,
    open_full_ms: f64,
    tail: f64,
    rss_mb: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    pause_ms: f64,
    pause_merged_rows: f64,
    plain_pause_ms: f64,
    seal_pause_ms: f64,
    copy_ms: f64,
    state_at_ms: f64,
    file_mb: f64,
    checkpoint_bytes: f64,
}

pub fn run(dir: &Path, sizes: &[u64], progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let measured = super::per_size(dir, "history", sizes, progress, one)?;
    let mut figures = Vec::new();
    for m in &measured {
        figures.extend(size_figures(m));
    }
    if let (Some(small), Some(large)) = (measured.first(), measured.last()) {
        if measured.len() > 1 {
            figures.extend(ratios(small, large));
        }
    }
    Ok(figures)
}

fn size_figures(m: &Sized) -> Vec<Figure> {
    let n = m.records;
    let f = |id: &str, name: &str, v: f64, unit: &'static str| {
        figure(
            "history",
            &format!("{id}_{n}"),
            &format!("{name}, {n} records"),
            v,
            unit,
            None,
        )
    };
    vec![
        f("open", "open-to-ready with checkpoints", m.open_ms, "ms"),
        f(
            "open_full",
            "open-to-ready, checkpoints disabled",
            m.open_full_ms,
            "ms",
        ),
        f(
            "tail",
            "records folded after the checkpoint at open",
            m.tail,
            "records",
        ),
        f(
            "rebuild_rate",
            "full fold without checkpoints",
            rate(n, Duration::from_secs_f64(m.open_full_ms / 1e3)),
            "records/s",
        ),
        f("rss", "resident memory once ready", m.rss_mb, "MB"),
        f("commit_p50", "publish commit p50", m.p50_ms, "ms"),
        f("commit_p99", "publish commit p99", m.p99_ms, "ms"),
        f("commit_max", "publish commit max", m.max_ms, "ms"),
        f(
            "pause",
            "longest DuckDB checkpoint after a window",
            m.pause_ms,
            "ms",
        ),
        f(
            "pause_merged",
            "rows DuckDB's vacuum merged in that checkpoint",
            m.pause_merged_rows,
            "rows",
        ),
        f(
            "plain_pause",
            "longest DuckDB checkpoint without a tail compaction",
            m.plain_pause_ms,
            "ms",
        ),
        f(
            "seal_pause",
            "DuckDB checkpoint right after a bucket seals",
            m.seal_pause_ms,
            "ms",
        ),
        f(
            "copy",
            "longest projection copy (the writer may wait)",
            m.copy_ms,
            "ms",
        ),
        f(
            "state_at",
            "state_at the middle instant",
            m.state_at_ms,
            "ms",
        ),
        f("file", "file size", m.file_mb, "MB"),
        f(
            "checkpoint_per_live",
            "checkpoint bytes per live delivery",
            m.checkpoint_bytes,
            "bytes",
        ),
    ]
}

fn ratios(s: &Sized, l: &Sized) -> Vec<Figure> {
    let r = |id: &str, name: &str, a: f64, b: f64| {
        let ratio = b / a.max(1e-9);
        figure(
            "history",
            &format!("ratio_{id}"),
            &format!("{name}: {} / {} records", l.records, s.records),
            ratio,
            "x",
            Some(ratio),
        )
    };
    vec![
        r("open", "open-to-ready", s.open_ms, l.open_ms),
        r(
            "open_full",
            "open-to-ready without checkpoints",
            s.open_full_ms,
            l.open_full_ms,
        ),
        r("rss", "resident memory", s.rss_mb, l.rss_mb),
        r("commit_p50", "commit p50", s.p50_ms, l.p50_ms),
        r("commit_p99", "commit p99", s.p99_ms, l.p99_ms),
        r("commit_max", "commit max", s.max_ms, l.max_ms),
        r("pause", "longest checkpoint pause", s.pause_ms, l.pause_ms),
        r(
            "plain_pause",
            "longest checkpoint without a tail compaction",
            s.plain_pause_ms,
            l.plain_pause_ms,
        ),
        r(
            "seal_pause",
            "checkpoint after a bucket seal",
            s.seal_pause_ms,
            l.seal_pause_ms,
        ),
        r("state_at", "state_at", s.state_at_ms, l.state_at_ms),
        r("file", "file size", s.file_mb, l.file_mb),
    ]
}

fn one(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Sized> {
    let written = fill(path, records, progress)?;
    if let Some(keep) = std::env::var_os("HOOKLEDGER_BENCH_KEEP") {
        let to = Path::new(&keep).join(path.file_name().unwrap_or_default());
        std::fs::copy(path, &to)
            .map_err(|e| LedgerError::Invalid(format!("cannot keep {}: {e}", to.display())))?;
    }
    let mut m = Sized {
        records: written,
        ..Sized::default()
    };
    (m.open_ms, m.rss_mb, m.tail) = open_ready(path, true)?;
    (m.open_full_ms, _, _) = open_ready(path, false)?;
    progress(&format!(
        "history {written}: open {:.0} ms, full {:.0} ms",
        m.open_ms, m.open_full_ms
    ));
    m.state_at_ms = state_at_middle(path, written)?;
    let w = commit_window(path)?;
    (m.p50_ms, m.p99_ms, m.max_ms) = (w.p50_ms, w.p99_ms, w.max_ms);
    (m.pause_ms, m.pause_merged_rows) = (w.longest.ms, w.longest.merged_rows as f64);
    m.plain_pause_ms = w.plain_pause_ms;
    (m.copy_ms, m.checkpoint_bytes) = (w.copy_ms, w.checkpoint_bytes);
    m.file_mb = std::fs::metadata(path).map(|x| x.len()).unwrap_or(0) as f64 / 1e6;
    m.seal_pause_ms = seal_pause(path)?;
    progress(&format!("history {written}: measured"));
    Ok(m)
}

/// Open-to-ready in ms and resident MB once ready: in a fresh `hookledger` process when this
/// runs from that binary (memory is then the ledger's alone), else in this process.
fn open_ready(path: &Path, checkpoints: bool) -> Result<(f64, f64, f64)> {
    let exe = std::env::current_exe().ok();
    if let Some(exe) = exe.filter(|e| e.file_stem().is_some_and(|s| s == "hookledger")) {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["bench-open", "--db"]).arg(path);
        if !checkpoints {
            cmd.arg("--no-checkpoints");
        }
        let out = cmd
            .output()
            .map_err(|e| LedgerError::Invalid(format!("bench-open: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .map_err(|e| LedgerError::Invalid(format!("bench-open said `{text}`: {e}")))?;
        let get = |k: &str| v[k].as_f64().unwrap_or(0.0);
        return Ok((get("ready_ms"), get("rss_mb"), get("folded")));
    }
    open_here(path, checkpoints)
}

/// Opens the ledger here: (open-to-ready ms, resident MB once ready and settled as `serve`
/// settles, records folded).
pub fn open_here(path: &Path, checkpoints: bool) -> Result<(f64, f64, f64)> {
    let options = LedgerOptions {
        checkpoint_every: None,
        use_checkpoints: checkpoints,
        ..LedgerOptions::default()
    };
    let started = Instant::now();
    let ledger = Ledger::open_with(path, Arc::new(SystemClock), &options)?;
    let ready = started.elapsed().as_secs_f64() * 1e3;
    // As `serve` does once folded: the serving purge delay, and the fold's freed pages back.
    crate::alloc::settle();
    let rss = resident_bytes() as f64 / 1e6;
    if checkpoints && ledger.rebuild_stats().start.checkpoint.is_none() {
        return Err(LedgerError::Invalid(
            "the bench ledger opened without a checkpoint".into(),
        ));
    }
    let folded = ledger.rebuild_stats().records as f64;
    ledger.close();
    Ok((ready, rss, folded))
}

fn state_at_middle(path: &Path, records: u64) -> Result<f64> {
    let options = LedgerOptions {
        checkpoint_every: None,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(path, Arc::new(SystemClock), &options)?;
    let mut at = None;
    let reader = ledger.reader()?;
    crate::store::Store::scan_records(&reader, records / 2, records / 2, &mut |r| {
        at = chrono::DateTime::from_timestamp_micros(r.recorded_at_us);
        Ok(())
    })?;
    let at = at.ok_or_else(|| LedgerError::Invalid("no middle record".into()))?;
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let state = ledger.state_at_time(at)?;
        took.push(started.elapsed().as_nanos() as u64);
        if state.last_seq() < records / 2 || state.live_len() < LIVE {
            return Err(LedgerError::Invalid("state_at the middle is wrong".into()));
        }
    }
    ledger.close();
    took.sort_unstable();
    Ok(quantile(&took, 0.5) as f64 / 1e6)
}

/// Writes [`LIVE`] pending deliveries, then happy-path deliveries (three records each) up to
/// about `records`; returns how many records.
fn fill(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<u64> {
    // The default interval, or a tenth of a small ledger (so that the tests' sizes have some).
    let options = LedgerOptions {
        checkpoint_every: Some(DEFAULT_CHECKPOINT_EVERY.min(records / 10).max(1_000)),
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(path, Arc::new(SystemClock), &options)?;
    let webhook = WebhookId::new();
    let now = chrono::Utc::now() + chrono::Duration::days(365);
    for _ in 0..LIVE / 1000 {
        let keys: Vec<DeliveryKey> = (0..1000)
            .map(|_| DeliveryKey::new(webhook, EventId::new()))
            .collect();
        ledger.commit_blocking(Commit {
            events: keys.iter().map(|k| event(k.event_id)).collect(),
            records: keys
                .iter()
                .map(|k| NewRecord::new(*k, RecordBody::Enqueued { due_at: now }))
                .collect(),
            ..Commit::default()
        })?;
    }
    let mut written = LIVE as u64;
    let started = Instant::now();
    let mut told = Instant::now();
    while written < records {
        let keys: Vec<DeliveryKey> = (0..1000)
            .map(|_| DeliveryKey::new(webhook, EventId::new()))
            .collect();
        let due = chrono::Utc::now();
        let mut first = Vec::with_capacity(2000);
        for k in &keys {
            first.push(NewRecord::new(*k, RecordBody::Enqueued { due_at: due }));
            first.push(NewRecord::new(*k, RecordBody::Attempted { attempt: 1 }));
        }
        ledger.commit_blocking(Commit {
            events: keys.iter().map(|k| event(k.event_id)).collect(),
            records: first,
            ..Commit::default()
        })?;
        let done = RecordBody::Delivered {
            attempt: 1,
            status: 200,
            duration_ms: 1,
        };
        ledger.commit_blocking(Commit {
            records: keys
                .iter()
                .map(|k| NewRecord::new(*k, done.clone()))
                .collect(),
            ..Commit::default()
        })?;
        written += 3000;
        if told.elapsed().as_secs() >= 10 {
            told = Instant::now();
            let r = rate(written, started.elapsed());
            progress(&format!(
                "history: wrote {written} of {records} records ({r:.0}/s)"
            ));
        }
    }
    ledger.close();
    Ok(written)
}

fn event(id: EventId) -> NewEvent {
    NewEvent {
        event_id: id,
        event_type: "bench".into(),
        body: b"{}".to_vec(),
        ..Default::default()
    }
}

/// `hookledger bench-open`: opens the file in this fresh process and prints open-to-ready and
/// resident memory as JSON (the `history` scenario's child).
pub fn open_child(path: &Path, checkpoints: bool) -> Result<()> {
    let (ready_ms, rss_mb, folded) = open_here(path, checkpoints)?;
    let v = serde_json::json!({ "ready_ms": ready_ms, "rss_mb": rss_mb, "folded": folded });
    println!("{v}");
    Ok(())
}
