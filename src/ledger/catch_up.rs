//! The writer on a store that several nodes write (PostgreSQL, see `crate::cluster`): every
//! batch is processed under the store's commit lock, after folding in what the other writers
//! appended since this one last looked, and with the fence that keeps attempts to the
//! partitions this node leases.
//!
//! Invariant: between [`Store::lock_commits`] and the end of the batch, nothing but this
//! writer appends, and the projection, registry and chain heads it checks and links against
//! include every record, change, event and expunge committed before it took the lock; so the
//! seqs stay gapless, the chains linear, and the transition check sees every node's records.

use super::record::{ErrorClass, RecordBody};
use super::writer::{Commit, Receipt, Request, Writer};
use super::{chain, expunge};
use crate::error::{LedgerError, Result};

impl Writer {
    /// Processes `requests` under the commit lock when the store has several writers, else as
    /// the single writer does.
    pub(super) fn process_shared(&mut self, requests: Vec<Request>) {
        if let Err(reason) = self.ensure_open() {
            super::reopen::refuse(requests, &reason);
            return;
        }
        if requests.iter().all(|r| is_sync(&r.commit)) {
            // Only wake-ups (the commit listener, `Ledger::sync`): read, no lock.
            let result = self.catch_up();
            for r in requests {
                let _ = r.reply.send(match &result {
                    Ok(()) => Ok(self.empty_receipt()),
                    Err(e) => Err(LedgerError::StorageUnavailable {
                        reason: e.to_string(),
                    }),
                });
            }
            return;
        }
        let locked = match self.store.lock_commits() {
            Ok(locked) => locked,
            Err(e) => return self.fail(requests, e),
        };
        if !locked {
            return self.process(requests);
        }
        let requests = match self.catch_up() {
            Ok(()) => self.fence(requests),
            Err(e) => {
                let _ = self.store.unlock_commits();
                return self.fail(requests, e);
            }
        };
        if !requests.is_empty() {
            self.process(requests);
        }
        if let Err(e) = self.store.unlock_commits() {
            // The lock went with a broken connection; the next commit takes a fresh one.
            tracing::warn!(error = %e, "could not release the commit lock");
        }
    }

    /// Folds in what other writers committed since this one last did, and moves the chain
    /// heads to theirs. A store with one writer has nothing to catch up.
    pub(super) fn catch_up(&mut self) -> Result<()> {
        let Some(heads) = self.store.heads()? else {
            return Ok(());
        };
        let seq = self.shared.read_projection().last_seq();
        let mut moved = false;
        if heads.records > seq {
            let mut records = Vec::new();
            self.store
                .scan_records(seq + 1, heads.records, &mut |row| {
                    records.push(row.into_record()?);
                    Ok(())
                })?;
            let mut projection = self.shared.write_projection();
            for r in &records {
                // Another node checked these against the same log; a record that does not
                // apply here means the log was changed behind the writers' backs.
                projection.apply(r)?;
            }
            drop(projection);
            self.last_link = self
                .store
                .last_link(seq)?
                .map_or_else(chain::genesis, |(l, _)| l.hash);
            moved = true;
        }
        let change_seq = self.shared.read_registry().last_seq();
        if heads.changes > change_seq {
            let rows = self.store.changes_after(change_seq)?;
            let mut registry = self.shared.write_registry();
            for row in rows {
                let hash = row.hash;
                registry.apply(&row.into_change()?)?;
                self.last_change_hash = hash;
            }
            moved = true;
        }
        if heads.events > self.last_event.0 {
            self.last_event = self
                .store
                .last_event()?
                .unwrap_or((0, chain::event_genesis()));
        }
        if heads.expunges > self.last_expunge.0 {
            self.last_expunge = self
                .store
                .last_expunge()?
                .unwrap_or((0, expunge::genesis()));
        }
        if moved {
            let last = self.shared.read_projection().last_seq();
            self.shared.notify(Some(last));
        }
        Ok(())
    }

    /// Refuses the requests that would start an attempt of a delivery in a partition this node
    /// does not lease now, or declare one abandoned there (see `crate::cluster`); a delivery
    /// enqueued in the same commit (a test delivery, a publish's inline attempt) is this node's
    /// to start. Other outcomes pass: a node whose lease moved away while its request was on
    /// the wire still records what the receiver answered.
    fn fence(&mut self, requests: Vec<Request>) -> Vec<Request> {
        let Some(node) = self.shared.cluster().map(|m| m.node) else {
            return requests;
        };
        let starts = |c: &Commit| c.records.iter().any(|r| owner_only(&r.body));
        if !requests.iter().any(|r| starts(&r.commit)) {
            return requests;
        }
        let held = match self.store.leased_partitions(node) {
            Ok(held) => held.unwrap_or(u64::MAX),
            Err(e) => {
                let (refused, rest): (Vec<_>, Vec<_>) =
                    requests.into_iter().partition(|r| starts(&r.commit));
                self.fail(refused, e);
                return rest;
            }
        };
        let mut kept = Vec::with_capacity(requests.len());
        for r in requests {
            match foreign_start(&r.commit, held) {
                None => kept.push(r),
                Some(webhook) => {
                    let _ = r.reply.send(Err(LedgerError::NotLeased { webhook }));
                }
            }
        }
        kept
    }

    fn empty_receipt(&self) -> Receipt {
        Receipt {
            seqs: Vec::new(),
            parked: Vec::new(),
            change_seqs: Vec::new(),
            expunges: Vec::new(),
            recorded_at: self.now(),
        }
    }
}

/// A commit that asks for nothing but a catch-up.
pub(super) fn is_sync(c: &Commit) -> bool {
    c.events.is_empty()
        && c.records.is_empty()
        && c.changes.is_empty()
        && c.park.is_none()
        && c.settings.is_empty()
        && c.expunge.is_empty()
}

/// A record only the node leasing the delivery's partition may append: an `attempted`, or a
/// `failed` of class `abandoned` (the decision that another node's attempt is dead).
fn owner_only(body: &RecordBody) -> bool {
    match body {
        RecordBody::Attempted { .. } => true,
        RecordBody::Failed(f) => f.error_class == ErrorClass::Abandoned,
        _ => false,
    }
}

/// The webhook of the first owner-only record ([`owner_only`]) in `commit` outside the
/// partitions in `held` whose delivery is not enqueued in the same commit.
fn foreign_start(commit: &Commit, held: u64) -> Option<crate::ids::WebhookId> {
    commit.records.iter().find_map(|r| {
        if !owner_only(&r.body) {
            return None;
        }
        let fresh = commit
            .records
            .iter()
            .any(|e| e.key == r.key && matches!(e.body, RecordBody::Enqueued { .. }));
        let leased = held & crate::cluster::bit(crate::cluster::partition_of(r.key.webhook_id));
        (!fresh && leased == 0).then_some(r.key.webhook_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeliveryKey, EventId, WebhookId};
    use crate::ledger::record::NewRecord;
    use uuid::Uuid;

    fn key(webhook: u128) -> DeliveryKey {
        DeliveryKey::new(
            WebhookId(Uuid::from_u128(webhook)),
            EventId(Uuid::from_u128(7)),
        )
    }

    #[test]
    fn an_attempt_or_abandon_outside_the_leased_partitions_is_foreign_unless_enqueued_with_it() {
        let (ours, theirs) = (key(64 * 3 + 1), key(64 * 5 + 2)); // partitions 1 and 2
        let held = crate::cluster::bit(1);
        let attempt = |k| NewRecord::new(k, RecordBody::Attempted { attempt: 1 });
        let enqueue = |k| {
            NewRecord::new(
                k,
                RecordBody::Enqueued {
                    due_at: chrono::Utc::now(),
                },
            )
        };
        let commit = |records| Commit {
            records,
            ..Commit::default()
        };
        assert_eq!(foreign_start(&commit(vec![attempt(ours)]), held), None);
        assert_eq!(
            foreign_start(&commit(vec![attempt(ours), attempt(theirs)]), held),
            Some(theirs.webhook_id)
        );
        assert_eq!(
            foreign_start(&commit(vec![enqueue(theirs), attempt(theirs)]), held),
            None
        );
        // Declaring an attempt abandoned is the owner's decision too; another outcome is not.
        let failed = |k, class| {
            NewRecord::new(
                k,
                RecordBody::Failed(crate::ledger::record::Failure {
                    attempt: 1,
                    status: None,
                    error_class: class,
                    error: "cut off".into(),
                    duration_ms: 0,
                    next_due_at: chrono::Utc::now(),
                    response_body: None,
                }),
            )
        };
        assert_eq!(
            foreign_start(&commit(vec![failed(ours, ErrorClass::Abandoned)]), held),
            None
        );
        assert_eq!(
            foreign_start(&commit(vec![failed(theirs, ErrorClass::Abandoned)]), held),
            Some(theirs.webhook_id)
        );
        assert_eq!(
            foreign_start(&commit(vec![failed(theirs, ErrorClass::Timeout)]), held),
            None
        );
        assert!(is_sync(&Commit::default()));
        assert!(!is_sync(&commit(vec![attempt(ours)])));
    }
}
