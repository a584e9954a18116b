//! The `history` scenario's windows of publishes on a filled ledger: commit latency, the
//! DuckDB checkpoints after each window (the longest, with the rows DuckDB's vacuum merged in
//! it, and the longest without a tail compaction), and the checkpoint right after a bucket
//! seals. With the store's default `max_vacuum_tasks = 0` nothing is merged;
//! `duck_checkpoint.rs` says what a merge costs when an operator turns it back on.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::duck_checkpoint::{Timed, Timer};
use super::quantile;
use crate::clock::SystemClock;
use crate::error::{LedgerError, Result};
use crate::ids::WebhookId;
use crate::ledger::{Ledger, LedgerOptions};

/// Publisher threads and publishes each, per window.
const WINDOW: (usize, usize) = (8, 250);
/// Windows, each followed by a timed DuckDB checkpoint: the fixed stretch of publishes that
/// the commit latencies and the longest pause are taken over.
const WINDOWS: usize = 8;
/// A checkpoint whose vacuum merged this many rows (half a DuckDB row group of 122,880) or
/// more compacted a table's tail; one below it wrote little more than the new rows.
const COMPACTION_ROWS: u64 = 61_440;

/// What [`commit_window`] measured.
pub(super) struct Window {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The longest DuckDB checkpoint after a window, with the rows its vacuum merged.
    pub longest: Timed,
    /// The longest one without a tail compaction (its vacuum merged under [`COMPACTION_ROWS`]).
    pub plain_pause_ms: f64,
    /// The longest projection copy.
    pub copy_ms: f64,
    pub checkpoint_bytes: f64,
}

/// [`WINDOWS`] windows of publishes with projection checkpoints every 2,000 records, each
/// followed by a DuckDB checkpoint: commit p50/p99/max, the longest DuckDB checkpoint, the
/// longest projection copy (ms) and the checkpoint bytes per live delivery.
pub(super) fn commit_window(path: &Path) -> Result<Window> {
    let options = LedgerOptions {
        checkpoint_every: Some(2_000),
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open_with(path, Arc::new(SystemClock), &options)?);
    let webhook = WebhookId::new();
    let mut latencies = Vec::new();
    let timer = Timer::new(&ledger)?;
    let mut longest = Timed::default();
    let mut plain = 0f64;
    for _ in 0..WINDOWS {
        latencies.extend(publish_window(&ledger, webhook)?);
        let took = timer.checkpoint()?;
        if took.ms > longest.ms {
            longest = took;
        }
        if took.merged_rows < COMPACTION_ROWS {
            plain = plain.max(took.ms);
        }
    }
    drop(timer);
    latencies.sort_unstable();
    let stats = ledger.checkpoint_stats();
    let copy = stats
        .longest_copy_us
        .load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e3;
    let bytes = stats.last_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let live = ledger.state().live_len().max(1) as f64;
    let ms = |q: f64| quantile(&latencies, q) as f64 / 1e6;
    let out = Window {
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: ms(1.0),
        longest,
        plain_pause_ms: plain,
        copy_ms: copy,
        checkpoint_bytes: bytes / live,
    };
    drop(ledger);
    Ok(out)
}

/// One window: [`WINDOW`]`.0` threads publishing [`WINDOW`]`.1` times each; the commit
/// latencies in ns.
fn publish_window(ledger: &Arc<Ledger>, webhook: WebhookId) -> Result<Vec<u64>> {
    let threads: Vec<_> = (0..WINDOW.0)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || -> Result<Vec<u64>> {
                let mut took = Vec::with_capacity(WINDOW.1);
                for _ in 0..WINDOW.1 {
                    let started = Instant::now();
                    ledger.commit_blocking(super::commit::publish_commit(webhook))?;
                    took.push(started.elapsed().as_nanos() as u64);
                }
                Ok(took)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WINDOW.0 * WINDOW.1);
    for t in threads {
        let took = t
            .join()
            .map_err(|_| LedgerError::Invalid("a publisher panicked".into()))??;
        latencies.extend(took);
    }
    Ok(latencies)
}

/// The DuckDB checkpoint right after a bucket seals, best of 3 (what grew with history while
/// every sealed bucket's id filter was a row of `event_buckets`, rewritten whole by the
/// checkpoint after each seal; see `store/duck/filters.rs`). A writer told to seal at every
/// batch with events publishes once per try. Runs last: it leaves three more, small, buckets.
pub(super) fn seal_pause(path: &Path) -> Result<f64> {
    let options = LedgerOptions {
        checkpoint_every: None,
        bucket_events: 1,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(path, Arc::new(SystemClock), &options)?;
    let webhook = WebhookId::new();
    let timer = Timer::new(&ledger)?;
    timer.checkpoint()?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        ledger.commit_blocking(super::commit::publish_commit(webhook))?;
        best = best.min(timer.checkpoint()?.ms);
    }
    drop(timer);
    ledger.close();
    Ok(best)
}
