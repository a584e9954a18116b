//! The `rebuild` scenario: folding a log of N records into the projection (what startup does),
//! against merely fetching the same columns in the same run, and the memory left afterwards.
//!
//! The log is happy-path deliveries (`enqueued`, `attempted`, `delivered` each), written through
//! the ledger's writer a thousand deliveries per commit. Every delivery ends terminal, so the
//! folded projection must hold nothing per delivery: the figures show its live entries (0) and
//! the resident-memory growth of the fold itself, measured after the fetch-only pass has already
//! warmed DuckDB's buffers, so that the growth is the projection's.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{figure, rate, resident_bytes, Figure};
use crate::clock::SystemClock;
use crate::error::Result;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::projection::Projection;
use crate::ledger::record::{NewRecord, RecordBody};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::{fold_records, Ledger};
use crate::store::duck::{DuckStore, OpenMode};
use crate::store::Store;

pub fn run(dir: &Path, sizes: &[u64], progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let figures = super::per_size(dir, "rebuild", sizes, progress, one)?;
    Ok(figures.into_iter().flatten().collect())
}

fn one(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let written = fill(path, records, progress)?;
    let store = DuckStore::open(path, OpenMode::ReadOnly)?;
    // Fetch, fold, and again: the first pass also warms the cache, so each figure is the
    // better of its two passes.
    let (mut fetch, mut fold) = (0.0f64, 0.0f64);
    let (mut before, mut after) = (0, 0);
    let mut projection = Projection::new();
    for _ in 0..2 {
        let started = Instant::now();
        let mut fetched = 0u64;
        store.scan_records(1, u64::MAX, &mut |_| {
            fetched += 1;
            Ok(())
        })?;
        fetch = fetch.max(rate(fetched, started.elapsed()));
        drop(projection);
        before = resident_bytes();
        let started = Instant::now();
        projection = fold_records(&store, u64::MAX)?;
        fold = fold.max(rate(projection.last_seq(), started.elapsed()));
        after = resident_bytes();
        progress(&format!("rebuild: fetched and folded {fetched} records"));
    }
    let disk = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let n = human(written);
    Ok(vec![
        figure(
            "rebuild",
            &format!("fetch_{written}"),
            &format!("fetch {n} records, no fold (baseline)"),
            fetch,
            "records/s",
            None,
        ),
        figure(
            "rebuild",
            &format!("fold_{written}"),
            &format!("fold {n} records (ratio to fetch only)"),
            fold,
            "records/s",
            Some(fold / fetch),
        ),
        figure(
            "rebuild",
            &format!("rss_{written}"),
            &format!("resident memory after folding {n} records"),
            after as f64 / 1e6,
            "MB",
            None,
        ),
        figure(
            "rebuild",
            &format!("fold_growth_{written}"),
            &format!("resident growth during the fold of {n} (all terminal)"),
            after.saturating_sub(before) as f64 / 1e6,
            "MB",
            None,
        ),
        figure(
            "rebuild",
            &format!("live_{written}"),
            &format!("live entries after folding {n} (all terminal)"),
            projection.live_len() as f64,
            "entries",
            None,
        ),
        figure(
            "rebuild",
            &format!("file_bytes_{written}"),
            &format!("database file per record, {n} (events, 2-byte bodies)"),
            disk as f64 / written.max(1) as f64,
            "bytes",
            None,
        ),
    ])
}

pub(super) fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 100_000 == 0 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n => n.to_string(),
    }
}

/// Writes about `records` happy-path records (a multiple of 3000); returns how many.
pub(crate) fn fill(path: &Path, records: u64, progress: &mut dyn FnMut(&str)) -> Result<u64> {
    let ledger = Ledger::open(path, Arc::new(SystemClock))?;
    let webhook = WebhookId::new();
    let per_commit = 1000;
    let mut written = 0;
    let started = Instant::now();
    let mut told = Instant::now();
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
                ..Default::default()
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
        let delivered = RecordBody::Delivered {
            attempt: 1,
            status: 200,
            duration_ms: 1,
        };
        let done = keys
            .iter()
            .map(|k| NewRecord::new(*k, delivered.clone()))
            .collect();
        ledger.commit_blocking(Commit {
            records: done,
            ..Commit::default()
        })?;
        written += per_commit as u64 * 3;
        if told.elapsed().as_secs() >= 5 {
            told = Instant::now();
            let r = rate(written, started.elapsed());
            progress(&format!(
                "rebuild: wrote {written} of {records} records ({r:.0}/s)"
            ));
        }
    }
    ledger.close();
    Ok(written)
}
