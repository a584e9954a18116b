//! What-if: replays the ledger's real failures under another retry policy, before anyone
//! changes it. How many of the window's dead-parked deliveries would a candidate schedule have
//! delivered, how much later would the rest have arrived, and how much more load would each
//! receiver have taken?
//!
//! The ledger holds every attempt with its time and outcome, so each attempt is an
//! observation of its receiver: up (a 2xx) or down (a failure, by error class). From them
//! [`availability`] builds a timeline per webhook; [`facts`] gathers it in one pass over the
//! records together with what actually happened to each delivery enqueued in the window;
//! [`simulate`] replays those deliveries under the candidate schedule (jitter off, optional
//! budget); [`report`] sets actual beside candidate and [`render`] prints it. Between two
//! observations the receiver's state is unknown, so the candidate is always reported as two
//! bounds: optimistic (every unknown gap up) and pessimistic (every unknown gap down).
//!
//! Everything but [`run`] is pure: no I/O, no clock. [`run`] streams the records from a
//! [`Store`] (opened read-only by the CLI; a read connection in `serve`), keeps per-delivery
//! state only for deliveries enqueued in the window, and writes nothing.

pub mod availability;
pub mod facts;
pub mod render;
pub mod report;
pub mod simulate;

use std::time::{Duration, Instant};

pub use availability::{Bound, Seen, Timeline};
pub use facts::{Facts, Fate, Scope};
pub use report::Report;
pub use simulate::{simulate, Policy};

use crate::error::Result;
use crate::ledger::record::Record;
use crate::store::Store;

/// The most fate changes a report lists unless asked otherwise (all are counted).
pub const DEFAULT_LIMIT: usize = 1000;

/// A what-if question: which deliveries, under which policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub scope: Scope,
    pub policy: Policy,
    /// At most this many fate changes listed.
    pub limit: usize,
}

/// A question that cannot be asked, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Query {
    /// Checks what the parsers of each field cannot: the window's order and the budget.
    pub fn new(scope: Scope, policy: Policy, limit: usize) -> std::result::Result<Self, Invalid> {
        if let (Some(since), Some(until)) = (scope.since, scope.until) {
            if until < since {
                return Err(Invalid {
                    field: "until",
                    message: "must not be before `since`".into(),
                });
            }
        }
        if policy.budget == Some(0) {
            return Err(Invalid {
                field: "budget",
                message: "must be at least 1 attempt".into(),
            });
        }
        Ok(Self {
            scope,
            policy,
            limit,
        })
    }
}

/// The pure what-if over records given in seq order.
pub fn analyse<'a>(records: impl IntoIterator<Item = &'a Record>, query: &Query) -> Report {
    let mut facts = Facts::new(query.scope.clone());
    for r in records {
        facts.push(r);
    }
    conclude(&facts, query)
}

/// The simulation and report over gathered facts.
pub fn conclude(facts: &Facts, query: &Query) -> Report {
    let bounds = simulate(facts, &query.policy);
    report::build(facts, &query.policy, &bounds, query.limit)
}

/// Progress of a scan: records read so far, of about how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub read: u64,
    pub total: u64,
}

/// Answers `query` from the store's log, streaming it from the first record of the window to
/// the end; on a long scan `progress` is told about once a second, and once at its end.
/// Reads only.
pub fn run(store: &dyn Store, query: &Query, progress: &mut dyn FnMut(Progress)) -> Result<Report> {
    let from = match query.scope.since {
        Some(since) => store.last_seq_at(since - chrono::Duration::microseconds(1))? + 1,
        None => 1,
    };
    let last = store.last_seq()?;
    let total = last.saturating_sub(from - 1);
    let mut facts = Facts::new(query.scope.clone());
    let mut read = 0u64;
    let mut told = Instant::now();
    let mut long = false;
    store.scan_records(from, last, &mut |row| {
        facts.push(&row.into_record()?);
        read += 1;
        if read.is_multiple_of(65_536) && told.elapsed() >= Duration::from_secs(1) {
            told = Instant::now();
            long = true;
            progress(Progress { read, total });
        }
        Ok(())
    })?;
    if long {
        progress(Progress { read, total });
    }
    Ok(conclude(&facts, query))
}

#[cfg(test)]
mod tests;
