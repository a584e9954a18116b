//! Tamper evidence: a SHA-256 hash chain over committed batches.
//!
//! Each commit of the writer is one batch of consecutive records (`first_seq..=last_seq`). Its
//! hash is `SHA-256("hookledger/batch/v1" ‖ previous batch hash ‖ first_seq ‖ last_seq ‖
//! canonical encoding of each record, each prefixed by its length as u32)`, where the first
//! batch chains to [`genesis`]. One 32-byte hash per batch instead of per record keeps the ledger
//! small (records compress to a few dozen bytes; a hash never compresses), and still detects any
//! edit, deletion, insertion or reordering: the price is that a failed check names the batch, and
//! its first seq, rather than the single record.

use sha2::{Digest, Sha256};

use super::stored::StoredRecord;

/// A chain hash.
pub type Hash = [u8; 32];

/// The value the first batch chains to.
pub fn genesis() -> Hash {
    Sha256::digest(b"hookledger/genesis").into()
}

/// The hash of one committed batch of records, chained to `prev`.
pub fn batch_hash(prev: &Hash, records: &[StoredRecord]) -> Hash {
    let first = records.first().map_or(0, |r| r.seq);
    let last = records.last().map_or(0, |r| r.seq);
    let mut hasher = Sha256::new();
    hasher.update(b"hookledger/batch/v1");
    hasher.update(prev);
    hasher.update(first.to_be_bytes());
    hasher.update(last.to_be_bytes());
    let mut buf = Vec::with_capacity(128);
    for record in records {
        buf.clear();
        record.encode_canonical(&mut buf);
        hasher.update((buf.len() as u32).to_be_bytes());
        hasher.update(&buf);
    }
    hasher.finalize().into()
}

/// The chain hash of one stored event (its exact body bytes included), given the previous
/// event's. Events chain on their own: an event may be committed with no ledger records (no
/// webhook matched it), and its body must still be tamper-evident.
///
/// Version 1 (events stored before apps, `format` NULL) covers seq, id, type, publish time and
/// body. Version 2 (events with a format stored before erasure) also covers the app, the
/// producer's id and the format, so old files verify unchanged and a new event's app or id
/// cannot be edited. Version 3 (every event with a `body_digest`: all events stored since
/// schema 5) covers what version 2 covers, the presence of a format, and SHA-256 of the body
/// instead of its bytes: a body may then be erased (`crate::ledger::expunge`) and the link
/// still checks, while `verify` compares a body still present with its digest.
pub fn event_link(prev: &Hash, e: &crate::store::StoredEvent) -> Hash {
    if let Some(digest) = &e.body_digest {
        return event_link_v3(prev, e, digest);
    }
    let mut hasher = Sha256::new();
    let v2 = e.format.is_some();
    hasher.update(if v2 {
        b"hookledger/event/v2"
    } else {
        b"hookledger/event/v1"
    });
    hasher.update(prev);
    hasher.update(e.seq.to_be_bytes());
    hasher.update(e.event_id.0.as_bytes());
    hasher.update((e.event_type.len() as u32).to_be_bytes());
    hasher.update(e.event_type.as_bytes());
    hasher.update(e.published_at.timestamp_micros().to_be_bytes());
    hasher.update((e.body.len() as u64).to_be_bytes());
    hasher.update(&e.body);
    if v2 {
        for field in [&e.app, &e.producer_id] {
            let f = field.as_deref().unwrap_or("");
            hasher.update([u8::from(field.is_some())]);
            hasher.update((f.len() as u32).to_be_bytes());
            hasher.update(f.as_bytes());
        }
        hasher.update([e.format.unwrap_or(0)]);
    }
    hasher.finalize().into()
}

/// SHA-256 of an event's body: what a version 3 link covers.
pub fn body_digest(body: &[u8]) -> Hash {
    Sha256::digest(body).into()
}

fn event_link_v3(prev: &Hash, e: &crate::store::StoredEvent, digest: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(b"hookledger/event/v3");
    hasher.update(prev);
    hasher.update(e.seq.to_be_bytes());
    hasher.update(e.event_id.0.as_bytes());
    hasher.update((e.event_type.len() as u32).to_be_bytes());
    hasher.update(e.event_type.as_bytes());
    hasher.update(e.published_at.timestamp_micros().to_be_bytes());
    hasher.update(digest);
    for field in [&e.app, &e.producer_id] {
        let f = field.as_deref().unwrap_or("");
        hasher.update([u8::from(field.is_some())]);
        hasher.update((f.len() as u32).to_be_bytes());
        hasher.update(f.as_bytes());
    }
    hasher.update([u8::from(e.format.is_some()), e.format.unwrap_or(0)]);
    hasher.finalize().into()
}

/// The value the first event chains to.
pub fn event_genesis() -> Hash {
    Sha256::digest(b"hookledger/event-genesis").into()
}

/// One row of `ledger_batches`: the chain link for a committed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLink {
    pub first_seq: u64,
    pub last_seq: u64,
    pub hash: Hash,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeliveryKey, EventId, WebhookId};
    use crate::ledger::record::{Record, RecordBody};
    use chrono::DateTime;
    use uuid::Uuid;

    fn row(seq: u64, attempt: u16) -> StoredRecord {
        StoredRecord::from_record(&Record {
            seq,
            recorded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            key: DeliveryKey::new(WebhookId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2))),
            body: RecordBody::Attempted { attempt },
        })
    }

    #[test]
    fn the_hash_depends_on_the_previous_link_and_every_record() {
        let records = vec![row(1, 1), row(2, 2)];
        let h = batch_hash(&genesis(), &records);
        assert_ne!(h, batch_hash(&[0; 32], &records), "previous link");
        assert_ne!(
            h,
            batch_hash(&genesis(), &[row(1, 1), row(2, 3)]),
            "a field"
        );
        assert_ne!(
            h,
            batch_hash(&genesis(), &[row(2, 2), row(1, 1)]),
            "the order"
        );
        assert_ne!(h, batch_hash(&genesis(), &records[..1]), "a deletion");
        assert_eq!(h, batch_hash(&genesis(), &records.clone()), "deterministic");
    }
}
