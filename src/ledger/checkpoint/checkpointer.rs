//! The checkpointer: a thread beside the writer that stores a projection checkpoint whenever
//! the ledger has grown by `every` records since the last one.
//!
//! It never runs on the writer thread and never holds up a commit for the work itself: it
//! copies the projection and the registry under their read locks (the only moment the writer
//! can wait for it, when it applies a batch: the copy costs about a microsecond per live
//! delivery), then encodes, hashes and inserts the row through its own connection, in its own
//! small transaction beside the writer's (DuckDB appends to different tables concurrently).
//! Every state the writer publishes is at a batch boundary, so the copy is too, and the row is
//! bound to the link ending at its seq. A crash while the row is written leaves no row (the
//! insert is one transaction); the next open then uses the previous checkpoint.
//!
//! After each checkpoint it writes, it thins the stored ones ([`super::thin`]) in one
//! `DELETE` through the same kind of connection: the writer never waits for it, and a crash
//! in between leaves at worst a few rows the next thinning removes.
//!
//! A stop is never lost, even one that lands as a commit wakes the thread ([`due`] reads the
//! flag after the channel), so `Ledger::close` always returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::watch;

use super::{snapshot_of, to_row};
use crate::error::{LedgerError, Result};
use crate::ledger::Shared;
use crate::registry;
use crate::store::Store;

/// What the checkpointer has done, for the bench and the logs.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    pub written: AtomicU64,
    /// The longest time the state's read locks were held for a copy, in microseconds.
    pub longest_copy_us: AtomicU64,
    /// The longest time from copy to stored row, in microseconds.
    pub longest_write_us: AtomicU64,
    pub last_bytes: AtomicU64,
    /// Checkpoints deleted by thinning.
    pub thinned: AtomicU64,
    /// The longest thinning, in microseconds.
    pub longest_thin_us: AtomicU64,
}

/// Stores a checkpoint of the live state now; its seq, or `None` for an empty ledger.
pub(crate) fn write_now(shared: &Shared, stats: &CheckpointStats) -> Result<Option<u64>> {
    let started = Instant::now();
    let projection = shared.read_projection().clone();
    let registry = shared.read_registry().clone();
    let copied = started.elapsed();
    let seq = projection.last_seq();
    if seq == 0 {
        return Ok(None);
    }
    let mut store = shared.reader_slot().reader()?;
    let link = store.link_ending_at(seq)?.ok_or_else(|| {
        LedgerError::Invalid(format!(
            "no chain link ends at seq {seq}; no checkpoint taken"
        ))
    })?;
    let change_hash = match registry.last_seq() {
        0 => registry::genesis(),
        n => store
            .changes()?
            .get(n as usize - 1)
            .map(|c| c.hash)
            .ok_or_else(|| LedgerError::Invalid(format!("registry change {n} is missing")))?,
    };
    let row = to_row(&snapshot_of(&projection, &registry, change_hash), link.hash);
    store.append_checkpoint(&row)?;
    stats.written.fetch_add(1, Ordering::Relaxed);
    stats
        .last_bytes
        .store(row.body.len() as u64, Ordering::Relaxed);
    stats
        .longest_copy_us
        .fetch_max(copied.as_micros() as u64, Ordering::Relaxed);
    stats
        .longest_write_us
        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    tracing::debug!(
        seq,
        bytes = row.body.len(),
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "stored a projection checkpoint"
    );
    Ok(Some(seq))
}

/// Thins the stored checkpoints for interval `every` (see [`super::thin`]); how many went.
pub(crate) fn thin_now(shared: &Shared, stats: &CheckpointStats, every: u64) -> Result<u64> {
    let started = Instant::now();
    let mut store = shared.reader_slot().reader()?;
    let dropped = super::thin::thin(&mut store, every)?.len() as u64;
    stats.thinned.fetch_add(dropped, Ordering::Relaxed);
    stats
        .longest_thin_us
        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(dropped)
}

/// Waits until the committed seq reaches `at` (that seq) or a stop is asked (`None`).
///
/// The flag is read after the channel is marked seen, never before: a stop sets the flag and
/// then bumps the channel, so either this read sees the flag or the wait below sees the bump.
/// Read the other way round, a stop landing between the two reads was lost, and the thread
/// waited for a commit that never came while `Ledger::close` waited for the thread.
async fn due(
    committed: &mut watch::Receiver<u64>,
    stopping: &dyn Fn() -> bool,
    at: u64,
) -> Option<u64> {
    loop {
        let seq = *committed.borrow_and_update();
        if stopping() {
            return None;
        }
        if seq >= at {
            return Some(seq);
        }
        committed.changed().await.ok()?;
    }
}

/// The running checkpointer thread.
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread: a checkpoint whenever the committed seq reaches `last + every`, each
    /// followed by thinning.
    pub fn spawn(
        shared: Arc<Shared>,
        stats: Arc<CheckpointStats>,
        every: u64,
        mut last: u64,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| LedgerError::Invalid(format!("cannot start the checkpointer: {e}")))?;
        let handle = std::thread::Builder::new()
            .name("hookledger-checkpointer".into())
            .spawn(move || {
                let mut committed = shared.subscribe();
                let stopped = || stopping.load(Ordering::Acquire);
                while let Some(seq) =
                    runtime.block_on(due(&mut committed, &stopped, last.saturating_add(every)))
                {
                    match write_now(&shared, &stats) {
                        Ok(Some(s)) => {
                            last = s;
                            if let Err(e) = thin_now(&shared, &stats, every) {
                                // A cache: the next checkpoint thins again.
                                tracing::warn!(error = %e, "could not thin projection checkpoints");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            // A cache: try again one interval later.
                            tracing::warn!(error = %e, "could not store a projection checkpoint");
                            last = seq;
                        }
                    }
                }
            })
            .map_err(|e| LedgerError::Invalid(format!("cannot start the checkpointer: {e}")))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread (after the checkpoint it may be writing).
    pub fn stop(&mut self, shared: &Shared) {
        self.stop.store(true, Ordering::Release);
        shared.notify(None);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    fn run(fut: impl std::future::Future<Output = Option<u64>>) -> Option<u64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), fut)
                .await
                .expect("the checkpointer's wait never returned")
        })
    }

    #[test]
    fn a_stop_that_lands_while_the_flag_is_read_is_not_lost() {
        // The stop happens during the first read of the flag, exactly as `Checkpointer::stop`
        // does it (flag, then channel): that read still says "running", so only the channel
        // can tell, and it must not have been marked seen after the stop.
        let (send, mut committed) = watch::channel(5u64);
        let reads = Cell::new(0);
        let stopping = || {
            reads.set(reads.get() + 1);
            if reads.get() == 1 {
                send.send_replace(5);
                false
            } else {
                true
            }
        };
        assert_eq!(run(due(&mut committed, &stopping, 100)), None);
    }

    #[test]
    fn it_returns_the_seq_once_due_and_none_when_the_sender_is_gone() {
        let (send, mut committed) = watch::channel(5u64);
        assert_eq!(run(due(&mut committed, &|| false, 5)), Some(5));
        let later = std::thread::spawn(move || {
            send.send_replace(7);
            send.send_replace(12);
        });
        assert_eq!(run(due(&mut committed, &|| false, 10)), Some(12));
        later.join().unwrap();
        assert_eq!(
            run(due(&mut committed, &|| false, 100)),
            None,
            "sender dropped"
        );
    }
}
