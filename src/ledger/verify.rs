//! `verify`: re-fold the logs from scratch and check everything a reader relies on: seqs are
//! gapless, every record decodes and is a valid transition, every chain link matches its
//! records, no delivery was enqueued twice, every `requeued` names the state its delivery was
//! really in (the record before it, checked in SQL: the fold forgets finished deliveries), the
//! registry chain holds, and the rebuilt projection equals the live one. It reports the first
//! bad seq.

use std::fmt;

use serde::Serialize;

use super::chain::{self, batch_hash, BatchLink};
use super::projection::Projection;
use super::stored::StoredRecord;
use super::verify_checkpoints::{head_problem, CheckpointCheck};
use crate::error::{LedgerError, Result};
use crate::registry::{self, Registry};
use crate::store::Store;

/// Which log a problem was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    Ledger,
    Registry,
    Events,
    /// A stored projection checkpoint (a cache) that does not match the fold.
    Checkpoints,
    /// The expunge facts (`crate::ledger::expunge`).
    Expunges,
}

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    pub log: Log,
    pub seq: u64,
    pub reason: String,
}

/// The verdict of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Verdict {
    pub records: u64,
    pub batches: u64,
    pub events: u64,
    pub changes: u64,
    /// Projection checkpoints compared with the fold.
    pub checkpoints: u64,
    pub problem: Option<Problem>,
}

/// What else to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A head kept elsewhere (`SEQ:HASH`): the log must still contain it.
    pub expect_head: Option<(u64, chain::Hash)>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None => write!(
                f,
                "ok: {} records in {} batches, {} events and {} registry changes; chains intact, state matches ({} checkpoints too)",
                self.records, self.batches, self.events, self.changes, self.checkpoints
            ),
            Some(p) => write!(
                f,
                "FAILED: {} seq {}: {}",
                match p.log {
                    Log::Ledger => "ledger",
                    Log::Registry => "registry",
                    Log::Events => "events",
                    Log::Checkpoints => "checkpoints",
                    Log::Expunges => "expunges",
                },
                p.seq,
                p.reason
            ),
        }
    }
}

/// Verifies the store's logs. With `live`, only records up to its last seq are checked (later
/// ones were committed after the snapshot) and the rebuilt state must equal it.
pub fn verify(store: &dyn Store, live: Option<&Projection>) -> Result<Verdict> {
    verify_with(store, live, &Options::default())
}

/// [`verify`], and every stored projection checkpoint against the fold at its seq, and the
/// head `options` expects.
pub fn verify_with(
    store: &dyn Store,
    live: Option<&Projection>,
    options: &Options,
) -> Result<Verdict> {
    let upto = live.map_or(u64::MAX, Projection::last_seq);
    let links: Vec<BatchLink> = store
        .links()?
        .into_iter()
        .filter(|l| l.first_seq <= upto)
        .collect();
    let mut check = LedgerCheck::new(&links);
    let mut checkpoints = CheckpointCheck::new(store, upto)?;
    // The fold stops at each checkpoint's seq to compare (each scan reads only its range).
    let mut from = 1;
    let mut scanned = Ok(());
    for seq in checkpoints.seqs() {
        if seq >= from {
            scanned = store.scan_records(from, seq, &mut |row| check.record(row));
            if scanned.is_err() || check.problem.is_some() {
                break;
            }
            from = seq + 1;
        }
        let open = !check.batch.is_empty();
        checkpoints.at(store, seq, &check.projection, open, &check.prev_hash)?;
    }
    if scanned.is_ok() && check.problem.is_none() && from <= upto {
        scanned = store.scan_records(from, upto, &mut |row| check.record(row));
    }
    let mut problem = match (scanned, check.problem.take()) {
        (_, Some(p)) => Some(p),
        (Err(e), None) => return Err(e),
        (Ok(()), None) => check.finish(),
    };
    if let Some(seq) = store.first_duplicate_enqueue()?.filter(|s| *s <= upto) {
        problem = earliest(
            problem,
            ledger_problem(seq, "a second `enqueued` for the same delivery".into()),
        );
    }
    if let Some((seq, named, before)) = store.first_bad_requeue()?.filter(|r| r.0 <= upto) {
        let was = before.map_or_else(
            || "was never enqueued".to_owned(),
            |kind| format!("its previous record is `{kind}`"),
        );
        let reason = format!(
            "a `requeued` from {} for a delivery that is not {}: {was}",
            named.as_str(),
            named.as_str()
        );
        problem = earliest(problem, ledger_problem(seq, reason));
    }
    if problem.is_none() {
        if let Some(live) = live.filter(|l| **l != check.projection) {
            problem = Some(ledger_problem(
                live.last_seq(),
                "the live projection differs from the state folded from the log".into(),
            ));
        }
    }
    if let (None, Some(head)) = (&problem, options.expect_head) {
        problem = head_problem(&links[..check.link_index], head);
    }
    let (changes, registry_problem) = verify_registry(store, &mut checkpoints)?;
    let (events, events_problem) = verify_events(store)?;
    Ok(Verdict {
        records: check.projection.last_seq(),
        batches: check.link_index as u64,
        events,
        changes,
        checkpoints: checkpoints.checked(),
        problem: problem
            .or(registry_problem)
            .or(events_problem)
            .or(checkpoints.problem),
    })
}

fn ledger_problem(seq: u64, reason: String) -> Problem {
    Problem {
        log: Log::Ledger,
        seq,
        reason,
    }
}

fn earliest(a: Option<Problem>, b: Problem) -> Option<Problem> {
    match a {
        Some(a) if a.seq <= b.seq => Some(a),
        _ => Some(b),
    }
}

/// The state of one pass over the ledger: the fold and the chain, record by record.
struct LedgerCheck<'a> {
    links: &'a [BatchLink],
    link_index: usize,
    prev_hash: chain::Hash,
    batch: Vec<StoredRecord>,
    projection: Projection,
    problem: Option<Problem>,
}

impl<'a> LedgerCheck<'a> {
    fn new(links: &'a [BatchLink]) -> Self {
        Self {
            links,
            link_index: 0,
            prev_hash: chain::genesis(),
            batch: Vec::new(),
            projection: Projection::new(),
            problem: None,
        }
    }

    /// Checks one record; on the first problem it stops the scan with an error.
    fn record(&mut self, row: StoredRecord) -> Result<()> {
        let seq = row.seq;
        let folded = row
            .clone()
            .into_record()
            .and_then(|r| self.projection.apply(&r));
        if let Err(e) = folded {
            return self.stop(match e {
                LedgerError::Corrupt { seq, reason } => ledger_problem(seq, reason),
                other => ledger_problem(seq, other.to_string()),
            });
        }
        let Some(link) = self.links.get(self.link_index) else {
            return self.stop(ledger_problem(
                seq,
                "record not covered by any chain link".into(),
            ));
        };
        if self.batch.is_empty() && link.first_seq != seq {
            let at = link.first_seq.min(seq);
            return self.stop(ledger_problem(at, "chain link does not start here".into()));
        }
        self.batch.push(row);
        if seq == link.last_seq {
            if batch_hash(&self.prev_hash, &self.batch) != link.hash {
                let reason = format!(
                    "hash mismatch in batch {}..={} (a record was edited, removed or moved)",
                    link.first_seq, link.last_seq
                );
                return self.stop(ledger_problem(link.first_seq, reason));
            }
            self.prev_hash = link.hash;
            self.batch.clear();
            self.link_index += 1;
        }
        Ok(())
    }

    fn stop(&mut self, problem: Problem) -> Result<()> {
        let seq = problem.seq;
        self.problem = Some(problem);
        Err(LedgerError::Corrupt {
            seq,
            reason: "verification stopped".into(),
        })
    }

    /// Problems visible only at the end: a batch cut short, links without records.
    fn finish(&self) -> Option<Problem> {
        if let Some(first) = self.batch.first() {
            return Some(ledger_problem(
                first.seq,
                "the last batch is incomplete".into(),
            ));
        }
        self.links.get(self.link_index).map(|l| {
            ledger_problem(
                l.first_seq,
                format!("records {}..={} are missing", l.first_seq, l.last_seq),
            )
        })
    }
}

/// Folds the registry log and checks its chain.
fn verify_registry(
    store: &dyn Store,
    checkpoints: &mut CheckpointCheck,
) -> Result<(u64, Option<Problem>)> {
    let mut registry = Registry::new();
    let mut prev = registry::genesis();
    let mut count = 0;
    checkpoints.registry(&registry, &prev);
    for row in store.changes()? {
        let seq = row.seq;
        let bad = |reason: String| Problem {
            log: Log::Registry,
            seq,
            reason,
        };
        if row.link(&prev) != row.hash {
            return Ok((count, Some(bad("hash mismatch".into()))));
        }
        prev = row.hash;
        if let Err(e) = row.into_change().and_then(|c| registry.apply(&c)) {
            return Ok((count, Some(bad(e.to_string()))));
        }
        count += 1;
        checkpoints.registry(&registry, &prev);
    }
    checkpoints.finish_registry();
    Ok((count, None))
}

/// Walks the events in seq order and checks their chain (bodies included: a body still
/// present must match the digest its link covers), then the expunge facts
/// (`crate::ledger::expunge`).
fn verify_events(store: &dyn Store) -> Result<(u64, Option<Problem>)> {
    let (old_links, facts_problem) = super::expunge::verify_facts(store)?;
    let mut prev = chain::event_genesis();
    let mut count = 0u64;
    let mut problem = None;
    let scanned = store.scan_events(&mut |e| {
        let expected = count + 1;
        let reason = if e.seq != expected {
            Some(format!("event seq {expected} is missing"))
        } else {
            super::expunge::check_event(&prev, &e, &old_links)
        };
        if let Some(reason) = reason {
            problem = Some(Problem {
                log: Log::Events,
                seq: expected,
                reason,
            });
            return Err(LedgerError::Invalid("verification stopped".into()));
        }
        prev = e.hash;
        count += 1;
        Ok(())
    });
    match (scanned, problem) {
        (_, Some(p)) => Ok((count, Some(p))),
        (Err(e), None) => Err(e),
        (Ok(()), None) => Ok((count, facts_problem)),
    }
}
