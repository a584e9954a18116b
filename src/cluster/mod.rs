//! Several `serve` nodes on one PostgreSQL database: who writes, who attempts what, and who
//! takes over from a node that died.
//!
//! ```text
//!   producers ──► any node ──┐                       ┌──► LISTEN hookledger_commit
//!                            ▼                       │    (+ a poll every second)
//!   node A: writer ── lock ─► catch up ─► check ─► append ─► unlock ─► NOTIFY
//!   node B: writer ── lock ─► (waits for A) ...      │
//!   node A/B lease loop (every second, under the same lock):
//!            heartbeat ─► leases of the 64 webhook partitions ─► abandon what a dead owner left
//! ```
//!
//! **One log, many writers.** Every node keeps the whole projection and registry in memory, as
//! a single node does. A commit takes a PostgreSQL advisory lock (`COMMIT_LOCK`, held by the
//! writer's connection for the commit), reads the heads of the log (one query), folds in
//! whatever other nodes appended since its last commit, and only then checks the batch against
//! the projection and assigns seqs and chain links, exactly as the single writer does. Seqs stay
//! gapless and the chain linear because assignment and append happen under the lock; the
//! primary keys on every seq refuse a second writer that somehow got past it. The transition
//! check therefore sees every node's records: a second `attempted` for a delivery another node
//! is attempting is refused like a local one. A node that does not commit learns of others'
//! commits from `NOTIFY hookledger_commit` (sent in each commit's transaction), with a poll
//! every second as a floor, so any node's projection is at most about a second behind.
//! Costs per commit: lock, heads query, unlock (three round trips), plus reading what others
//! wrote.
//!
//! **Who attempts.** Webhooks fall into [`PARTITIONS`] partitions (the webhook id modulo 64).
//! Each partition is leased to one node for [`LEASE_TTL`] and renewed every
//! [`LEASE_EVERY`]; a live node (heartbeat within [`NODE_TTL`]) aims at its fair share,
//! `ceil(64 / live nodes)`, taking expired or released partitions and releasing the excess that
//! has nothing in an attempt. Re-drive only picks due deliveries of partitions this node holds,
//! and a publish makes its inline first attempt only for them; other nodes' deliveries are
//! only enqueued. The writer fences: under the commit lock it reads which partitions this node
//! holds and refuses an `attempted` record of any other partition (unless the delivery is
//! enqueued in the same commit: a test delivery, which no other node can know of yet), and a
//! `failed` of class `abandoned` there (declaring another node's attempt dead is the owner's
//! decision; a late take-over pass of a partition already handed on is refused). Leases
//! change only under the commit lock too, so a lease cannot move between that check and the
//! append.
//!
//! **Failover.** A node killed with SIGKILL stops renewing: its leases expire after at most
//! [`LEASE_TTL`], the other nodes take its partitions at their next lease round, and for every
//! delivery of a taken partition still `in_attempt` (the dead owner's attempt, cut off) the new
//! owner records `failed` with class `abandoned` and its backoff, then retries it as due
//! work: within `LEASE_TTL + LEASE_EVERY` (about 6 s) of the kill. A node whose lease expired
//! while it was merely slow finds its late outcome refused (the delivery is no longer in that
//! attempt): the receiver may then get the event twice, and the ledger shows why. A node
//! stopped with SIGTERM drains its attempts first, then releases its leases and marks itself
//! stopped, so nothing of it is abandoned.
//!
//! Invariant: a node records `attempted` only for deliveries of partitions it holds at the
//! commit (checked by the writer, under the lock that also guards lease changes), so two live
//! nodes never hold attempts of one delivery at once, and every `in_attempt` delivery has an
//! owner that will finish or abandon it.

pub mod lease;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use uuid::Uuid;

use crate::ids::WebhookId;

/// How many partitions webhooks fall into (a mask of them fits a `u64`).
pub const PARTITIONS: u16 = 64;
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a node renews its leases and heartbeat.
pub const LEASE_EVERY: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this counts as gone when shares are computed.
pub const NODE_TTL: Duration = Duration::from_secs(5);

/// The partition a webhook's deliveries belong to.
pub fn partition_of(webhook: WebhookId) -> u16 {
    (webhook.0.as_u128() % u128::from(PARTITIONS)) as u16
}

/// The bit of `partition` in a mask of partitions.
pub fn bit(partition: u16) -> u64 {
    1u64 << partition
}

/// This node in the cluster: its id and the partitions it holds now, shared by the lease
/// loop (which alone changes them), the writer's fence and the engine's choices.
#[derive(Debug)]
pub struct Membership {
    pub node: Uuid,
    held: AtomicU64,
    /// Partitions taken from another owner (or from nobody) whose cut-off attempts the engine
    /// has not abandoned yet: held, but not attempted here until it has.
    taken: AtomicU64,
    live: AtomicUsize,
}

impl Membership {
    pub fn new(node: Uuid) -> Self {
        Self {
            node,
            held: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            live: AtomicUsize::new(1),
        }
    }

    /// Whether this node attempts `webhook`'s deliveries now: it holds the partition, and what
    /// a previous owner left in an attempt there has been abandoned ([`Self::took_over`]).
    /// Before that, an attempt started here would be taken for the old owner's and abandoned
    /// with them, and its delivery sent twice.
    pub fn owns(&self, webhook: WebhookId) -> bool {
        let b = bit(partition_of(webhook));
        self.held() & b != 0 && self.taken() & b == 0
    }

    /// The partitions held, as a mask.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Live nodes at the last lease round.
    pub fn live_nodes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The lease loop's result: what is held now, and what was taken from another owner.
    /// A partition taken is marked before it shows as held, so no moment lets it be attempted
    /// before its take-over.
    pub fn set(&self, held: u64, taken: u64, live: usize) {
        self.taken.fetch_or(taken, Ordering::AcqRel);
        self.held.store(held, Ordering::Release);
        self.live.store(live, Ordering::Relaxed);
    }

    /// The partitions taken whose cut-off attempts are still to be abandoned.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// What the engine's next take-over pass covers: the partitions marked (all of them are
    /// cleared once it is done), and among them those still held, whose open attempts it
    /// abandons. One marked but no longer held went to another node before the pass: its open
    /// attempts are that node's to abandon.
    pub fn to_take_over(&self) -> (u64, u64) {
        let marked = self.taken();
        (marked, marked & self.held())
    }

    /// The engine abandoned what was left in an attempt in `partitions`: they are attempted
    /// here from now on.
    pub fn took_over(&self, partitions: u64) {
        self.taken.fetch_and(!partitions, Ordering::AcqRel);
    }
}

/// One partition's lease as a lease round reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub partition: u16,
    pub owner: Option<Uuid>,
    /// The lease is still valid (not expired, not released).
    pub valid: bool,
}

/// What a lease round changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeasePlan {
    /// Partitions to hold after the round (renewed or taken), as a mask.
    pub hold: u64,
    /// Among them, those taken from another node (or from nobody).
    pub taken: u64,
    /// Partitions this node releases.
    pub release: u64,
}

/// The pure lease decision: keep what `me` holds up to its fair share among `live` nodes,
/// take expired or released partitions up to it, release the excess that is not `busy`
/// (deliveries of it in an attempt here). A lease of `me` that expired without anyone taking
/// it is still `me`'s (renewed, not taken: its attempts are this node's own). Starts looking
/// for free partitions at an offset given by `me`'s place among the live nodes, so nodes
/// spread over the range.
pub fn plan(me: Uuid, rows: &[LeaseRow], live: &[Uuid], busy: u64) -> LeasePlan {
    let nodes = live.len().max(1);
    let share = usize::from(PARTITIONS).div_ceil(nodes);
    let mut mine: Vec<u16> = rows
        .iter()
        .filter(|r| r.owner == Some(me))
        .map(|r| r.partition)
        .collect();
    let mut release = 0u64;
    // Give back the excess, idle partitions first from the top.
    while mine.len() > share {
        let Some(i) = mine.iter().rposition(|p| busy & bit(*p) == 0) else {
            break;
        };
        release |= bit(mine.remove(i));
    }
    let place = live.iter().position(|n| *n == me).unwrap_or(0);
    let start = (place * usize::from(PARTITIONS) / nodes) as u16;
    let mut taken = 0u64;
    let free: Vec<u16> = (0..PARTITIONS)
        .map(|i| (start + i) % PARTITIONS)
        .filter(|p| {
            rows.iter()
                .any(|r| r.partition == *p && !r.valid && r.owner != Some(me))
        })
        .collect();
    for p in free {
        if mine.len() >= share {
            break;
        }
        mine.push(p);
        taken |= bit(p);
    }
    LeasePlan {
        hold: mine.iter().fold(0, |m, p| m | bit(*p)),
        taken,
        release,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_partition_is_attempted_only_once_its_take_over_is_done() {
        let m = Membership::new(Uuid::from_u128(1));
        let (w3, w4) = (WebhookId(Uuid::from_u128(3)), WebhookId(Uuid::from_u128(4)));
        assert!(!m.owns(w3), "nothing is held before the first round");
        // The first round takes every partition from nobody: what was in an attempt there is
        // a previous run's, to be abandoned before this node sends anything of it.
        m.set(u64::MAX, u64::MAX, 1);
        assert!(!m.owns(w3) && !m.owns(w4));
        m.took_over(bit(partition_of(w3)));
        assert!(m.owns(w3) && !m.owns(w4));
        // A later round that only renews leaves them as they are; one that takes again marks
        // the taken partition until the engine has been through it again.
        m.set(u64::MAX, 0, 1);
        assert!(m.owns(w3));
        m.set(u64::MAX, bit(partition_of(w3)), 2);
        assert!(!m.owns(w3));
        assert_eq!(
            m.taken(),
            u64::MAX,
            "w4's partition is still to be taken over"
        );
    }

    #[test]
    fn a_partition_released_before_its_take_over_is_cleared_not_abandoned() {
        let m = Membership::new(Uuid::from_u128(1));
        let (a, b) = (bit(3), bit(4));
        m.set(a | b, a | b, 1);
        // The next round gives partition 4 to a second node before the engine's pass.
        m.set(a, 0, 2);
        assert_eq!(m.to_take_over(), (a | b, a), "only 3 is abandoned here");
        m.took_over(a | b);
        assert_eq!(m.to_take_over(), (0, 0));
        assert!(m.owns(WebhookId(Uuid::from_u128(3))));
        assert!(!m.owns(WebhookId(Uuid::from_u128(4))));
    }

    fn rows(owner: impl Fn(u16) -> Option<Uuid>) -> Vec<LeaseRow> {
        (0..PARTITIONS)
            .map(|p| LeaseRow {
                partition: p,
                owner: owner(p),
                valid: owner(p).is_some(),
            })
            .collect()
    }

    #[test]
    fn a_lone_node_takes_every_partition() {
        let me = Uuid::from_u128(1);
        let p = plan(me, &rows(|_| None), &[me], 0);
        assert_eq!(p.hold, u64::MAX);
        assert_eq!(p.taken, u64::MAX);
        assert_eq!(p.release, 0);
    }

    #[test]
    fn two_nodes_end_with_half_each_and_the_excess_is_released_when_idle() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // a holds everything; b has just joined.
        let all_a = rows(|_| Some(a));
        let pa = plan(a, &all_a, &[a, b], 0);
        assert_eq!(pa.hold.count_ones(), 32);
        assert_eq!(pa.release.count_ones(), 32);
        assert_eq!(pa.hold & pa.release, 0);
        let after: Vec<LeaseRow> = all_a
            .iter()
            .map(|r| {
                let kept = pa.hold & bit(r.partition) != 0;
                LeaseRow {
                    partition: r.partition,
                    owner: kept.then_some(a),
                    valid: kept,
                }
            })
            .collect();
        let pb = plan(b, &after, &[a, b], 0);
        assert_eq!(pb.hold, pa.release, "b takes exactly what a gave back");
        assert_eq!(pb.taken, pb.hold);
    }

    #[test]
    fn a_busy_partition_is_kept_beyond_the_share() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let busy = u64::MAX; // an attempt in flight in every partition
        let p = plan(a, &rows(|_| Some(a)), &[a, b], busy);
        assert_eq!(p.release, 0);
        assert_eq!(p.hold, u64::MAX);
    }

    #[test]
    fn an_expired_lease_of_mine_is_renewed_not_taken() {
        let a = Uuid::from_u128(1);
        let r: Vec<LeaseRow> = (0..PARTITIONS)
            .map(|p| LeaseRow {
                partition: p,
                owner: Some(a),
                valid: p != 5,
            })
            .collect();
        let p = plan(a, &r, &[a], 0);
        assert_eq!(p.hold, u64::MAX);
        assert_eq!(p.taken, 0, "its own attempts are not abandoned");
    }

    #[test]
    fn a_dead_nodes_partitions_are_taken() {
        let (a, dead) = (Uuid::from_u128(1), Uuid::from_u128(9));
        // a holds the even partitions; the dead node's odd ones expired.
        let r: Vec<LeaseRow> = (0..PARTITIONS)
            .map(|p| LeaseRow {
                partition: p,
                owner: Some(if p % 2 == 0 { a } else { dead }),
                valid: p % 2 == 0,
            })
            .collect();
        let p = plan(a, &r, &[a], 0);
        assert_eq!(p.hold, u64::MAX);
        assert_eq!(p.taken.count_ones(), 32);
        assert!(p.taken & bit(1) != 0 && p.taken & bit(0) == 0);
    }

    #[test]
    fn partitions_spread_webhook_ids() {
        let mut seen = 0u64;
        for i in 0..1000u128 {
            seen |= bit(partition_of(WebhookId(Uuid::from_u128(i * 7919))));
        }
        assert_eq!(seen, u64::MAX);
    }
}
