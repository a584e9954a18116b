//! `hookledger serve`: one process with the ledger, the delivery engine and the HTTP API.
//!
//! Start-up folds the log (printing how many records and how long), recovers attempts cut off
//! by a crash, and starts the re-drive loop and the operational events' watcher
//! (`crate::delivery::operational`). SIGTERM or SIGINT stop taking requests, let
//! attempts in flight finish and record their outcomes, flush the writer, and exit 0. The
//! listener and the bounds on slow, idle and too many clients are `api::server`'s. With
//! `HOOKLEDGER_BODY_RETENTION` it runs the retention pass, and with `HOOKLEDGER_EXPORT_DIR` the
//! continuous Parquet export (`crate::export::run`), each a background task off the writer.
//!
//! The ledger is a DuckDB file (`--db`) or a PostgreSQL database (`--store postgres://...` or
//! `HOOKLEDGER_DATABASE_URL`); it is opened on a blocking thread, since the PostgreSQL client
//! must never run on a runtime worker.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, AppState};
use crate::clock::SystemClock;
use crate::config::{DeliverySettings, HttpSettings};
use crate::delivery::engine::Engine;
use crate::delivery::sender::Sender;
use crate::error::{LedgerError, Result};
use crate::ledger::writer::Commit;
use crate::ledger::Ledger;
use crate::store::any::Location;
use crate::store::Store;

/// The environment variable that sets the API token.
pub const API_TOKEN: &str = "HOOKLEDGER_API_TOKEN";
const TOKEN_SETTING: &str = "api_token";

pub struct ServeOptions {
    /// The DuckDB file or the PostgreSQL database.
    pub location: Location,
    pub listen: SocketAddr,
    pub max_payload: usize,
}

fn invalid(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Invalid(e.to_string())
}

pub async fn serve(options: ServeOptions) -> Result<()> {
    let settings = DeliverySettings::from_env().map_err(invalid)?;
    let http = HttpSettings::from_env().map_err(invalid)?;
    // Checked before anything opens: a wrong auditor role stops the start at once.
    let sql_url = crate::sql::pg::from_env(&options.location)?;
    let clock = Arc::new(SystemClock);
    let location = options.location.clone();
    let ledger_options = crate::ledger::LedgerOptions::from_env()?;
    let ledger =
        tokio::task::spawn_blocking(move || Ledger::open_at(&location, clock, &ledger_options))
            .await
            .map_err(invalid)??;
    let ledger = Arc::new(ledger);
    let stats = ledger.rebuild_stats();
    let from = stats
        .start
        .checkpoint
        .map_or("from genesis".to_owned(), |s| {
            format!("after the checkpoint at seq {s}")
        });
    println!(
        "database {}: folded {} records {from} and {} registry changes in {:.1} ms",
        options.location,
        stats.records,
        stats.changes,
        stats.elapsed.as_secs_f64() * 1000.0
    );
    // The fold's burst of allocations is over: freed memory goes back promptly from now on.
    crate::alloc::settle();
    let token = api_token(&ledger).await?;
    let db_file = match &options.location {
        Location::Duck(path) => Some(path.as_path()),
        Location::Postgres(_) => None,
    };
    let keyring = crate::secrets::startup::prepare(&ledger, db_file, chrono::Utc::now()).await?;
    let sender = Sender::new(settings.sender_config()).map_err(invalid)?;
    let engine = Engine::with_ops(
        ledger.clone(),
        sender,
        Arc::new(SystemClock),
        settings.engine_config(),
        settings.ops_config(Some(keyring)),
    );
    // Beside other nodes, attempts cut off by a stop are abandoned by whoever takes their
    // partitions (`crate::cluster`); alone, every attempt left open was this process's.
    let cluster = match ledger.reader()? {
        crate::store::any::AnyStore::Pg(pg) => Some(join_cluster(pg, &ledger, &engine).await?),
        crate::store::any::AnyStore::Duck(_) => {
            engine.recover_abandoned().await?;
            None
        }
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    if let Some(policy) = crate::erasure::retention::Retention::from_env()? {
        let task = crate::erasure::retention::run(
            ledger.clone(),
            Arc::new(SystemClock),
            policy,
            shutdown.clone(),
        );
        tokio::spawn(task);
    }
    if let Some(export) = crate::config::ExportSettings::from_env().map_err(invalid)? {
        tokio::spawn(crate::export::run::run(
            ledger.clone(),
            export,
            shutdown.clone(),
        ));
    }
    let operational =
        crate::delivery::operational::Watcher::new(engine.clone(), settings.failing_after);
    let operational = tokio::spawn(operational.run(shutdown.clone()));
    let redrive = tokio::spawn(engine.clone().run(shutdown));
    let state = AppState {
        engine,
        egress: settings.egress.clone(),
        token: Arc::new(token),
        sql_url,
    };
    // Installed before "listening on" is printed: a SIGTERM sent as soon as that line appears
    // must stop the process gracefully, not kill it.
    let stopped = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| invalid(format!("cannot listen on {}: {e}", options.listen)))?;
    let addr = listener.local_addr().map_err(invalid)?;
    println!("listening on http://{addr}");
    api::server::serve(
        listener,
        api::router(state, options.max_payload),
        http,
        stopped,
    )
    .await;
    let _ = stop.send(true);
    let _ = redrive.await;
    let _ = operational.await;
    if let Some(leases) = cluster {
        // The engine has drained: nothing of this node is in an attempt any more.
        tokio::task::spawn_blocking(move || leases.leave())
            .await
            .map_err(invalid)??;
        println!("left the cluster: its partitions are free for the other nodes");
    }
    println!("stopped");
    Ok(())
}

/// Takes this node's place beside the others on one PostgreSQL database: a node id, the
/// membership the writer fences with, and the lease loop (its first round done).
async fn join_cluster(
    store: crate::store::pg::PgStore,
    ledger: &Arc<Ledger>,
    engine: &Arc<Engine>,
) -> Result<crate::cluster::lease::LeaseLoop> {
    let membership = Arc::new(crate::cluster::Membership::new(uuid::Uuid::new_v4()));
    ledger.shared().set_cluster(membership.clone());
    let (shared, woken) = (ledger.shared().clone(), engine.clone());
    let m = membership.clone();
    let leases = tokio::task::spawn_blocking(move || {
        crate::cluster::lease::LeaseLoop::start(store, shared, m, Box::new(move || woken.wake()))
    })
    .await
    .map_err(invalid)??;
    println!(
        "node {} on PostgreSQL: {} live node(s), holds {} of {} webhook partitions",
        membership.node,
        membership.live_nodes(),
        membership.held().count_ones(),
        crate::cluster::PARTITIONS
    );
    Ok(leases)
}

/// What the API checks a presented operator token against: `sha256:` and the hex SHA-256 of
/// the token (see `crate::api`), never the token itself.
fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "{DIGEST_PREFIX}{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

const DIGEST_PREFIX: &str = "sha256:";

/// The operator token's digest: of `HOOKLEDGER_API_TOKEN`, or the one stored at first start.
/// A generated token is printed once and stored as its SHA-256 digest only; a database whose
/// setting still holds a token in plaintext (written before digests) has it replaced by its
/// digest at this start (settings are a key-value table, not part of the log).
async fn api_token(ledger: &Arc<Ledger>) -> Result<String> {
    if let Some(token) = std::env::var(API_TOKEN).ok().filter(|t| !t.is_empty()) {
        return Ok(token_digest(&token));
    }
    // Read on a blocking thread: a PostgreSQL reader must not run on a runtime worker.
    let reader = ledger.reader()?;
    let stored = tokio::task::spawn_blocking(move || reader.setting(TOKEN_SETTING))
        .await
        .map_err(invalid)??;
    if let Some(stored) = stored {
        let digest = if stored.starts_with(DIGEST_PREFIX) {
            stored
        } else {
            let digest = token_digest(&stored);
            store_token(ledger, &digest).await?;
            println!("API token: the stored plaintext token was replaced by its digest");
            digest
        };
        println!("API token: the one generated at first start (set {API_TOKEN} to choose one)");
        return Ok(digest);
    }
    let token = format!(
        "hl_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let digest = token_digest(&token);
    store_token(ledger, &digest).await?;
    println!("API token (shown once; set {API_TOKEN} to choose your own): {token}");
    Ok(digest)
}

async fn store_token(ledger: &Arc<Ledger>, digest: &str) -> Result<()> {
    ledger
        .commit(Commit {
            settings: vec![(TOKEN_SETTING.into(), digest.to_owned())],
            ..Commit::default()
        })
        .await?;
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now, and resolves at the first of them. (A
/// handler installed lazily, at the future's first poll, leaves a window in which the default
/// action kills the process.)
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
