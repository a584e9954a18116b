//! The lease loop: a thread that, every [`LEASE_EVERY`], beats this node's heartbeat and
//! renews, takes or releases partition leases ([`super::plan`], applied by
//! [`PgStore::lease_round`] under the commit lock), then publishes the result to the
//! [`Membership`] the writer fences with and the engine chooses by. At a graceful stop it
//! releases every lease and marks the node stopped.
//!
//! Invariant: the membership is only ever set from a committed lease round, so the engine
//! never believes it holds a partition the database does not give it (it may believe so for
//! less than a round after a lease expired; the writer's fence is the authority).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{bit, partition_of, Membership, LEASE_EVERY};
use crate::error::{LedgerError, Result};
use crate::ledger::projection::Live;
use crate::ledger::Shared;
use crate::store::pg::PgStore;

pub struct LeaseLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    store: PgStore,
    node: uuid::Uuid,
}

impl LeaseLoop {
    /// Joins the cluster (a `cluster_nodes` row), runs a first round before it returns (so
    /// the node starts with its share), then keeps renewing. `changed` is called after every
    /// round that took or released a partition (the engine looks at its due work again).
    pub fn start(
        store: PgStore,
        shared: Arc<Shared>,
        membership: Arc<Membership>,
        changed: Box<dyn Fn() + Send>,
    ) -> Result<Self> {
        let node = membership.node;
        let host = format!(
            "{} pid {}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        store.join_cluster(node, &host)?;
        round(&store, &shared, &membership)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, looping) = (stop.clone(), store.reader()?);
        let handle = std::thread::Builder::new()
            .name("hookledger-lease".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(LEASE_EVERY);
                    let before = membership.held();
                    match round(&looping, &shared, &membership) {
                        Ok(()) if membership.held() != before => changed(),
                        Ok(()) => {}
                        Err(e) => tracing::warn!(error = %e, "lease round failed"),
                    }
                }
            })
            .map_err(|e| LedgerError::Invalid(format!("cannot start the lease loop: {e}")))?;
        Ok(Self {
            stop,
            handle: Some(handle),
            store,
            node,
        })
    }

    /// Stops renewing, releases every lease and marks the node stopped (call it once the
    /// engine has drained its attempts, so that nothing of them is abandoned).
    pub fn leave(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.store.leave_cluster(self.node)
    }
}

fn round(store: &PgStore, shared: &Shared, membership: &Membership) -> Result<()> {
    let busy = || {
        shared
            .read_projection()
            .live_rows()
            .into_iter()
            .filter(|(_, l)| matches!(l, Live::InAttempt { .. }))
            .fold(0, |m, (k, _)| m | bit(partition_of(k.webhook_id)))
    };
    let r = store.lease_round(membership.node, busy)?;
    membership.set(r.held, r.taken, r.live);
    Ok(())
}
