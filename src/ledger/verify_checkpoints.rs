//! `verify`'s checks beyond the logs themselves: every stored projection checkpoint against
//! the state folded from genesis at its seq (and its registry part against the registry folded
//! to its change), and an expected head (`--expect-head SEQ:HASH`) against the verified chain.
//!
//! Invariant: a checkpoint passes only if [`checkpoint::check`] accepts it (format, digest,
//! binding, body) *and* its body equals the fold, so a body forged together with its digest is
//! named here even though an open would take it.

use super::chain::{self, BatchLink, Hash};
use super::checkpoint;
use super::projection::Projection;
use super::verify::{Log, Problem};
use crate::error::Result;
use crate::registry::Registry;
use crate::store::Store;

/// The checkpoints still to check during one verification.
pub(super) struct CheckpointCheck {
    seqs: Vec<u64>,
    /// (checkpoint seq, its registry, its change hash), checked against the registry fold.
    registry_parts: Vec<(u64, Registry, Hash)>,
    checked: u64,
    pub problem: Option<Problem>,
}

fn bad(seq: u64, reason: impl std::fmt::Display) -> Problem {
    Problem {
        log: Log::Checkpoints,
        seq,
        reason: format!("checkpoint at seq {seq}: {reason}"),
    }
}

impl CheckpointCheck {
    pub fn new(store: &dyn Store, upto: u64) -> Result<Self> {
        Ok(Self {
            seqs: checkpoint::seqs_upto(store, upto)?,
            registry_parts: Vec::new(),
            checked: 0,
            problem: None,
        })
    }

    /// The seqs at which the fold must stop to be compared, ascending.
    pub fn seqs(&self) -> Vec<u64> {
        self.seqs.clone()
    }

    fn note(&mut self, p: Problem) {
        if self.problem.is_none() {
            self.problem = Some(p);
        }
    }

    /// Compares the checkpoints at `seq` with the fold, which has just folded up to where the
    /// log let it: `projection`, with `open_batch` when `seq` is inside a chain link and
    /// `prev_hash` the hash of the last verified link.
    pub fn at(
        &mut self,
        store: &dyn Store,
        seq: u64,
        projection: &Projection,
        open_batch: bool,
        prev_hash: &Hash,
    ) -> Result<()> {
        for row in store.checkpoints_at(seq)? {
            self.checked += 1;
            if projection.last_seq() != seq {
                self.note(bad(
                    seq,
                    format!("the log ends at seq {}", projection.last_seq()),
                ));
                continue;
            }
            if open_batch || row.chain_hash != *prev_hash {
                self.note(bad(
                    seq,
                    "its chain hash is not that of the link ending there",
                ));
                continue;
            }
            match checkpoint::check(store, &row)? {
                Err(reason) => self.note(bad(seq, reason)),
                Ok(s) if s.projection != *projection => {
                    self.note(bad(seq, "its state differs from the fold at that seq"))
                }
                Ok(s) => self.registry_parts.push((seq, s.registry, s.change_hash)),
            }
        }
        Ok(())
    }

    /// Called with the registry folded to change `registry.last_seq()` whose hash is `hash`
    /// (first with the empty registry and the genesis hash).
    pub fn registry(&mut self, registry: &Registry, hash: &Hash) {
        let n = registry.last_seq();
        let (here, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.registry_parts)
            .into_iter()
            .partition(|(_, r, _)| r.last_seq() == n);
        self.registry_parts = rest;
        for (seq, r, h) in here {
            if r != *registry || h != *hash {
                self.note(bad(
                    seq,
                    format!("its registry differs from the fold at change {n}"),
                ));
            }
        }
    }

    /// How many checkpoints were compared.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Registry parts naming changes the registry log does not have.
    pub fn finish_registry(&mut self) {
        for (seq, r, _) in std::mem::take(&mut self.registry_parts) {
            let n = r.last_seq();
            self.note(bad(seq, format!("registry change {n} is not in the log")));
        }
    }
}

/// Why the verified chain (`verified`, the links checked) does not contain the head
/// `(seq, hash)`, if it does not.
pub(super) fn head_problem(verified: &[BatchLink], expect: (u64, Hash)) -> Option<Problem> {
    let (seq, hash) = expect;
    let found = if seq == 0 {
        hash == chain::genesis()
    } else {
        verified.iter().any(|l| l.last_seq == seq && l.hash == hash)
    };
    if found {
        return None;
    }
    let end = verified.last().map_or(0, |l| l.last_seq);
    Some(Problem {
        log: Log::Ledger,
        seq,
        reason: format!(
            "the expected head {seq}:{} is not in the log (its verified chain ends at seq {end}): \
             the log was cut short or replaced",
            hex::encode(hash)
        ),
    })
}
