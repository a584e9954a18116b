//! The commit listener of a ledger that several nodes write (PostgreSQL, `crate::cluster`): a
//! thread that LISTENs for other writers' commits and asks this node's writer to catch up, so
//! that the projection follows the shared log even while this node commits nothing. It also
//! wakes the writer once a second without a notification, a floor for a notification lost
//! with a connection.
//!
//! Invariant: the listener never changes state itself; it only sends the writer empty
//! commits, which the writer answers by folding in what is new (`catch_up.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::writer::{Commit, Request};
use super::Shared;
use crate::error::{LedgerError, Result};
use crate::store::pg::PgStore;

/// How long the listener waits for a notification before it asks for a catch-up anyway.
const IDLE: Duration = Duration::from_secs(1);

pub(super) struct Listener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    pub(super) fn spawn(
        store: PgStore,
        shared: Arc<Shared>,
        writer: Sender<Request>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("hookledger-listen".into())
            .spawn(move || run(&store, &shared, &writer, &stopping))
            .map_err(|e| LedgerError::Invalid(format!("cannot start the commit listener: {e}")))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread (within [`IDLE`]) and waits for it.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(store: &PgStore, shared: &Shared, writer: &Sender<Request>, stop: &AtomicBool) {
    let stopped = || stop.load(Ordering::Relaxed);
    while !stopped() {
        let mut wake = |seq: Option<u64>| {
            // Our own commits notify us too: only what is ahead of the projection matters.
            if seq.is_some_and(|s| s <= shared.read_projection().last_seq()) {
                return;
            }
            let (reply, _ignored) = oneshot::channel();
            let _ = writer.send(Request {
                commit: Commit::default(),
                reply,
            });
        };
        if let Err(e) = store.listen_commits(IDLE, &stopped, &mut wake) {
            tracing::warn!(error = %e, "commit listener lost its connection; listening again");
            std::thread::sleep(IDLE);
        }
    }
}
