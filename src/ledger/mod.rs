//! The ledger: the append-only `webhook_deliveries` log, its single writer, and the queue-state
//! projection folded from it.
//!
//! [`Ledger::open`] rebuilds the in-memory state from the newest valid projection checkpoint
//! and the records after it, or from genesis ([`checkpoint`]: a checkpoint is a cache bound to
//! a chain position, never a source of truth; no stored queue table is trusted). All appends go through the one writer thread
//! ([`writer`]); reads use their own connection. Point-in-time state
//! ([`Ledger::state_at_seq`], [`Ledger::state_at_time`]) folds from the nearest checkpoint at
//! or before the target; [`Ledger::verify`] re-folds from genesis with the same pure
//! [`projection`] fold and checks every checkpoint against it.
//!
//! When the disk fails (full, read-only, gone), commits fail with
//! [`LedgerError::StorageUnavailable`] and nothing of them is applied; the writer reopens the
//! database and folds it again if its connection broke (`reopen.rs`), and
//! [`Shared::storage_error`] says why while it lasts.
//!
//! The log lives in either store ([`crate::store::any::Location`]): a DuckDB file
//! ([`Ledger::open_with`]) or a PostgreSQL database ([`Ledger::open_at`]); everything above the
//! [`Store`] trait is the same for both.

mod catch_up;
pub mod chain;
pub mod checkpoint;
pub mod due;
pub mod expunge;
mod listen;
pub mod pauses;
pub mod projection;
pub mod record;
mod reopen;
mod stage;
pub mod stored;
pub mod verify;
mod verify_checkpoints;
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
use crate::store::any::{AnyStore, Location};
use crate::store::duck::OpenMode;
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
    reader: Mutex<AnyStore>,
    /// Why the last commit could not be written, until one is (`/healthz` reports it).
    storage_error: Mutex<Option<String>>,
    /// How this ledger was opened (checkpoints, buckets), for reopening and queries.
    options: LedgerOptions,
    /// This node's place among several on one database (`None`: the only writer).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Membership>>,
    /// Checkpoints the writer's store took while its queue was empty ([`Store::idle`]).
    idle_checkpoints: std::sync::atomic::AtomicU64,
    /// How long the writer's transactions and idle work held it.
    pauses: pauses::WriterPauses,
}

impl Shared {
    pub(crate) fn note_idle_checkpoint(&self) {
        self.idle_checkpoints
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
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
    /// This node's membership, when it runs beside others on one database.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Membership>> {
        self.cluster.get()
    }
    /// Joins the ledger to a cluster (once; `serve` on PostgreSQL).
    pub fn set_cluster(&self, membership: Arc<crate::cluster::Membership>) {
        let _ = self.cluster.set(membership);
    }
    /// Whether this node starts attempts of `webhook`'s deliveries: always when it is the
    /// only writer, else when it leases the webhook's partition.
    pub fn attempts(&self, webhook: crate::ids::WebhookId) -> bool {
        self.cluster.get().is_none_or(|m| m.owns(webhook))
    }
    fn reader_slot(&self) -> std::sync::MutexGuard<'_, AnyStore> {
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
    last_expunge: (u64, chain::Hash),
    /// The checkpoint the fold started from, and the ones passed over.
    start: Start,
}

/// Where a fold started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Start {
    /// The seq of the checkpoint it started from (`None`: from genesis).
    pub checkpoint: Option<u64>,
    /// Checkpoints that did not check out and were ignored (each was logged as a warning).
    pub ignored: Vec<checkpoint::Ignored>,
}

impl Loaded {
    /// Folds the file, from its newest valid checkpoint when `use_checkpoints`.
    fn from_store(store: &dyn Store, use_checkpoints: bool) -> Result<Self> {
        let changes = store.changes()?;
        let (snapshot, ignored) = if use_checkpoints {
            checkpoint::newest_valid(store, u64::MAX, &|s| {
                checkpoint::registry_matches(s, &changes)
            })?
        } else {
            (None, Vec::new())
        };
        let start = Start {
            checkpoint: snapshot.as_ref().map(|s| s.projection.last_seq()),
            ignored,
        };
        // The checkpoint's registry part holds the webhooks only; apps, tokens and the
        // webhook-to-app index are folded from the change log (changes are few).
        let mut projection = snapshot.map(|s| s.projection).unwrap_or_default();
        let mut registry = Registry::new();
        let from = projection.last_seq();
        store.scan_records(from + 1, u64::MAX, &mut |row| {
            projection.apply(&row.into_record()?)
        })?;
        let last_change_hash = changes.last().map_or_else(registry::genesis, |c| c.hash);
        for row in changes {
            registry.apply(&row.into_change()?)?;
        }
        let last_link = store
            .last_link(from)?
            .map_or_else(chain::genesis, |(l, _)| l.hash);
        let last_event = store.last_event()?.unwrap_or((0, chain::event_genesis()));
        let last_expunge = store.last_expunge()?.unwrap_or((0, expunge::genesis()));
        Ok(Self {
            projection,
            registry,
            last_link,
            last_change_hash,
            last_event,
            last_expunge,
            start,
        })
    }
}

/// What the startup rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildStats {
    /// Records folded (after the checkpoint, if one was used).
    pub records: u64,
    pub changes: u64,
    pub elapsed: Duration,
    pub start: Start,
}

/// How a ledger runs its history: checkpoints and DuckDB's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOptions {
    /// Store a projection checkpoint every this many records (`None`: never).
    pub checkpoint_every: Option<u64>,
    /// Start from the newest valid checkpoint (false: always fold from genesis).
    pub use_checkpoints: bool,
    /// Events per bucket of the events table (see `store/duck/buckets.rs`).
    pub bucket_events: u64,
    /// DuckDB: the WAL size in MiB from which the writer checkpoints when its queue is empty
    /// (0: only DuckDB's own checkpoint at 16 MB; see [`crate::store::Store::idle`]).
    pub idle_checkpoint_mb: u64,
}

/// Records between two projection checkpoints, by default.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100_000;

impl LedgerOptions {
    /// The defaults, with `HOOKLEDGER_CHECKPOINT_EVERY` (records between checkpoints; 0 turns
    /// them off) and `HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB` (0 to 16) applied.
    pub fn from_env() -> Result<Self> {
        let mut options = Self::default();
        if let Ok(v) = std::env::var("HOOKLEDGER_CHECKPOINT_EVERY") {
            let n: u64 = v.trim().parse().map_err(|_| {
                LedgerError::Invalid(format!("HOOKLEDGER_CHECKPOINT_EVERY=`{v}` is not a number"))
            })?;
            options.checkpoint_every = (n > 0).then_some(n);
        }
        if let Ok(v) = std::env::var("HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB") {
            options.idle_checkpoint_mb = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|mb| *mb <= 16)
                .ok_or_else(|| {
                    LedgerError::Invalid(format!(
                        "HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB=`{v}`: a whole number of MiB from 0 (off) to 16"
                    ))
                })?;
        }
        Ok(options)
    }
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: Some(DEFAULT_CHECKPOINT_EVERY),
            use_checkpoints: true,
            bucket_events: crate::store::duck::DEFAULT_BUCKET_EVENTS,
            idle_checkpoint_mb: crate::store::duck::DEFAULT_IDLE_CHECKPOINT_MB,
        }
    }
}

/// An open ledger: the writer thread, the live projection, and a read connection.
pub struct Ledger {
    requests: Option<Sender<Request>>,
    /// Other writers' commits, on a store several nodes write (PostgreSQL).
    listener: Option<listen::Listener>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<checkpoint::checkpointer::Checkpointer>,
    checkpoint_stats: Arc<checkpoint::checkpointer::CheckpointStats>,
    shared: Arc<Shared>,
    rebuild: RebuildStats,
}

impl Ledger {
    /// Opens (creating if needed) the database at `path` with the default options.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open_with(path, clock, &LedgerOptions::default())
    }

    /// Opens (creating if needed) the database at `path`, rebuilds the state from its newest
    /// valid checkpoint and the records after it (or from genesis), and starts the writer and
    /// the checkpointer.
    pub fn open_with(path: &Path, clock: Arc<dyn Clock>, options: &LedgerOptions) -> Result<Self> {
        Self::open_at(&Location::Duck(path.to_owned()), clock, options)
    }

    /// [`Ledger::open_with`] for a ledger in either store: a DuckDB file or a PostgreSQL
    /// database.
    pub fn open_at(
        location: &Location,
        clock: Arc<dyn Clock>,
        options: &LedgerOptions,
    ) -> Result<Self> {
        let mut store = AnyStore::open(location, OpenMode::ReadWrite)?;
        store.set_bucket_events(options.bucket_events);
        store.set_idle_checkpoint_mb(options.idle_checkpoint_mb);
        let started = Instant::now();
        let loaded = Loaded::from_store(&store, options.use_checkpoints)?;
        store.use_one_thread()?;
        let rebuild = RebuildStats {
            records: loaded.projection.last_seq() - loaded.start.checkpoint.unwrap_or(0),
            changes: loaded.registry.last_seq(),
            elapsed: started.elapsed(),
            start: loaded.start.clone(),
        };
        let last_checkpoint = loaded.start.checkpoint.unwrap_or(0);
        let (committed, _) = watch::channel(loaded.projection.last_seq());
        let shared = Arc::new(Shared {
            projection: RwLock::new(loaded.projection),
            registry: RwLock::new(loaded.registry),
            committed,
            reader: Mutex::new(store.reader()?),
            storage_error: Mutex::new(None),
            options: options.clone(),
            cluster: std::sync::OnceLock::new(),
            idle_checkpoints: Default::default(),
            pauses: Default::default(),
        });
        let listening = match &store {
            AnyStore::Pg(pg) => Some(pg.reader()?),
            AnyStore::Duck(_) => None,
        };
        let writer = Writer {
            store: Box::new(store),
            location: location.clone(),
            reopen: None,
            shared: shared.clone(),
            clock,
            last_link: loaded.last_link,
            last_change_hash: loaded.last_change_hash,
            last_event: loaded.last_event,
            last_expunge: loaded.last_expunge,
        };
        let (tx, rx) = mpsc::channel();
        let listener = match listening {
            Some(pg) => Some(listen::Listener::spawn(pg, shared.clone(), tx.clone())?),
            None => None,
        };
        let handle = std::thread::Builder::new()
            .name("hookledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LedgerError::Invalid(format!("cannot start the writer: {e}")))?;
        let checkpoint_stats = Arc::new(checkpoint::checkpointer::CheckpointStats::default());
        let checkpointer = match options.checkpoint_every {
            Some(every) if every > 0 => Some(checkpoint::checkpointer::Checkpointer::spawn(
                shared.clone(),
                checkpoint_stats.clone(),
                every,
                last_checkpoint,
            )?),
            _ => None,
        };
        Ok(Self {
            requests: Some(tx),
            listener,
            writer: Some(handle),
            checkpointer,
            checkpoint_stats,
            shared,
            rebuild,
        })
    }

    /// Stores a projection checkpoint of the state now (the checkpointer does this by itself
    /// every `checkpoint_every` records); its seq, or `None` for an empty ledger.
    pub fn checkpoint_now(&self) -> Result<Option<u64>> {
        checkpoint::checkpointer::write_now(&self.shared, &self.checkpoint_stats)
    }

    /// How many DuckDB checkpoints the writer took while its queue was empty.
    pub fn idle_checkpoints(&self) -> u64 {
        self.shared
            .idle_checkpoints
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the writer's transactions and idle checkpoints have held it so far.
    pub fn writer_pauses(&self) -> &pauses::WriterPauses {
        &self.shared.pauses
    }

    /// What the checkpointer has done so far.
    pub fn checkpoint_stats(&self) -> &checkpoint::checkpointer::CheckpointStats {
        &self.checkpoint_stats
    }

    /// The head: last seq, its chain hash and when it was committed.
    pub fn head(&self) -> Result<checkpoint::Head> {
        let seq = self.shared.read_projection().last_seq();
        checkpoint::head(&self.reader()?, seq)
    }

    pub fn rebuild_stats(&self) -> &RebuildStats {
        &self.rebuild
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

    /// Waits until the writer has folded in everything other nodes committed so far (on a
    /// store with one writer: until it has processed what was submitted before).
    pub async fn sync(&self) -> Result<()> {
        self.commit(Commit::default()).await.map(|_| ())
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

    /// A read connection (clones are cheap: same database, own transaction context; on
    /// PostgreSQL it takes a pooled connection at its first query, so query it inside
    /// `spawn_blocking`, never on a runtime worker).
    pub fn reader(&self) -> Result<AnyStore> {
        self.shared.reader_slot().reader()
    }

    /// The queue as it was right after record `seq`, folded from the nearest valid checkpoint
    /// at or before it.
    pub fn state_at_seq(&self, seq: u64) -> Result<Projection> {
        let reader = self.reader()?;
        if self.shared.options.use_checkpoints {
            checkpoint::state_at(&reader, seq)
        } else {
            fold_records(&reader, seq)
        }
    }

    /// The queue as it was at `at` (every record recorded at or before it).
    pub fn state_at_time(&self, at: Timestamp) -> Result<Projection> {
        let reader = self.reader()?;
        if self.shared.options.use_checkpoints {
            let seq = checkpoint::seq_at_time(&reader, at)?;
            checkpoint::state_at(&reader, seq)
        } else {
            let seq = reader.last_seq_at(at)?;
            fold_records(&reader, seq)
        }
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
        if let Some(mut c) = self.checkpointer.take() {
            c.stop(&self.shared);
        }
        if let Some(mut l) = self.listener.take() {
            l.stop();
        }
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

/// One delivery's records, decoded.
pub fn history(store: &dyn Store, key: DeliveryKey) -> Result<Vec<Record>> {
    store
        .history(key)?
        .into_iter()
        .map(|r| r.into_record())
        .collect()
}
