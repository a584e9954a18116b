//! What the writer checks before it writes: each request of a batch, in arrival order, against
//! the projection plus what the requests before it staged. Pure: the stored facts a check needs
//! (the batch's stored events, the terminal states of the deliveries it requeues) are read by
//! the writer and passed in; nothing here touches the store.
//!
//! A refused request is answered at once and leaves no trace in the batch: no record, no
//! registry change, no parked delivery of it is written.

use std::collections::{HashMap, HashSet};

use super::projection::{Projection, Staging};
use super::record::{NewRecord, RecordBody, Terminal, Timestamp};
use super::writer::{Commit, Request};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId};
use crate::registry::{ChangeRecord, Registry};
use crate::store::StoredEvent;

/// A commit that passed its checks, with what the writer added to it.
pub(super) struct Staged {
    pub request: Request,
    pub records: Vec<NewRecord>,
    pub parked: Vec<DeliveryKey>,
}

/// Checks every request in arrival order against the projection plus what earlier requests of
/// the batch staged. A refused request is answered at once and leaves no trace in the batch;
/// without `existing` (the stored events, not looked up), a refused request that carries events
/// is returned unanswered instead, for a check against the stored events.
pub(super) fn stage_all(
    requests: Vec<Request>,
    projection: &Projection,
    registry: &Registry,
    existing: Option<&[StoredEvent]>,
    finished: &HashMap<DeliveryKey, Terminal>,
) -> (Vec<Staged>, Vec<Request>) {
    let mut staged: Vec<Staged> = Vec::new();
    let mut deferred = Vec::new();
    let mut staging = Staging::new(projection, finished);
    let mut registry = registry.clone();
    let stored = existing.unwrap_or_default();
    let mut seen_events: HashSet<EventId> = stored.iter().map(|e| e.event_id).collect();
    for request in requests {
        let checked = check_events(&request.commit, stored, &seen_events)
            .and_then(|()| stage_one(&request.commit, &mut staging, &mut registry));
        match checked {
            Ok((records, parked)) => {
                seen_events.extend(request.commit.events.iter().map(|e| e.event_id));
                staged.push(Staged {
                    request,
                    records,
                    parked,
                });
            }
            Err(e) => {
                if existing.is_none() && !request.commit.events.is_empty() {
                    deferred.push(request);
                } else {
                    let _ = request.reply.send(Err(e));
                }
                // Rebuild the staging from the accepted requests only.
                staging = Staging::new(projection, finished);
                for s in &staged {
                    for r in &s.records {
                        let _ = staging.stage(r.key, &r.body);
                    }
                }
            }
        }
    }
    (staged, deferred)
}

/// True when the commit requeues a delivery (its check needs the delivery's stored state).
pub(super) fn requeues(commit: &Commit) -> bool {
    commit
        .records
        .iter()
        .any(|r| matches!(r.body, RecordBody::Requeued { .. }))
}

fn check_events(commit: &Commit, existing: &[StoredEvent], seen: &HashSet<EventId>) -> Result<()> {
    for (i, e) in commit.events.iter().enumerate() {
        let dup_here = commit.events[..i].iter().any(|o| o.event_id == e.event_id);
        if let Some(old) = existing.iter().find(|o| o.event_id == e.event_id) {
            return Err(LedgerError::EventExists {
                event_id: e.event_id,
                same_body: old.body == e.body
                    && old.event_type == e.event_type
                    && old.app_uid().as_str()
                        == e.app.as_deref().unwrap_or(crate::ids::DEFAULT_APP),
            });
        }
        if dup_here || seen.contains(&e.event_id) {
            return Err(LedgerError::EventExists {
                event_id: e.event_id,
                same_body: false,
            });
        }
    }
    for r in &commit.records {
        if matches!(r.body, RecordBody::Enqueued { .. })
            && !commit.events.iter().any(|e| e.event_id == r.key.event_id)
        {
            return Err(LedgerError::Invalid(format!(
                "enqueued record for {} must come with its new event",
                r.key
            )));
        }
    }
    Ok(())
}

type StagedRecords = (Vec<NewRecord>, Vec<DeliveryKey>);

fn stage_one(
    commit: &Commit,
    staging: &mut Staging<'_>,
    registry: &mut Registry,
) -> Result<StagedRecords> {
    // The batch's registry copy takes the changes only if the whole commit passes.
    let mut trial = None;
    if !commit.changes.is_empty() {
        let mut copy = registry.clone();
        for (webhook_id, change) in &commit.changes {
            let rec = ChangeRecord {
                seq: copy.last_seq() + 1,
                recorded_at: Timestamp::UNIX_EPOCH,
                webhook_id: *webhook_id,
                change: change.clone(),
            };
            copy.apply(&rec)?;
        }
        trial = Some(copy);
    }
    let mut records: Vec<NewRecord> = commit
        .records
        .iter()
        .map(|r| NewRecord::new(r.key, r.body.clone().normalized()))
        .collect();
    for r in &records {
        staging.stage(r.key, &r.body)?;
    }
    let mut parked = Vec::new();
    if let Some((webhook_id, reason)) = &commit.park {
        for key in staging.pending_of(*webhook_id) {
            let body = RecordBody::Parked {
                reason: reason.clone(),
            };
            staging.stage(key, &body)?;
            records.push(NewRecord::new(key, body));
            parked.push(key);
        }
    }
    if let Some(copy) = trial {
        *registry = copy;
    }
    Ok((records, parked))
}
