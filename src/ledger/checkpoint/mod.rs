//! Projection checkpoints: a cache of the folded state, bound to a ledger position, so that
//! opening a database and point-in-time queries fold only the records after the nearest one.
//!
//! A checkpoint is one row of `projection_checkpoints`: the seq it was taken at (always the
//! end of a committed batch), the chain hash of the link ending at that seq, the time of that
//! record, the body format, the body ([`codec`]: live deliveries, counters, the registry) and a
//! digest over all of them ([`digest`]). (A DuckDB file keeps the body in a table of its own
//! beside the row: `store/duck/checkpoints.rs` says why.)
//!
//! Invariant: a checkpoint is never a source of truth. It is used only when its format is
//! known, its digest matches, a link of the chain ends at its seq with its hash, its body
//! decodes to the state at that seq, and its registry part names a change of this file's
//! registry chain; anything else is ignored with a warning naming it, and the caller folds from
//! further back (from genesis if need be). `verify` still folds from genesis and checks every
//! stored checkpoint against the fold at its seq, which also catches a body forged together
//! with its digest.
//!
//! Writing: [`checkpointer`] takes them off the writer thread (see there for what it costs)
//! and then thins the old ones ([`thin`]: the newest intervals whole, older ones
//! logarithmically spaced).

pub mod checkpointer;
pub mod codec;
pub mod thin;

use sha2::{Digest, Sha256};

use super::chain::{self, Hash};
use super::projection::Projection;
use super::record::Timestamp;
use crate::error::Result;
use crate::registry::{self, Registry};
use crate::store::{Store, StoredCheckpoint};
pub use codec::{Snapshot, FORMAT_VERSION};

/// How many of the newest candidate checkpoints an open tries before it folds from genesis.
const CANDIDATES: usize = 8;

/// The digest of a checkpoint row: its binding, format and body.
pub fn digest(
    seq: u64,
    chain_hash: &Hash,
    recorded_at_us: Option<i64>,
    version: u8,
    body: &[u8],
) -> Hash {
    let mut h = Sha256::new();
    h.update(b"hookledger/checkpoint/v1");
    h.update(seq.to_be_bytes());
    h.update(chain_hash);
    h.update(recorded_at_us.unwrap_or(i64::MIN).to_be_bytes());
    h.update([version]);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// The stored row for `snapshot`, bound to the link ending at its seq (`chain_hash`).
pub fn to_row(snapshot: &Snapshot, chain_hash: Hash) -> StoredCheckpoint {
    let seq = snapshot.projection.last_seq();
    let recorded_at_us = snapshot
        .projection
        .last_recorded_at()
        .map(|t| t.timestamp_micros());
    let body = codec::encode(snapshot);
    StoredCheckpoint {
        seq,
        chain_hash,
        recorded_at_us,
        format_version: FORMAT_VERSION,
        digest: digest(seq, &chain_hash, recorded_at_us, FORMAT_VERSION, &body),
        body,
    }
}

/// A checkpoint that was passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub seq: u64,
    pub reason: String,
}

/// Checks one row against the store (its binding) and decodes it: the snapshot, or why not.
pub fn check(
    store: &dyn Store,
    row: &StoredCheckpoint,
) -> Result<std::result::Result<Snapshot, String>> {
    if row.format_version != FORMAT_VERSION {
        return Ok(Err(format!(
            "format {} (this build reads {FORMAT_VERSION})",
            row.format_version
        )));
    }
    let expected = digest(
        row.seq,
        &row.chain_hash,
        row.recorded_at_us,
        row.format_version,
        &row.body,
    );
    if expected != row.digest {
        return Ok(Err("its digest does not match its contents".into()));
    }
    match store.link_ending_at(row.seq)? {
        Some(link) if link.hash == row.chain_hash => {}
        Some(_) => {
            return Ok(Err(
                "its chain hash is not this ledger's (another file?)".into()
            ))
        }
        None => {
            return Ok(Err(format!(
                "no chain link ends at seq {} (the log is shorter or differs)",
                row.seq
            )))
        }
    }
    let snapshot = match codec::decode(&row.body) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("its body does not decode: {e}"))),
    };
    let p = &snapshot.projection;
    let recorded_at_us = p.last_recorded_at().map(|t| t.timestamp_micros());
    if p.last_seq() != row.seq || recorded_at_us != row.recorded_at_us {
        return Ok(Err("its body is for another position".into()));
    }
    Ok(Ok(snapshot))
}

/// The seqs that hold stored checkpoints, at or before `upto`, in order, each once.
pub fn seqs_upto(store: &dyn Store, upto: u64) -> Result<Vec<u64>> {
    let mut seqs: Vec<u64> = store
        .checkpoint_index()?
        .into_iter()
        .map(|c| c.seq)
        .filter(|s| *s <= upto)
        .collect();
    seqs.dedup();
    Ok(seqs)
}

/// The newest checkpoint at or before `upto` that passes [`check`] and `accept`, with the ones
/// passed over on the way (each logged as a warning).
pub fn newest_valid(
    store: &dyn Store,
    upto: u64,
    accept: &dyn Fn(&Snapshot) -> std::result::Result<(), String>,
) -> Result<(Option<Snapshot>, Vec<Ignored>)> {
    let seqs = seqs_upto(store, upto)?;
    let mut ignored = Vec::new();
    for seq in seqs.into_iter().rev().take(CANDIDATES) {
        for row in store.checkpoints_at(seq)?.into_iter().rev() {
            let verdict = check(store, &row)?.and_then(|s| accept(&s).map(|()| s));
            match verdict {
                Ok(snapshot) => return Ok((Some(snapshot), ignored)),
                Err(reason) => {
                    tracing::warn!(checkpoint_seq = seq, %reason, "ignoring projection checkpoint");
                    ignored.push(Ignored { seq, reason });
                }
            }
        }
    }
    Ok((None, ignored))
}

/// Whether `snapshot`'s registry part belongs to the registry chain `changes` (this file's).
pub fn registry_matches(
    snapshot: &Snapshot,
    changes: &[registry::StoredChange],
) -> std::result::Result<(), String> {
    let seq = snapshot.registry.last_seq();
    let hash = match seq {
        0 => registry::genesis(),
        n => match changes.get(n as usize - 1) {
            Some(c) if c.seq == n => c.hash,
            _ => return Err(format!("registry change {n} is not in this file")),
        },
    };
    if hash == snapshot.change_hash {
        Ok(())
    } else {
        Err(format!(
            "its registry part does not match registry change {seq}"
        ))
    }
}

/// The queue right after record `seq`, folded from the nearest valid checkpoint at or before it.
pub fn state_at(store: &dyn Store, seq: u64) -> Result<Projection> {
    let (start, _) = newest_valid(store, seq, &|_| Ok(()))?;
    let mut projection = start.map(|s| s.projection).unwrap_or_default();
    let from = projection.last_seq() + 1;
    if from <= seq {
        store.scan_records(from, seq, &mut |row| projection.apply(&row.into_record()?))?;
    }
    Ok(projection)
}

/// The seq of the last record recorded at or before `at`. The checkpoints' times narrow the
/// search to the records between two of them; the answer is then checked against its
/// neighbours' times, and a full search runs if the index misled it.
pub fn seq_at_time(store: &dyn Store, at: Timestamp) -> Result<u64> {
    let at_us = at.timestamp_micros();
    let index = store.checkpoint_index()?;
    let lo = index
        .iter()
        .filter(|c| c.recorded_at_us.is_some_and(|t| t <= at_us))
        .map(|c| c.seq)
        .max()
        .unwrap_or(0);
    let hi = index
        .iter()
        .filter(|c| c.recorded_at_us.is_some_and(|t| t > at_us) && c.seq > lo)
        .map(|c| c.seq)
        .min()
        .unwrap_or(u64::MAX);
    let found = store.last_seq_at_within(at, lo, hi)?.unwrap_or(lo);
    let time_of = |seq: u64| -> Result<Option<i64>> {
        let mut t = None;
        store.scan_records(seq, seq, &mut |r| {
            t = Some(r.recorded_at_us);
            Ok(())
        })?;
        Ok(t)
    };
    let here_ok = found == 0 || time_of(found)?.is_some_and(|t| t <= at_us);
    let next_ok = time_of(found + 1)?.is_none_or(|t| t > at_us);
    if here_ok && next_ok {
        Ok(found)
    } else {
        store.last_seq_at(at)
    }
}

/// The head of the ledger: its last seq, the chain hash of the link ending there, and when
/// that batch was committed (seq 0 and the genesis hash for an empty ledger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
    pub committed_at: Option<Timestamp>,
}

impl Head {
    /// `SEQ:HASH` (hex), the form `verify --expect-head` takes.
    pub fn anchor(&self) -> String {
        format!("{}:{}", self.seq, hex::encode(self.hash))
    }

    /// Parses `SEQ:HASH`.
    pub fn parse_anchor(s: &str) -> std::result::Result<(u64, Hash), String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not SEQ:HASH"))?;
        let seq = seq.parse().map_err(|_| format!("`{seq}` is not a seq"))?;
        let hash: Hash = hex::decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("`{hash}` is not a 64-digit hex hash"))?;
        Ok((seq, hash))
    }
}

/// The ledger's head. `hint` is a seq known to be at or before it (it narrows the search).
pub fn head(store: &dyn Store, hint: u64) -> Result<Head> {
    let link = match store.last_link(hint)? {
        Some(l) => Some(l),
        None => store.last_link(0)?,
    };
    Ok(match link {
        Some((link, at)) => Head {
            seq: link.last_seq,
            hash: link.hash,
            committed_at: Some(at),
        },
        None => Head {
            seq: 0,
            hash: chain::genesis(),
            committed_at: None,
        },
    })
}

/// The newest stored checkpoint's seq (valid or not): a hint for [`head`].
pub fn newest_seq(store: &dyn Store) -> Result<u64> {
    Ok(store.checkpoint_index()?.last().map_or(0, |c| c.seq))
}

/// A snapshot of the live state, read under the state's locks (each at a batch boundary).
pub fn snapshot_of(projection: &Projection, registry: &Registry, change_hash: Hash) -> Snapshot {
    Snapshot {
        projection: projection.clone(),
        registry: registry.clone(),
        change_hash,
    }
}
