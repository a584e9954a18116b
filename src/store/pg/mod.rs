//! The PostgreSQL store: the [`Store`] trait over one PostgreSQL database (15 or later), for
//! running hookledger on a database server instead of a local DuckDB file.
//!
//! **Client.** The `postgres` crate (the synchronous client over tokio-postgres) with an r2d2
//! pool (`r2d2_postgres`, by the same author). The trait is synchronous and the ledger's
//! writer is a plain thread, so a blocking client fits without an executor of our own; readers
//! beside the writer (API queries, `verify`, the checkpointer) each take a connection from the
//! pool when they first query. The sync client runs each call on a small runtime of its own,
//! which panics when entered from a tokio worker: so a [`PgStore`] never connects when it is
//! made or cloned ([`PgStore::reader`] only clones the pool; the connection is taken at the
//! first query, which the API runs inside `spawn_blocking`), and a store dropped on a runtime
//! thread hands its connection to a plain thread to close (see `Drop`).
//!
//! **Tables.** `schema/pg/*.sql`, applied and versioned like DuckDB's (`migrate.rs`): the same
//! tables and audit views with PostgreSQL types (uuid keys, bytea hashes and bodies,
//! timestamptz, smallint/integer/bigint for DuckDB's unsigned integers). DuckDB's event
//! buckets and Bloom filters exist to keep DuckDB's checkpoints small; here the events table's
//! primary key on `event_id` refuses a repeated id at any age.
//!
//! **Commit.** One transaction per batch: the records, then the chain link, registry changes,
//! the expunges (each body set to NULL beside its fact, `expunges.rs`), settings, and the
//! events last (a repeated event id, the one constraint a batch can hit,
//! fails the last statement and rolls everything back). Records and events go in one
//! multi-row `INSERT ... SELECT FROM unnest($1, $2, ...)` each, with the columns as typed
//! arrays: one prepared statement, one round trip, whatever the batch size. Every statement is
//! prepared once per connection (`Held::prepared`).
//!
//! Errors: a lost connection or a server that is shutting down or refusing connections is
//! [`LedgerError::StorageUnavailable`] (the writer refuses and retries, the API answers 503);
//! the connection is dropped and the next call takes a fresh one from the pool.
//!
//! Invariant: as for every store, only appends (and the checkpoint cache's thinning); the
//! conformance suite (`tests/it/store_conformance.rs`) runs unchanged against this store.

pub mod cluster;
mod events;
mod expunges;
mod migrate;
mod positions;
mod queries;
mod records;
mod stats;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use r2d2_postgres::PostgresConnectionManager;

use super::{CheckpointInfo, CommitBatch, Store, StoredCheckpoint, StoredEvent};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId};
use crate::ledger::chain::{BatchLink, Hash};
use crate::ledger::record::{RecordKind, Terminal, Timestamp};
use crate::ledger::stored::StoredRecord;
use crate::ledger::view::{DeliveryFilter, DeliverySummary};
use crate::registry::StoredChange;
pub use migrate::{supported_schema, MIGRATIONS};

pub use super::duck::OpenMode;

type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Pooled = r2d2_postgres::r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Connections a store's pool opens at most (the writer, the checkpointer, API readers).
const POOL_SIZE: u32 = 8;
/// How long a call waits for a connection before the database counts as unavailable (while
/// PostgreSQL is down, a publish answers 503 after this long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection taken from the pool, with the statements prepared on it.
struct Held {
    client: Pooled,
    statements: HashMap<&'static str, Statement>,
}

impl Held {
    /// `sql` prepared on this connection (once; later calls reuse it).
    fn prepared(&mut self, sql: &'static str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// A PostgreSQL database speaking the [`Store`] trait.
pub struct PgStore {
    pool: Option<Pool>,
    held: RefCell<Option<Held>>,
    /// The URL without its password, for messages.
    shown: String,
    schema: u32,
    /// The commit lock is held on `held`'s connection (see `cluster.rs`): a pooled connection
    /// must not go back to the pool holding it.
    locked: std::cell::Cell<bool>,
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq key=value string)
    /// and, read-write, applies pending migrations. A read-only open needs the schema to exist
    /// and runs every transaction read-only.
    pub fn open(url: &str, mode: OpenMode) -> Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| LedgerError::Invalid(format!("--store: not a PostgreSQL URL: {e}")))?;
        let shown = shown(url);
        if mode == OpenMode::ReadOnly {
            // Beside any options the URL carries (a search_path, say).
            let options = match config.get_options() {
                Some(o) => format!("{o} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_owned(),
            };
            config.options(&options);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2_postgres::r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)
            .map_err(|e| LedgerError::StorageUnavailable {
                reason: format!("cannot connect to PostgreSQL at {shown}: {e}"),
            })?;
        let mut store = Self {
            pool: Some(pool),
            held: RefCell::new(None),
            shown,
            schema: 0,
            locked: std::cell::Cell::new(false),
        };
        store.schema = store.migrate(mode)?;
        Ok(store)
    }

    /// Another handle on the same database, for reads beside the writer. It connects (takes a
    /// pooled connection) at its first query, not here, so it may be made on any thread.
    pub fn reader(&self) -> Result<Self> {
        Ok(Self {
            pool: self.pool.clone(),
            held: RefCell::new(None),
            shown: self.shown.clone(),
            schema: self.schema,
            locked: std::cell::Cell::new(false),
        })
    }

    /// The database as messages name it (no password).
    pub fn location(&self) -> &str {
        &self.shown
    }

    /// The highest applied migration of `schema/pg`.
    pub fn schema_version(&self) -> Result<u32> {
        self.with(migrate::version)
    }

    /// Runs `f` on this store's connection (taken from the pool at the first call). A call
    /// that finds the connection lost drops it, so that the next takes a fresh one, and
    /// answers [`LedgerError::StorageUnavailable`].
    fn with<T>(&self, f: impl FnOnce(&mut Held) -> Result<T>) -> Result<T> {
        let mut slot = self.held.borrow_mut();
        if slot.is_none() {
            let pool = self
                .pool
                .as_ref()
                .ok_or_else(|| LedgerError::StorageUnavailable {
                    reason: "the store is closed".into(),
                })?;
            let client = pool.get().map_err(|e| LedgerError::StorageUnavailable {
                reason: format!("cannot connect to PostgreSQL at {}: {e}", self.shown),
            })?;
            *slot = Some(Held {
                client,
                statements: HashMap::new(),
            });
        }
        let Some(held) = slot.as_mut() else {
            return Err(LedgerError::StorageUnavailable {
                reason: "no PostgreSQL connection".into(),
            });
        };
        let out = f(held);
        let lost = held.client.is_closed();
        if lost {
            *slot = None;
        }
        out.map_err(|e| classify(e, lost))
    }

    /// Direct SQL access, for tests that play the attacker and for tools: `f` runs on this
    /// store's connection.
    pub fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        self.with(|h| Ok(f(&mut h.client)?))
    }
}

impl Drop for PgStore {
    /// The sync client closes its connection on its own small runtime, which cannot start on a
    /// thread that is inside a tokio runtime: there, the connection and the pool handle are
    /// closed on a plain thread instead.
    fn drop(&mut self) {
        let mut held = self.held.take();
        let locked = self.locked.get();
        let pool = self.pool.take();
        // A connection going back to the pool must not keep the commit lock.
        let close = move || {
            if let (true, Some(h)) = (locked, held.as_mut()) {
                let _ = h.client.execute("SELECT pg_advisory_unlock_all()", &[]);
            }
            drop((held, pool));
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("hookledger-pg-close".into())
                .spawn(close);
        } else {
            close();
        }
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ if url.contains("password") => "(a connection string with a password)".to_owned(),
        _ => url.to_owned(),
    }
}

/// SQLSTATE classes that mean the server cannot serve now (connection exceptions, resources,
/// operator intervention such as a shutdown) rather than a bad statement.
const UNAVAILABLE_CLASSES: &[&str] = &["08", "53", "57"];

/// A PostgreSQL error as the writer can act on it: the connection's own failures (lost, I/O,
/// a timeout) and the server's "cannot serve now" classes are storage unavailable.
fn classify(e: LedgerError, lost: bool) -> LedgerError {
    let LedgerError::Pg(pg) = e else { return e };
    let code = pg.code().map(|c| c.code().to_owned());
    let server_unavailable = code
        .as_deref()
        .is_some_and(|c| UNAVAILABLE_CLASSES.iter().any(|p| c.starts_with(p)));
    let io = std::error::Error::source(&pg).is_some_and(|s| s.is::<std::io::Error>());
    if lost || pg.is_closed() || io || server_unavailable {
        return LedgerError::StorageUnavailable {
            reason: format!("PostgreSQL: {pg}"),
        };
    }
    if code.as_deref() == Some("23505") {
        return LedgerError::CommitFailed(format!(
            "a row is already stored (a repeated event id?): {pg}"
        ));
    }
    LedgerError::Pg(pg)
}

/// A stored 32-byte hash (a short one, which only tampering makes, reads as zeros and fails
/// the chain check).
fn hash(v: Vec<u8>) -> Hash {
    v.try_into().unwrap_or([0; 32])
}

/// Microseconds since the epoch as PostgreSQL's timestamptz.
fn ts(us: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A statement parameter (the first of a list of mixed types names the list's type).
type Param<'a> = &'a (dyn ToSql + Sync);

/// A seq as PostgreSQL's bigint.
fn seq(s: u64) -> i64 {
    s.min(i64::MAX as u64) as i64
}

impl Store for PgStore {
    fn commit(&mut self, batch: &CommitBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with(|h| records::commit(h, batch))
    }

    fn scan_records(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(StoredRecord) -> Result<()>,
    ) -> Result<()> {
        self.with(|h| records::scan(h, from, to, f))
    }

    fn last_seq(&self) -> Result<u64> {
        self.with(positions::last_seq)
    }

    fn last_seq_at(&self, at: Timestamp) -> Result<u64> {
        Ok(self
            .with(|h| positions::last_seq_at_within(h, at, 0, u64::MAX))?
            .unwrap_or(0))
    }

    fn links(&self) -> Result<Vec<BatchLink>> {
        self.with(positions::links)
    }

    fn links_after(&self, seq: u64) -> Result<Vec<BatchLink>> {
        self.with(|h| positions::links_after(h, seq))
    }

    fn changes(&self) -> Result<Vec<StoredChange>> {
        let schema = self.schema;
        self.with(|h| records::changes(h, schema))
    }

    fn page(
        &self,
        after_seq: u64,
        limit: usize,
        webhook: Option<crate::ids::WebhookId>,
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        self.with(|h| records::page(h, after_seq, limit, webhook, kind, None))
    }

    fn page_of(
        &self,
        after_seq: u64,
        limit: usize,
        webhooks: &[crate::ids::WebhookId],
        kind: Option<RecordKind>,
    ) -> Result<Vec<StoredRecord>> {
        self.with(|h| records::page(h, after_seq, limit, None, kind, Some(webhooks)))
    }

    fn finished_counts(
        &self,
        webhooks: &[crate::ids::WebhookId],
        upto_seq: u64,
    ) -> Result<(u64, u64, u64)> {
        self.with(|h| queries::finished_counts(h, webhooks, upto_seq))
    }

    fn history(&self, key: DeliveryKey) -> Result<Vec<StoredRecord>> {
        self.with(|h| records::history(h, key))
    }

    fn events(&self, ids: &[EventId]) -> Result<Vec<StoredEvent>> {
        self.with(|h| events::by_id(h, ids))
    }

    fn events_of_records(&self, first: u64, last: u64) -> Result<Vec<StoredEvent>> {
        self.with(|h| events::of_records(h, first, last))
    }

    fn producer_ids(&self, ids: &[EventId]) -> Result<HashMap<EventId, String>> {
        self.with(|h| events::producer_ids(h, ids))
    }

    fn bodies_published_before(
        &self,
        before: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventId)>> {
        self.with(|h| events::bodies_published_before(h, before, after, limit))
    }

    fn enqueued_webhooks(&self, event_id: EventId) -> Result<Vec<crate::ids::WebhookId>> {
        self.with(|h| queries::enqueued_webhooks(h, event_id))
    }

    fn finished_in_window(
        &self,
        webhook: crate::ids::WebhookId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(EventId, Terminal)>> {
        self.with(|h| queries::finished_in_window(h, webhook, since, until))
    }

    fn scan_events(&self, f: &mut dyn FnMut(StoredEvent) -> Result<()>) -> Result<()> {
        self.with(|h| events::scan(h, f))
    }

    fn last_event(&self) -> Result<Option<(u64, Hash)>> {
        self.with(events::last)
    }

    fn first_duplicate_enqueue(&self) -> Result<Option<u64>> {
        self.with(queries::first_duplicate_enqueue)
    }

    fn first_bad_requeue(&self) -> Result<Option<(u64, Terminal, Option<RecordKind>)>> {
        self.with(queries::first_bad_requeue)
    }

    fn last_kinds(&self, keys: &[DeliveryKey]) -> Result<Vec<(DeliveryKey, RecordKind)>> {
        self.with(|h| queries::last_kinds(h, keys))
    }

    fn deliveries(
        &self,
        filter: DeliveryFilter,
        after_enqueued_seq: u64,
        limit: usize,
    ) -> Result<Vec<DeliverySummary>> {
        self.with(|h| queries::deliveries(h, &filter, after_enqueued_seq, limit))
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.with(|h| positions::setting(h, name))
    }

    fn link_ending_at(&self, seq: u64) -> Result<Option<BatchLink>> {
        self.with(|h| positions::link_ending_at(h, seq))
    }

    fn last_link(&self, at_or_after: u64) -> Result<Option<(BatchLink, Timestamp)>> {
        self.with(|h| positions::last_link(h, at_or_after))
    }

    fn last_seq_at_within(&self, at: Timestamp, from: u64, before: u64) -> Result<Option<u64>> {
        self.with(|h| positions::last_seq_at_within(h, at, from, before))
    }

    fn append_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()> {
        self.with(|h| positions::append_checkpoint(h, checkpoint))
    }

    fn checkpoint_index(&self) -> Result<Vec<CheckpointInfo>> {
        self.with(positions::checkpoint_index)
    }

    fn checkpoints_at(&self, seq: u64) -> Result<Vec<StoredCheckpoint>> {
        self.with(|h| positions::checkpoints_at(h, seq))
    }

    fn last_expunge(&self) -> Result<Option<(u64, Hash)>> {
        self.with(expunges::last)
    }

    fn scan_expunges(
        &self,
        f: &mut dyn FnMut(crate::ledger::expunge::StoredExpunge) -> Result<()>,
    ) -> Result<()> {
        self.with(|h| expunges::scan(h, f))
    }

    fn first_unrecorded_expunge(&self) -> Result<Option<u64>> {
        self.with(expunges::first_unrecorded)
    }

    fn expunge_of(&self, event: EventId) -> Result<Option<crate::ledger::expunge::StoredExpunge>> {
        self.with(|h| expunges::of(h, event))
    }

    fn delete_checkpoints(&mut self, seqs: &[u64]) -> Result<u64> {
        self.with(|h| positions::delete_checkpoints(h, seqs))
    }

    fn attempt_stats(&self, query: &super::AttemptStatsQuery) -> Result<super::AttemptStats> {
        self.with(|h| stats::attempt_stats(h, query))
    }

    fn lock_commits(&mut self) -> Result<bool> {
        self.with(cluster::lock)?;
        self.locked.set(true);
        Ok(true)
    }

    fn unlock_commits(&mut self) -> Result<()> {
        self.locked.set(false);
        self.with(cluster::unlock)
    }

    fn heads(&self) -> Result<Option<super::Heads>> {
        self.with(cluster::heads).map(Some)
    }

    fn changes_after(&self, seq: u64) -> Result<Vec<StoredChange>> {
        let schema = self.schema;
        self.with(|h| records::changes_after(h, schema, seq))
    }

    fn leased_partitions(&self, node: uuid::Uuid) -> Result<Option<u64>> {
        self.with(|h| cluster::leased(h, node)).map(Some)
    }
}
