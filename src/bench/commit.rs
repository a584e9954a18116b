//! The `commit` scenario: what one durable commit costs on this disk (the physical floor under
//! publish latency), and how group commit shares it among concurrent publishers.
//!
//! A "publish-sized" commit is what a publish to one webhook appends: one event row and two
//! ledger records (`enqueued`, `attempted`), through the ledger's writer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{figure, quantile, rate, Figure};
use crate::clock::SystemClock;
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{NewRecord, RecordBody};
use crate::ledger::writer::{Commit, NewEvent};
use crate::ledger::{Ledger, LedgerOptions};
use crate::store::any::Location;

fn duck(path: std::path::PathBuf) -> Location {
    Location::Duck(path)
}
use crate::store::Store;

/// Sequential commits timed for the latency figures.
const SAMPLES: usize = 200;

pub fn run(dir: &Path, store: Option<&str>, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let durable = commit_latency(&duck(dir.join("commit.duckdb")), SAMPLES)?;
    progress("commit: sequential commits done");
    let p50 = quantile(&durable, 0.5) as f64 / 1e6;
    let mut figures = vec![
        figure(
            "commit",
            "p50",
            "one durable commit (1 event + 2 records), p50",
            p50,
            "ms",
            None,
        ),
        figure(
            "commit",
            "p99",
            "one durable commit (1 event + 2 records), p99",
            quantile(&durable, 0.99) as f64 / 1e6,
            "ms",
            None,
        ),
    ];
    let per_row = bulk_row_ns(&dir.join("bulk.duckdb"))? as f64 / 1e3;
    progress("commit: bulk transactions done");
    figures.push(figure(
        "commit",
        "bulk_row",
        &format!(
            "{BULK} publishes queued at once (an event + 2 records each), writer time per row"
        ),
        per_row,
        "µs",
        None,
    ));
    if let Some(url) = store {
        let schema = super::pg::BenchSchema::create(url)?;
        let on_pg = commit_latency(&schema.location(), SAMPLES)?;
        progress("commit: sequential commits on PostgreSQL done");
        let pg50 = quantile(&on_pg, 0.5) as f64 / 1e6;
        figures.push(figure(
            "commit",
            "pg_p50",
            "one commit on PostgreSQL (lock, catch-up check, 1 event + 2 records, unlock), p50 (ratio: DuckDB's p50 / this)",
            pg50,
            "ms",
            Some(p50 / pg50.max(1e-9)),
        ));
        figures.push(figure(
            "commit",
            "pg_p99",
            "one commit on PostgreSQL, p99",
            quantile(&on_pg, 0.99) as f64 / 1e6,
            "ms",
            None,
        ));
    }
    let single = 1000.0 / p50.max(1e-9);
    for callers in [16usize, 256] {
        let path = dir.join(format!("group-{callers}.duckdb"));
        let ledger = Arc::new(Ledger::open(&path, Arc::new(SystemClock))?);
        let per_caller = (8192 / callers).clamp(4, 400);
        let elapsed = publish_load(&ledger, callers, per_caller)?;
        let commits = (callers * per_caller) as u64;
        let transactions = ledger.reader()?.links()?.len() as f64;
        let r = rate(commits, elapsed);
        progress(&format!("commit: {callers} concurrent publishers done"));
        figures.push(figure(
            "commit",
            &format!("group_{callers}"),
            &format!("{callers} concurrent publishers (ratio to one at a time)"),
            r,
            "commits/s",
            Some(r / single),
        ));
        figures.push(figure(
            "commit",
            &format!("group_{callers}_size"),
            &format!("{callers} concurrent publishers: commits per transaction"),
            commits as f64 / transactions.max(1.0),
            "commits",
            None,
        ));
    }
    Ok(figures)
}

/// The median durable commit of a publish-sized commit, in a fresh database, in nanoseconds:
/// the reference for publish latency (used by `deliver` in the same run too).
pub fn one_commit_ns(dir: &Path, samples: usize) -> Result<u64> {
    let durable = commit_latency(&duck(dir.join("commit-reference.duckdb")), samples)?;
    Ok(quantile(&durable, 0.5))
}

/// Publishes queued at once for [`bulk_row_ns`] (the most the writer takes into one
/// transaction).
const BULK: usize = 4096;

/// The writer's cost per row when fixed costs are spread thin: [`BULK`] publish-sized commits
/// queued at once, so that the writer takes them into one or two transactions; the median of
/// three rounds (after one to warm up), divided by their rows. The floor under any delivery's
/// ledger work, since every delivery appends an event row and three records.
fn bulk_row_ns(path: &Path) -> Result<u64> {
    let ledger = Ledger::open(path, Arc::new(SystemClock))?;
    let webhook = WebhookId::new();
    let mut took = Vec::new();
    for round in 0..4 {
        let commits: Vec<Commit> = (0..BULK).map(|_| publish_commit(webhook)).collect();
        let rows: usize = commits
            .iter()
            .map(|c| c.events.len() + c.records.len())
            .sum();
        let started = Instant::now();
        let receipts: Vec<_> = commits.into_iter().map(|c| ledger.submit(c)).collect();
        for r in receipts {
            r.blocking_recv().map_err(|_| LedgerError::WriterGone)??;
        }
        if round > 0 {
            took.push(started.elapsed().as_nanos() as u64 / rows as u64);
        }
    }
    took.sort_unstable();
    Ok(quantile(&took, 0.5))
}

/// `samples` sequential publish-sized commits; their latencies in nanoseconds, sorted.
fn commit_latency(at: &Location, samples: usize) -> Result<Vec<u64>> {
    let ledger = Ledger::open_at(at, Arc::new(SystemClock), &LedgerOptions::default())?;
    let webhook = WebhookId::new();
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let started = Instant::now();
        ledger.commit_blocking(publish_commit(webhook))?;
        // The first few warm the connection, the appenders and the file.
        if i >= 10 {
            took.push(started.elapsed().as_nanos() as u64);
        }
    }
    took.sort_unstable();
    Ok(took)
}

/// One publish-sized commit: an event, its `enqueued` and first `attempted` record.
pub(super) fn publish_commit(webhook: WebhookId) -> Commit {
    let key = DeliveryKey::new(webhook, EventId::new());
    Commit {
        events: vec![NewEvent {
            event_id: key.event_id,
            event_type: "bench".into(),
            body: br#"{"order":{"id":12345}}"#.to_vec(),
            ..Default::default()
        }],
        records: vec![
            NewRecord::new(
                key,
                RecordBody::Enqueued {
                    due_at: chrono::Utc::now(),
                },
            ),
            NewRecord::new(key, RecordBody::Attempted { attempt: 1 }),
        ],
        ..Commit::default()
    }
}

/// Publishes from `callers` threads, `per_caller` publish-sized commits each.
fn publish_load(ledger: &Arc<Ledger>, callers: usize, per_caller: usize) -> Result<Duration> {
    let webhook = WebhookId::new();
    let started = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || -> Result<()> {
                for _ in 0..per_caller {
                    ledger.commit_blocking(publish_commit(webhook))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| LedgerError::Invalid("a bench thread panicked".into()))??;
    }
    Ok(started.elapsed())
}

/// The floor under any durable write on this disk, the reference for `latency`: `samples`
/// transactions on a fresh DuckDB file with one one-column table, each one `INSERT` of one
/// row, committed the way the ledger's writer commits (the store's memory limit, one thread,
/// `BEGIN TRANSACTION` and `COMMIT` prepared once; DuckDB's commit writes and syncs its WAL).
/// Their latencies in nanoseconds, sorted, after ten to warm up.
pub fn one_row_commit_ns(path: &Path, samples: usize) -> Result<Vec<u64>> {
    one_row_commits(path, samples, None)
}

/// [`one_row_commit_ns`], but one commit every `gap` (each starts `gap` after the one before
/// started, as `latency` paces its publishes): the floor a commit meets at a low rate, when
/// the process has been idle between two. On this machine it is 1.3x-1.8x the back-to-back
/// figure (0.45 → 0.60-0.79 ms with 5 ms between commits).
pub fn one_row_commit_paced_ns(path: &Path, samples: usize, gap: Duration) -> Result<Vec<u64>> {
    one_row_commits(path, samples, Some(gap))
}

fn one_row_commits(path: &Path, samples: usize, gap: Option<Duration>) -> Result<Vec<u64>> {
    let config = duckdb::Config::default()
        .max_memory(crate::store::duck::DEFAULT_MEMORY_LIMIT)?
        .access_mode(duckdb::AccessMode::ReadWrite)?;
    let conn = duckdb::Connection::open_with_flags(path, config)?;
    conn.execute_batch("SET threads = 1; CREATE TABLE one_row (x BIGINT)")?;
    let mut took = Vec::with_capacity(samples);
    let first = Instant::now();
    for i in 0..samples + 10 {
        if let Some(gap) = gap {
            let at = first + gap * i as u32;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let started = Instant::now();
        conn.prepare_cached("BEGIN TRANSACTION")?.execute([])?;
        conn.prepare_cached("INSERT INTO one_row VALUES (?)")?
            .execute([i as i64])?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        if i >= 10 {
            took.push(started.elapsed().as_nanos() as u64);
        }
    }
    let rows: i64 = conn.query_row("SELECT count(*) FROM one_row", [], |r| r.get(0))?;
    if rows != (samples + 10) as i64 {
        return Err(LedgerError::Invalid(format!(
            "one-row commits: {rows} rows for {} commits",
            samples + 10
        )));
    }
    took.sort_unstable();
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_commits_start_a_gap_apart_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let gap = Duration::from_millis(3);
        let started = Instant::now();
        let took = one_row_commit_paced_ns(&dir.path().join("p.duckdb"), 20, gap).unwrap();
        // 30 commits (ten to warm up), the last starting 29 gaps after the first.
        assert!(started.elapsed() >= gap * 29, "{:?}", started.elapsed());
        assert_eq!(took.len(), 20);
        assert!(took.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }
}
