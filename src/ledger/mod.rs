//! The ledger: the append-only `webhook_deliveries` log, its single writer, and the queue-state
//! projection folded from it.
//!
//! [`Ledger::open`] folds the whole log (and the registry log) to rebuild the in-memory state;
//! no stored queue table is trusted. All appends go through the one writer thread
//! ([`writer`]); reads use their own connection. Point-in-time state ([`Ledger::state_at`]) and
//! [`Ledger::verify`] re-fold from the log with the same pure [`projection`] fold.
//!
//! When the disk fails (full, read-only, gone), commits fail with
//! [`LedgerError::StorageUnavailable`] and nothing of them is applied; the writer reopens the
//! database and folds it again if its connection broke (`reopen.rs`), and
//! [`Shared::storage_error`] says why while it lasts.

pub mod chain;
pub mod due;
pub mod projection;
pub mod record;
mod reopen;
mod stage;
pub mod stored;
pub mod verify;
pub mod view;
pub mod writer;

use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::error::{LedgerError, Result};
use crate::ids::DeliveryKey;
use crate::registry::{self, Registry};
use crate::store::duck::{DuckStore, OpenMode};
use crate::store::Store;
use projection::Projection;
use record::{Record, Timestamp};
use writer::{Commit, Receipt, Request, Writer};

/// The in-memory state shared by the writer (which alone changes it) and its readers.
pub struct Shared {
    projection: RwLock<Projection>,
    registry: RwLock<Registry>,
    /// The last committed seq, for whoever waits for new records (the re-drive scheduler).
    committed: watch::Sender<u64>,
    /// The connection readers are cloned from. The writer replaces it when it reopens the
    /// database after a storage failure (a std Mutex: held only to clone or swap).
    reader: Mutex<DuckStore>,
    /// Why the last commit could not be written, until one is (`/healthz` reports it).
    storage_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn read_projection(&self) -> RwLockReadGuard<'_, Projection> {
        self.projection.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_projection(&self) -> RwLockWriteGuard<'_, Projection> {
        self.projection.write().unwrap_or_else(|e| e.into_inner())
    }
    pub fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }
    /// A receiver that changes whenever a commit lands.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }
    fn notify(&self, seq: Option<u64>) {
        let seq = seq.unwrap_or_else(|| *self.committed.borrow());
        self.committed.send_replace(seq);
    }
    /// Why the last commit could not be written to the database, while that is the case.
    pub fn storage_error(&self) -> Option<String> {
        self.storage_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn set_storage_error(&self, error: Option<String>) {
        *self.storage_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
    fn reader_slot(&self) -> std::sync::MutexGuard<'_, DuckStore> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a database file holds, folded: where the writer continues from.
struct Loaded {
    projection: Projection,
    registry: Registry,
    last_link: chain::Hash,
    last_change_hash: chain::Hash,
    last_event: (u64, chain::Hash),
}

impl Loaded {
    fn from_store(store: &dyn Store) -> Result<Self> {
        let projection = fold_records(store, u64::MAX)?;
        let changes = store.changes()?;
        let last_change_hash = changes.last().map_or_else(registry::genesis, |c| c.hash);
        let registry = fold_changes(changes)?;
        let last_link = store
            .links()?
            .last()
            .map_or_else(chain::genesis, |l| l.hash);
        let last_event = store.last_event()?.unwrap_or((0, chain::event_genesis()));
        Ok(Self {
            projection,
            registry,
            last_link,
            last_change_hash,
            last_event,
        })
    }
}

/// What the startup rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildStats {
    pub records: u64,
    pub changes: u64,
    pub elapsed: Duration,
}

/// An open ledger: the writer thread, the live projection, and a read connection.
pub struct Ledger {
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    rebuild: RebuildStats,
}

impl Ledger {
    /// Opens (creating if needed) the database at `path`, rebuilds the state from the logs and
    /// starts the writer.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        let store = DuckStore::open(path, OpenMode::ReadWrite)?;
        let started = Instant::now();
        let loaded = Loaded::from_store(&store)?;
        store.use_one_thread()?;
        let rebuild = RebuildStats {
            records: loaded.projection.last_seq(),
            changes: loaded.registry.last_seq(),
            elapsed: started.elapsed(),
        };
        let (committed, _) = watch::channel(loaded.projection.last_seq());
        let shared = Arc::new(Shared {
            projection: RwLock::new(loaded.projection),
            registry: RwLock::new(loaded.registry),
            committed,
            reader: Mutex::new(store.reader()?),
            storage_error: Mutex::new(None),
        });
        let writer = Writer {
            store: Box::new(store),
            path: path.to_owned(),
            reopen: None,
            shared: shared.clone(),
            clock,
            last_link: loaded.last_link,
            last_change_hash: loaded.last_change_hash,
            last_event: loaded.last_event,
        };
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("hookledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LedgerError::Invalid(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            requests: Some(tx),
            writer: Some(handle),
            shared,
            rebuild,
        })
    }

    pub fn rebuild_stats(&self) -> RebuildStats {
        self.rebuild
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends a commit to the writer; the receipt arrives once it is durable.
    pub fn submit(&self, commit: Commit) -> oneshot::Receiver<Result<Receipt>> {
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = &self.requests {
            // If the writer is gone the reply sender drops and the caller sees WriterGone.
            let _ = tx.send(Request { commit, reply });
        }
        rx
    }

    /// Appends a commit and waits for it to be durable.
    pub async fn commit(&self, commit: Commit) -> Result<Receipt> {
        self.submit(commit)
            .await
            .map_err(|_| LedgerError::WriterGone)?
    }

    /// [`Ledger::commit`] for callers outside an async runtime.
    pub fn commit_blocking(&self, commit: Commit) -> Result<Receipt> {
        self.submit(commit)
            .blocking_recv()
            .map_err(|_| LedgerError::WriterGone)?
    }

    /// A copy of the live projection.
    pub fn state(&self) -> Projection {
        self.shared.read_projection().clone()
    }

    /// A read connection (clones are cheap: same database, own transaction context).
    pub fn reader(&self) -> Result<DuckStore> {
        self.shared.reader_slot().reader()
    }

    /// The queue as it was right after record `seq`.
    pub fn state_at_seq(&self, seq: u64) -> Result<Projection> {
        fold_records(&self.reader()?, seq)
    }

    /// The queue as it was at `at` (every record recorded at or before it).
    pub fn state_at_time(&self, at: Timestamp) -> Result<Projection> {
        let reader = self.reader()?;
        let seq = reader.last_seq_at(at)?;
        fold_records(&reader, seq)
    }

    /// One delivery's records, in order: its audit trail.
    pub fn history(&self, key: DeliveryKey) -> Result<Vec<Record>> {
        history(&self.reader()?, key)
    }

    /// Re-folds everything from scratch and checks it against the live state.
    pub fn verify(&self) -> Result<verify::Verdict> {
        let live = self.state();
        verify::verify(&self.reader()?, Some(&live))
    }

    /// Stops the writer after it has committed everything already submitted.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.requests.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Folds records `1..=upto` into a fresh projection.
pub fn fold_records(store: &dyn Store, upto: u64) -> Result<Projection> {
    let mut projection = Projection::new();
    store.scan_records(1, upto, &mut |row| projection.apply(&row.into_record()?))?;
    Ok(projection)
}

/// Folds registry change rows, in seq order.
fn fold_changes(rows: Vec<registry::StoredChange>) -> Result<Registry> {
    let mut registry = Registry::new();
    for row in rows {
        registry.apply(&row.into_change()?)?;
    }
    Ok(registry)
}

/// One delivery's records, decoded.
pub fn history(store: &dyn Store, key: DeliveryKey) -> Result<Vec<Record>> {
    store
        .history(key)?
        .into_iter()
        .map(|r| r.into_record())
        .collect()
}
