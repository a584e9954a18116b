//! How the writer carries on when the disk fails.
//!
//! A commit that cannot be written (disk full, read-only or vanished file, I/O error) is
//! answered [`LedgerError::StorageUnavailable`] to every caller of the batch, and nothing of it
//! is applied: the projection, the chain heads and the seqs stay where the last durable commit
//! left them, so the next batch reuses the seqs and links the failed one would have taken.
//! DuckDB rolls a failed commit back and its connection stays usable, so the next batch simply
//! tries again: the writer recovers as soon as the disk does, without a restart.
//!
//! DuckDB can also give up on a database (when rolling a failed commit back fails too, it
//! answers "database has been invalidated" from then on), and a commit reported as failed
//! might still have landed. So after every failed commit the writer checks that the store
//! still answers and holds exactly what the in-memory state says (last seq, last event, number
//! of registry changes). If not, it reopens the file, on the next batch and then with a growing
//! delay (100 ms up to 5 s) while that fails, replaces the shared read connection, and folds
//! the state again from the file, the source of truth. Until then every commit is refused with
//! `StorageUnavailable`. On PostgreSQL the same path covers a lost connection or a server that
//! restarts: the failed commit rolls back on the server, the store drops the broken
//! connection, and the check or the reopen takes a fresh one from the pool. A delivery whose `attempted` landed in a commit reported as failed stays
//! `in_attempt` until the next start records it as abandoned.

use std::time::{Duration, Instant};

use super::writer::{Request, Writer};
use super::{LedgerOptions, Loaded};
use crate::error::{LedgerError, Result};
use crate::store::any::{AnyStore, Location};
use crate::store::duck::OpenMode;

/// The first and the longest wait between attempts to reopen a database that broke.
const REOPEN_DELAY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A database to reopen before the next commit.
pub(crate) struct Reopen {
    at: Instant,
    delay: Duration,
    reason: String,
}

impl Writer {
    /// After a failed commit: schedules a reopen unless the store still answers and holds
    /// exactly what the in-memory state says (a commit reported failed may have landed).
    pub(super) fn check_store(&mut self, failure: &str) {
        let (seq, changes) = {
            let projection = self.shared.read_projection();
            (
                projection.last_seq(),
                self.shared.read_registry().last_seq(),
            )
        };
        let last_event = (self.last_event.0 > 0).then_some(self.last_event);
        let matches = self.store.last_seq().ok() == Some(seq)
            && self.store.last_event().ok() == Some(last_event)
            && self.store.changes().ok().map(|c| c.len() as u64) == Some(changes);
        if !matches && self.reopen.is_none() {
            tracing::error!("the database connection broke or disagrees with the state; reopening");
            self.reopen = Some(Reopen {
                at: Instant::now(),
                delay: REOPEN_DELAY.0,
                reason: failure.to_owned(),
            });
        }
    }

    /// Reopens the database if a failure asked for it (when its delay has passed); the reason
    /// to refuse the batch otherwise.
    pub(super) fn ensure_open(&mut self) -> std::result::Result<(), String> {
        let Some(reopen) = &mut self.reopen else {
            return Ok(());
        };
        if Instant::now() < reopen.at {
            return Err(format!(
                "the database is being reopened after: {}",
                reopen.reason
            ));
        }
        match reopen_store(&self.location, &self.shared.options) {
            Ok((store, loaded)) => {
                self.install(store, loaded);
                self.reopen = None;
                tracing::info!("the database was reopened and its state folded again");
                Ok(())
            }
            Err(e) => {
                reopen.at = Instant::now() + reopen.delay;
                reopen.delay = (reopen.delay * 2).min(REOPEN_DELAY.1);
                let reason = format!("cannot reopen the database: {e}");
                self.shared.set_storage_error(Some(reason.clone()));
                Err(reason)
            }
        }
    }

    /// Continues from a freshly opened store: its read connection and its folded state replace
    /// the old ones (the old connections close as they are dropped).
    fn install(&mut self, store: AnyStore, loaded: Loaded) {
        if let Ok(reader) = store.reader() {
            *self.shared.reader_slot() = reader;
        }
        let seq = loaded.projection.last_seq();
        *self.shared.write_projection() = loaded.projection;
        *self.shared.write_registry() = loaded.registry;
        self.last_link = loaded.last_link;
        self.last_change_hash = loaded.last_change_hash;
        self.last_event = loaded.last_event;
        self.last_expunge = loaded.last_expunge;
        self.store = Box::new(store);
        self.shared.set_storage_error(None);
        self.shared.notify(Some(seq));
    }
}

fn reopen_store(location: &Location, options: &LedgerOptions) -> Result<(AnyStore, Loaded)> {
    let mut store = AnyStore::open(location, OpenMode::ReadWrite)?;
    store.set_bucket_events(options.bucket_events);
    store.set_idle_checkpoint_mb(options.idle_checkpoint_mb);
    let loaded = Loaded::from_store(&store, options.use_checkpoints)?;
    store.use_one_thread()?;
    Ok((store, loaded))
}

/// Answers every request of a batch that cannot be committed now.
pub(crate) fn refuse(requests: Vec<Request>, reason: &str) {
    for r in requests {
        let _ = r.reply.send(Err(LedgerError::StorageUnavailable {
            reason: reason.to_owned(),
        }));
    }
}
