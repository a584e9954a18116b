//! What several nodes on one database need from PostgreSQL (the design is `crate::cluster`):
//! the commit lock, the heads of the log for catching up, the node and lease tables, and the
//! commit notifications.
//!
//! Invariant: `partition_leases` changes only inside a transaction that holds the commit lock
//! (`pg_advisory_xact_lock(COMMIT_LOCK)`), and the writer holds the same lock from before it
//! reads the leases it fences with until its commit is done.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use uuid::Uuid;

use super::{Held, PgStore};
use crate::cluster::{self, LeasePlan, LeaseRow};
use crate::error::{LedgerError, Result};
use crate::store::Heads;

/// The advisory lock every commit holds: this class ("hlcm") and the hash of the schema the
/// ledger is in, so that ledgers in different schemas of one database do not wait on each
/// other.
pub const COMMIT_LOCK: i32 = 0x686c_636d;
/// The channel each commit notifies, with its last record seq.
pub const CHANNEL: &str = "hookledger_commit";

pub(super) fn lock(h: &mut Held) -> Result<()> {
    h.client.execute(
        "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
        &[&COMMIT_LOCK],
    )?;
    Ok(())
}

pub(super) fn unlock(h: &mut Held) -> Result<()> {
    h.client.execute(
        "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
        &[&COMMIT_LOCK],
    )?;
    Ok(())
}

pub(super) fn heads(h: &mut Held) -> Result<Heads> {
    let stmt = h.prepared(
        "SELECT (SELECT coalesce(max(seq), 0) FROM webhook_deliveries), \
                (SELECT coalesce(max(seq), 0) FROM webhook_changes), \
                (SELECT coalesce(max(seq), 0) FROM events), \
                (SELECT coalesce(max(seq), 0) FROM event_expunges)",
    )?;
    let r = h.client.query_one(&stmt, &[])?;
    let at = |i: usize| -> Result<u64> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
    Ok(Heads {
        records: at(0)?,
        changes: at(1)?,
        events: at(2)?,
        expunges: at(3)?,
    })
}

/// The partitions leased to `node` and valid now, as a mask.
pub(super) fn leased(h: &mut Held, node: Uuid) -> Result<u64> {
    let stmt = h.prepared(
        "SELECT partition FROM partition_leases WHERE node_id = $1 AND expires_at > now()",
    )?;
    let mut mask = 0;
    for r in h.client.query(&stmt, &[&node])? {
        let p: i32 = r.try_get(0)?;
        if (0..i32::from(cluster::PARTITIONS)).contains(&p) {
            mask |= cluster::bit(p as u16);
        }
    }
    Ok(mask)
}

/// One lease round's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub held: u64,
    pub taken: u64,
    pub live: usize,
}

impl PgStore {
    /// Records this node as started (its heartbeat begins now).
    pub fn join_cluster(&self, node: Uuid, host: &str) -> Result<()> {
        self.with(|h| {
            h.client.execute(
                "INSERT INTO cluster_nodes (node_id, started_at, heartbeat_at, host) \
                 VALUES ($1, now(), now(), $2)",
                &[&node, &host],
            )?;
            Ok(())
        })
    }

    /// Beats, then renews, takes and releases leases under the commit lock ([`cluster::plan`]);
    /// `busy` is the mask of partitions with a delivery in an attempt on this node.
    pub fn lease_round(&self, node: Uuid, busy: impl Fn() -> u64) -> Result<Round> {
        let ttl_ms = cluster::LEASE_TTL.as_millis() as f64;
        let node_ttl_ms = cluster::NODE_TTL.as_millis() as f64;
        self.with(|h| {
            h.client.execute(
                "UPDATE cluster_nodes SET heartbeat_at = now() WHERE node_id = $1",
                &[&node],
            )?;
            let live: Vec<Uuid> = h
                .client
                .query(
                    "SELECT node_id FROM cluster_nodes WHERE stopped_at IS NULL \
                     AND heartbeat_at > now() - $1 * interval '1 millisecond' ORDER BY node_id",
                    &[&node_ttl_ms],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            let mut tx = h.client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
                &[&COMMIT_LOCK],
            )?;
            let rows: Vec<LeaseRow> = tx
                .query(
                    "SELECT partition, node_id, node_id IS NOT NULL AND expires_at > now() \
                     FROM partition_leases ORDER BY partition",
                    &[],
                )?
                .iter()
                .map(|r| {
                    Ok(LeaseRow {
                        partition: r.try_get::<_, i32>(0)?.clamp(0, 63) as u16,
                        owner: r.try_get(1)?,
                        valid: r.try_get(2)?,
                    })
                })
                .collect::<std::result::Result<_, postgres::Error>>()?;
            let LeasePlan {
                hold,
                taken,
                release,
            } = cluster::plan(node, &rows, &live, busy());
            tx.execute(
                "UPDATE partition_leases SET \
                   epoch = epoch + CASE WHEN node_id IS DISTINCT FROM $1 THEN 1 ELSE 0 END, \
                   node_id = $1, expires_at = now() + $2 * interval '1 millisecond' \
                 WHERE partition = ANY($3)",
                &[&node, &ttl_ms, &partitions(hold)],
            )?;
            tx.execute(
                "UPDATE partition_leases SET node_id = NULL, expires_at = '-infinity', \
                   epoch = epoch + 1 WHERE partition = ANY($2) AND node_id = $1",
                &[&node, &partitions(release)],
            )?;
            tx.commit()?;
            Ok(Round {
                held: hold,
                taken,
                live: live.len().max(1),
            })
        })
    }

    /// A graceful stop: every lease of `node` released and the node marked stopped, so the
    /// others take its partitions at their next round.
    pub fn leave_cluster(&self, node: Uuid) -> Result<()> {
        self.with(|h| {
            let mut tx = h.client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
                &[&COMMIT_LOCK],
            )?;
            tx.execute(
                "UPDATE partition_leases SET node_id = NULL, expires_at = '-infinity', \
                   epoch = epoch + 1 WHERE node_id = $1",
                &[&node],
            )?;
            tx.execute(
                "UPDATE cluster_nodes SET stopped_at = now() WHERE node_id = $1",
                &[&node],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Listens for commits and calls `on_commit` with the highest seq notified, or with
    /// `None` after `idle` without a notification, until `stop` says so. Returns an error when
    /// the connection fails (the caller listens again).
    pub fn listen_commits(
        &self,
        idle: Duration,
        stop: &dyn Fn() -> bool,
        on_commit: &mut dyn FnMut(Option<u64>),
    ) -> Result<()> {
        self.with(|h| {
            h.client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            while !stop() {
                let first = h.client.notifications().timeout_iter(idle).next()?;
                let mut seq = first.as_ref().and_then(|n| n.payload().parse::<u64>().ok());
                if first.is_some() {
                    // One wake-up for everything that arrived together.
                    let mut pending = h.client.notifications();
                    let mut more = pending.iter();
                    while let Some(n) = more.next()? {
                        seq = seq.max(n.payload().parse().ok());
                    }
                }
                on_commit(seq);
            }
            Ok(())
        })
        .map_err(|e| match e {
            LedgerError::Pg(pg) => LedgerError::StorageUnavailable {
                reason: format!("PostgreSQL: {pg}"),
            },
            other => other,
        })
    }
}

/// The partitions of a mask, as PostgreSQL integers.
fn partitions(mask: u64) -> Vec<i32> {
    (0..cluster::PARTITIONS)
        .filter(|p| mask & cluster::bit(*p) != 0)
        .map(i32::from)
        .collect()
}
