//! `hookledger bench`: measures the ledger on this machine and prints its figures, each beside
//! a baseline measured in the same run (the machine is shared and noisy, so ratios travel and
//! absolute numbers do not).
//!
//! Scenarios so far: `rebuild` (fold a log of N records vs. merely fetching the same rows),
//! `append` (publish throughput through the group-committing writer at 1, 16 and 256
//! concurrent callers vs. one caller) and `deliver` (published events delivered to a local
//! receiver vs. a plain reqwest POST loop at the same concurrency).

mod deliver;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::SystemClock;
use crate::error::Result;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{NewRecord, RecordBody};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::{fold_records, Ledger};
use crate::store::duck::{DuckStore, OpenMode};
use crate::store::Store;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The figure divided by the run's baseline for it, where there is one.
    pub ratio: Option<f64>,
}

/// Runs the named scenario (`rebuild`, `append` or `all`) and returns its figures.
pub fn run(scenario: &str, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let dir = tempdir()?;
    let mut figures = Vec::new();
    if matches!(scenario, "rebuild" | "all") {
        figures.extend(rebuild(&dir.join("rebuild.duckdb"), records, progress)?);
    }
    if matches!(scenario, "append" | "all") {
        figures.extend(append(&dir, progress)?);
    }
    if matches!(scenario, "deliver" | "all") {
        figures.extend(deliver::run(&dir, progress)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hookledger-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        crate::LedgerError::Invalid(format!("cannot create {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Happy-path deliveries: per delivery `enqueued`, `attempted`, `delivered`.
fn fill(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<u64> {
    let ledger = Ledger::open(path, Arc::new(SystemClock))?;
    let webhook = WebhookId::new();
    let per_commit = 1000;
    let mut written = 0;
    while written < records {
        let keys: Vec<DeliveryKey> = (0..per_commit)
            .map(|_| DeliveryKey::new(webhook, EventId::new()))
            .collect();
        let now = chrono::Utc::now();
        let events = keys
            .iter()
            .map(|k| NewEvent {
                event_id: k.event_id,
                event_type: "bench".into(),
                body: b"{}".to_vec(),
            })
            .collect();
        let mut first = Vec::with_capacity(keys.len() * 2);
        for k in &keys {
            first.push(NewRecord::new(*k, RecordBody::Enqueued { due_at: now }));
            first.push(NewRecord::new(*k, RecordBody::Attempted { attempt: 1 }));
        }
        ledger.commit_blocking(Commit {
            events,
            records: first,
            ..Commit::default()
        })?;
        let done = keys
            .iter()
            .map(|k| {
                let body = RecordBody::Delivered {
                    attempt: 1,
                    status: 200,
                    duration_ms: 1,
                };
                NewRecord::new(*k, body)
            })
            .collect();
        ledger.commit_blocking(Commit {
            records: done,
            ..Commit::default()
        })?;
        written += per_commit as u64 * 3;
        if written % 300_000 == 0 {
            progress(&format!("rebuild: wrote {written} records"));
        }
    }
    ledger.close();
    Ok(written)
}

fn rebuild(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let written = fill(path, records, progress)?;
    let store = DuckStore::open(path, OpenMode::ReadOnly)?;
    let started = Instant::now();
    let mut fetched = 0u64;
    store.scan_records(1, u64::MAX, &mut |_| {
        fetched += 1;
        Ok(())
    })?;
    let fetch = rate(fetched, started.elapsed());
    let started = Instant::now();
    let projection = fold_records(&store, u64::MAX)?;
    let fold = rate(projection.last_seq(), started.elapsed());
    let disk = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(vec![
        figure("rebuild", "fetch only (baseline)", fetch, "records/s", None),
        figure(
            "rebuild",
            &format!("fold {written} records"),
            fold,
            "records/s",
            Some(fold / fetch),
        ),
        figure(
            "rebuild",
            "database bytes per record",
            disk as f64 / written as f64,
            "bytes",
            None,
        ),
    ])
}

pub(crate) fn figure(
    scenario: &'static str,
    name: &str,
    value: f64,
    unit: &'static str,
    ratio: Option<f64>,
) -> Figure {
    Figure {
        scenario,
        name: name.to_owned(),
        value,
        unit,
        ratio,
    }
}

/// Publishes from `callers` threads, `per_caller` events each (one event + one `enqueued`).
fn publish_load(ledger: &Arc<Ledger>, callers: usize, per_caller: usize) -> Result<Duration> {
    let webhook = WebhookId::new();
    let started = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || -> Result<()> {
                for _ in 0..per_caller {
                    let key = DeliveryKey::new(webhook, EventId::new());
                    ledger.commit_blocking(Commit {
                        events: vec![NewEvent {
                            event_id: key.event_id,
                            event_type: "bench".into(),
                            body: b"{}".to_vec(),
                        }],
                        records: vec![NewRecord::new(
                            key,
                            RecordBody::Enqueued {
                                due_at: chrono::Utc::now(),
                            },
                        )],
                        ..Commit::default()
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| crate::LedgerError::Invalid("a bench thread panicked".into()))??;
    }
    Ok(started.elapsed())
}

fn append(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut baseline = None;
    for callers in [1usize, 16, 256] {
        let path = dir.join(format!("append-{callers}.duckdb"));
        let ledger = Arc::new(Ledger::open(&path, Arc::new(SystemClock))?);
        let per_caller = (4096 / callers).clamp(4, 400);
        let elapsed = publish_load(&ledger, callers, per_caller)?;
        let commits = (callers * per_caller) as u64;
        let batches = ledger.reader()?.links()?.len() as f64;
        let r = rate(commits, elapsed);
        let base = *baseline.get_or_insert(r);
        progress(&format!("append: {callers} callers done"));
        figures.push(figure(
            "append",
            &format!("{callers} concurrent publishers (2 rows each)"),
            r,
            "commits/s",
            Some(r / base),
        ));
        figures.push(figure(
            "append",
            &format!("{callers} concurrent publishers: commits per transaction"),
            commits as f64 / batches.max(1.0),
            "commits",
            None,
        ));
    }
    Ok(figures)
}

/// The figures as a table.
pub fn render(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<10} {:<55} {:>14} {:<10} {:>8}\n",
        "scenario", "figure", "value", "unit", "ratio"
    );
    for f in figures {
        let ratio = f.ratio.map_or(String::new(), |r| format!("{r:.3}x"));
        out.push_str(&format!(
            "{:<10} {:<55} {:>14.1} {:<10} {:>8}\n",
            f.scenario, f.name, f.value, f.unit, ratio
        ));
    }
    out
}
