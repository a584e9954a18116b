//! Erasure: removing one event's body now (`DELETE /v1/events/{id}/body`, `hookledger
//! expunge`) or by the retention policy (`crate::retention`), as an immutable, chained fact.
//!
//! Where the fact lives (the decision): a table of its own, `event_expunges`, appended by the
//! writer in the same [`crate::store::CommitBatch`] (one transaction) that removes the body and parks the
//! event's pending deliveries. Each row says which event, its seq and chain hash, the digest of
//! the removed body, who asked (`operator`, or the policy, e.g. `policy:body_retention=30d`),
//! when and why, and is chained to the previous one by
//! `SHA-256("hookledger/expunge/v1" ‖ previous hash ‖ the row's fields)` from
//! [`genesis`]. Not a record kind of `webhook_deliveries`: a fact about an event, not about
//! one delivery (an event may have none), and the delivery state machine stays as it is. The
//! deliveries still pending get a `parked` record with the reason [`PARK_REASON`], which is in
//! their trail; `GET /v1/events/{id}/body` and the view `body_expunges` show the fact itself.
//!
//! What `verify` checks: the facts' chain; that every event without a body has a fact and
//! every fact's event has no body. Events of link version 3 (every event stored since schema
//! 5) are chained over SHA-256 of their body (the `body_digest` column,
//! [`crate::ledger::chain::event_link`]): after an expunge the link still checks, and a body
//! still present must match its digest, so a changed body fails. Events stored before keep the
//! link they were written with (over the bytes), so old files verify unchanged; an old event
//! whose body is expunged can no longer have its link recomputed: `verify` then requires a fact
//! that names the event's stored chain hash and continues the chain through it. For such an
//! event the type and publish time lose their own check (they were hashed with the bytes);
//! everything after it is still covered, since the next link chains over that hash.
//!
//! Invariant: a body is removed only together with its fact, in one transaction, never twice;
//! a body whose stored digest does not match is refused (expunging it would hide a tamper).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::chain::{body_digest, Hash};
use super::projection::Live;
use super::record::{NewRecord, RecordBody, Timestamp};
use super::verify::{Log, Problem};
use super::writer::{Request, Writer};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId};
use crate::store::Store;

/// The reason of the `parked` record a pending delivery gets when its event's body goes.
pub const PARK_REASON: &str = "body_expunged";

/// The actor of an expunge asked for through the API or the command line.
pub const OPERATOR: &str = "operator";

/// One body to remove, as a caller asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpungeOrder {
    pub event_id: EventId,
    /// Who or which policy (`operator`, `policy:body_retention=30d`).
    pub actor: String,
    pub reason: String,
}

/// One row of `event_expunges`: the chained fact of one removed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredExpunge {
    /// Gapless from 1, in the order the facts were committed.
    pub seq: u64,
    /// When it was committed, µs since the epoch.
    pub recorded_at_us: i64,
    pub event_id: EventId,
    pub event_seq: u64,
    /// The event's chain hash (what `verify` continues through).
    pub event_hash: Hash,
    /// SHA-256 of the removed body.
    pub body_digest: Hash,
    /// The event's link version (1, 2: over the bytes; 3: over the digest).
    pub link_version: u8,
    pub actor: String,
    pub reason: String,
    pub hash: Hash,
}

/// The value the first fact chains to.
pub fn genesis() -> Hash {
    Sha256::digest(b"hookledger/expunge-genesis").into()
}

impl StoredExpunge {
    /// The fact's chain hash, given the previous fact's.
    pub fn link(&self, prev: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(b"hookledger/expunge/v1");
        h.update(prev);
        h.update(self.seq.to_be_bytes());
        h.update(self.recorded_at_us.to_be_bytes());
        h.update(self.event_id.0.as_bytes());
        h.update(self.event_seq.to_be_bytes());
        h.update(self.event_hash);
        h.update(self.body_digest);
        h.update([self.link_version]);
        for s in [&self.actor, &self.reason] {
            h.update((s.len() as u32).to_be_bytes());
            h.update(s.as_bytes());
        }
        h.finalize().into()
    }
}

/// The link version of a stored event.
pub fn link_version(e: &crate::store::StoredEvent) -> u8 {
    match (e.body_digest.is_some(), e.format.is_some()) {
        (true, _) => 3,
        (false, true) => 2,
        (false, false) => 1,
    }
}

impl Writer {
    /// Commits one request that carries expunge orders, alone in its transaction: the facts,
    /// the bodies' removal and a `parked` record for each delivery of those events still
    /// pending. Refused whole (nothing written) if an event is unknown, already expunged or
    /// its body no longer matches its digest.
    pub(super) fn expunge(&mut self, mut request: Request) {
        let now = self.now();
        let rows = match self.plan_expunge(&mut request, now) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = request.reply.send(Err(e));
                return;
            }
        };
        let (staged, _) = self.stage(vec![request], None, &HashMap::new());
        if staged.is_empty() {
            return;
        }
        let (mut batch, records, changes) = self.build(&staged, now);
        batch.expunges = rows;
        match self.commit_timed(&batch) {
            Ok(()) => {
                if let Some(last) = batch.expunges.last() {
                    self.last_expunge = (last.seq, last.hash);
                }
                self.acknowledge(staged, &batch, &records, &changes, now);
            }
            Err(e) => self.fail(staged.into_iter().map(|s| s.request), e),
        }
    }

    /// Answers `BodyExpunged` to every request that requeues a delivery of an event whose body
    /// is gone (it can never be sent again), and keeps the others. Asked of the store only for
    /// batches with requeues; when the store cannot answer, those requests are refused.
    pub(super) fn refuse_expunged(&mut self, requests: Vec<Request>) -> Vec<Request> {
        let requeued = |r: &Request| -> Vec<EventId> {
            r.commit
                .records
                .iter()
                .filter(|n| matches!(n.body, RecordBody::Requeued { .. }))
                .map(|n| n.key.event_id)
                .collect()
        };
        let mut ids: Vec<EventId> = requests.iter().flat_map(requeued).collect();
        if ids.is_empty() {
            return requests;
        }
        ids.sort_unstable();
        ids.dedup();
        let gone: HashSet<EventId> = match self.store.events(&ids) {
            Ok(events) => events
                .into_iter()
                .filter(|e| e.expunged)
                .map(|e| e.event_id)
                .collect(),
            Err(e) => {
                let (refused, rest): (Vec<_>, Vec<_>) =
                    requests.into_iter().partition(|r| !requeued(r).is_empty());
                self.fail(refused, e);
                return rest;
            }
        };
        let mut kept = Vec::new();
        for r in requests {
            match requeued(&r).into_iter().find(|id| gone.contains(id)) {
                Some(id) => {
                    let _ = r.reply.send(Err(LedgerError::BodyExpunged(id)));
                }
                None => kept.push(r),
            }
        }
        kept
    }

    /// The facts of `request`'s orders, chained after the last stored one; adds the `parked`
    /// records of the events' pending deliveries to its commit.
    fn plan_expunge(
        &mut self,
        request: &mut Request,
        now: Timestamp,
    ) -> Result<Vec<StoredExpunge>> {
        let orders = std::mem::take(&mut request.commit.expunge);
        let mut seen = HashSet::new();
        let ids: Vec<EventId> = orders
            .iter()
            .map(|o| o.event_id)
            .filter(|id| seen.insert(*id))
            .collect();
        let stored: HashMap<EventId, crate::store::StoredEvent> = self
            .store
            .events(&ids)?
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect();
        let (mut seq, mut prev) = self.last_expunge;
        let mut rows = Vec::new();
        let mut done = HashSet::new();
        for order in orders {
            if !done.insert(order.event_id) {
                continue;
            }
            let e = stored
                .get(&order.event_id)
                .ok_or(LedgerError::UnknownEvent(order.event_id))?;
            if e.expunged {
                return Err(LedgerError::BodyExpunged(order.event_id));
            }
            let digest = body_digest(&e.body);
            if e.body_digest.is_some_and(|d| d != digest) {
                return Err(LedgerError::Invalid(format!(
                    "the body of event {} no longer matches its digest; run verify (nothing was expunged)",
                    order.event_id
                )));
            }
            for webhook in self.store.enqueued_webhooks(order.event_id)? {
                let key = DeliveryKey::new(webhook, order.event_id);
                let pending = matches!(
                    self.shared.read_projection().get(&key),
                    Some(Live::Pending { .. })
                );
                if pending {
                    let body = RecordBody::Parked {
                        reason: PARK_REASON.to_owned(),
                    };
                    request.commit.records.push(NewRecord::new(key, body));
                }
            }
            seq += 1;
            let mut row = StoredExpunge {
                seq,
                recorded_at_us: now.timestamp_micros(),
                event_id: order.event_id,
                event_seq: e.seq,
                event_hash: e.hash,
                body_digest: digest,
                link_version: link_version(e),
                actor: order.actor,
                reason: order.reason,
                hash: [0; 32],
            };
            row.hash = row.link(&prev);
            prev = row.hash;
            rows.push(row);
        }
        Ok(rows)
    }
}

/// The ids of the expunged events among `events`.
pub fn expunged_among(events: Vec<crate::store::StoredEvent>) -> HashSet<EventId> {
    events
        .into_iter()
        .filter(|e| e.expunged)
        .map(|e| e.event_id)
        .collect()
}

/// `verify`'s walk of the facts: their seqs and chain; then every event without a body must
/// have a fact and every fact's event no body. Answers the chain hashes the facts name for
/// events of link version 1 or 2 (whose links can no longer be recomputed), by event.
pub(super) fn verify_facts(store: &dyn Store) -> Result<(HashMap<EventId, Hash>, Option<Problem>)> {
    let mut prev = genesis();
    let mut count = 0u64;
    let mut old_links = HashMap::new();
    let mut problem = None;
    let scanned = store.scan_expunges(&mut |x| {
        let expected = count + 1;
        let reason = if x.seq != expected {
            Some(format!("expunge fact {expected} is missing"))
        } else if x.link(&prev) != x.hash {
            Some(format!(
                "hash mismatch for the expunge fact of event {} (a field changed)",
                x.event_id
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            problem = Some(Problem {
                log: Log::Expunges,
                seq: expected,
                reason,
            });
            return Err(LedgerError::Invalid("verification stopped".into()));
        }
        if x.link_version < 3 {
            old_links.insert(x.event_id, x.event_hash);
        }
        prev = x.hash;
        count += 1;
        Ok(())
    });
    match (scanned, problem) {
        (_, Some(p)) => return Ok((old_links, Some(p))),
        (Err(e), None) => return Err(e),
        (Ok(()), None) => {}
    }
    let unrecorded = store.first_unrecorded_expunge()?.map(|seq| Problem {
        log: Log::Events,
        seq,
        reason: "the event's body is missing without an expunge fact, or a fact names it while \
                 its body is there"
            .into(),
    });
    Ok((old_links, unrecorded))
}

/// Checks one event's link (and its body against its digest, when it has both); `None` when
/// it holds. An expunged event of link version 1 or 2 holds when a fact names its hash.
pub(super) fn check_event(
    prev: &Hash,
    e: &crate::store::StoredEvent,
    old_links: &HashMap<EventId, Hash>,
) -> Option<String> {
    if e.expunged && e.body_digest.is_none() {
        return (old_links.get(&e.event_id) != Some(&e.hash)).then(|| {
            format!(
                "event {} has no body and no expunge fact names its chain hash",
                e.event_id
            )
        });
    }
    if super::chain::event_link(prev, e) != e.hash {
        return Some(format!(
            "hash mismatch for event {} (its body or fields changed)",
            e.event_id
        ));
    }
    match e.body_digest {
        Some(d) if !e.expunged && body_digest(&e.body) != d => Some(format!(
            "the body of event {} does not match its digest (it changed)",
            e.event_id
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact() -> StoredExpunge {
        StoredExpunge {
            seq: 1,
            recorded_at_us: 1_700_000_000_000_000,
            event_id: EventId(uuid::Uuid::from_u128(7)),
            event_seq: 3,
            event_hash: [1; 32],
            body_digest: [2; 32],
            link_version: 3,
            actor: OPERATOR.into(),
            reason: "gdpr".into(),
            hash: [0; 32],
        }
    }

    #[test]
    fn the_fact_hash_covers_every_field_and_the_previous_fact() {
        let f = fact();
        let h = f.link(&genesis());
        assert_ne!(h, f.link(&[0; 32]), "previous");
        let changed: Vec<StoredExpunge> = vec![
            StoredExpunge { seq: 2, ..fact() },
            StoredExpunge {
                recorded_at_us: 1,
                ..fact()
            },
            StoredExpunge {
                event_seq: 4,
                ..fact()
            },
            StoredExpunge {
                event_hash: [9; 32],
                ..fact()
            },
            StoredExpunge {
                body_digest: [9; 32],
                ..fact()
            },
            StoredExpunge {
                link_version: 2,
                ..fact()
            },
            StoredExpunge {
                actor: "policy".into(),
                ..fact()
            },
            StoredExpunge {
                reason: "gdpr!".into(),
                ..fact()
            },
        ];
        for c in changed {
            assert_ne!(h, c.link(&genesis()), "{c:?}");
        }
    }
}
