//! Queue state: a pure fold of ledger records. `apply` has no I/O and no clock; time comes from
//! the records themselves.
//!
//! The projection holds only what is *live* (pending or in an attempt), plus a due index
//! ordered by due time within each webhook ([`super::due`]). A delivery that reaches a terminal state (delivered, dead, parked) is
//! dropped from memory and only counted, so memory follows the queue, not the history. The price:
//! a `requeued` record for a delivery that is not live cannot be checked against its past here.
//! It names the terminal state it lifts the delivery from, and the fold checks only that *some*
//! delivery is counted in that state. The delivery's own state is checked where its past can be
//! read: the writer stages a requeue against the delivery's last stored record
//! ([`Staging::new`] takes those states, looked up by key), and `verify` checks every stored
//! `requeued` against the record before it in SQL ([`crate::store::Store::first_bad_requeue`]).
//!
//! Transitions (anything else is an [`LedgerError::InvalidTransition`]):
//!
//! ```text
//! (none)     --enqueued-->    pending(0, due)
//! pending(n) --attempted(n+1)--> in_attempt(n+1)
//! in_attempt(a) --delivered(a)--> delivered
//! in_attempt(a) --failed(a)-->    pending(a, due = the record's next_due_at)
//! pending    --dead_parked--> dead
//! pending    --parked-->      parked
//! delivered|dead|parked --requeued--> pending(0, due)
//! ```

use std::collections::HashMap;

use serde::Serialize;

use super::due::DueIndex;
use super::record::{Record, RecordBody, Terminal, Timestamp};
use crate::error::LedgerError;
use crate::ids::{DeliveryKey, IdMap, WebhookId};

/// A live delivery's state. Due times are microseconds since the epoch to keep entries small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Waiting for attempt `attempts + 1`, due at `due_us`.
    Pending { attempts: u16, due_us: i64 },
    /// Attempt `attempt` was recorded as started and has no outcome yet.
    InAttempt { attempt: u16 },
}

impl Live {
    fn describe(&self) -> String {
        match self {
            Live::Pending { attempts, .. } => format!("pending after {attempts} attempt(s)"),
            Live::InAttempt { attempt } => format!("in attempt {attempt}"),
        }
    }
}

/// Where one record takes a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Live(Live),
    Terminal(Terminal),
}

/// The pure transition function shared by the writer's check and the fold.
/// `current` is `None` for a delivery that is not live (never seen, or finished).
pub fn transition(current: Option<Live>, body: &RecordBody) -> Result<Step, String> {
    use RecordBody as B;
    match (current, body) {
        (None, B::Enqueued { due_at }) | (None, B::Requeued { due_at, .. }) => {
            Ok(Step::Live(Live::Pending {
                attempts: 0,
                due_us: due_at.timestamp_micros(),
            }))
        }
        (Some(Live::Pending { attempts, .. }), B::Attempted { attempt })
            if u32::from(*attempt) == u32::from(attempts) + 1 =>
        {
            Ok(Step::Live(Live::InAttempt { attempt: *attempt }))
        }
        (Some(Live::InAttempt { attempt: a }), B::Delivered { attempt, .. }) if *attempt == a => {
            Ok(Step::Terminal(Terminal::Delivered))
        }
        (Some(Live::InAttempt { attempt: a }), B::Failed(f)) if f.attempt == a => {
            Ok(Step::Live(Live::Pending {
                attempts: a,
                due_us: f.next_due_at.timestamp_micros(),
            }))
        }
        (Some(Live::Pending { .. }), B::DeadParked { .. }) => Ok(Step::Terminal(Terminal::Dead)),
        (Some(Live::Pending { .. }), B::Parked { .. }) => Ok(Step::Terminal(Terminal::Parked)),
        (Some(live), _) => Err(live.describe()),
        (None, _) => Err("not live (never enqueued, or already finished)".to_owned()),
    }
}

/// Deliveries that have finished, by terminal state. Counters only: no per-delivery memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TerminalCounts {
    pub delivered: u64,
    pub dead: u64,
    pub parked: u64,
}

impl TerminalCounts {
    fn slot(&mut self, t: Terminal) -> &mut u64 {
        match t {
            Terminal::Delivered => &mut self.delivered,
            Terminal::Dead => &mut self.dead,
            Terminal::Parked => &mut self.parked,
        }
    }
}

/// The queue state folded from the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projection {
    live: IdMap<DeliveryKey, Live>,
    /// Pending deliveries by due time, per webhook.
    due: DueIndex,
    terminal: TerminalCounts,
    last_seq: u64,
    last_recorded_at: Option<Timestamp>,
}

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one record. The record must be the next in seq order and a valid transition.
    pub fn apply(&mut self, record: &Record) -> Result<(), LedgerError> {
        let expected = self.last_seq + 1;
        if record.seq != expected {
            return Err(LedgerError::Corrupt {
                seq: expected,
                reason: format!(
                    "seq {expected} is missing (the next record is {})",
                    record.seq
                ),
            });
        }
        self.apply_body(record.key, &record.body)
            .map_err(|e| with_seq(e, record.seq))?;
        self.last_seq = record.seq;
        self.last_recorded_at = Some(record.recorded_at);
        Ok(())
    }

    /// The state change of one record, without the seq bookkeeping.
    pub(crate) fn apply_body(
        &mut self,
        key: DeliveryKey,
        body: &RecordBody,
    ) -> Result<(), LedgerError> {
        let current = self.live.get(&key).copied();
        let step = transition(current, body).map_err(|from| LedgerError::InvalidTransition {
            key,
            from,
            record: body.kind(),
        })?;
        if let RecordBody::Requeued { from, .. } = body {
            let slot = self.terminal.slot(*from);
            *slot = slot
                .checked_sub(1)
                .ok_or_else(|| LedgerError::InvalidTransition {
                    key,
                    from: format!("no delivery is {}", from.as_str()),
                    record: body.kind(),
                })?;
        }
        if let Some(Live::Pending { due_us, .. }) = current {
            self.due.remove(key, due_us);
        }
        match step {
            Step::Live(live) => {
                if let Live::Pending { due_us, .. } = live {
                    self.due.insert(key, due_us);
                }
                self.live.insert(key, live);
            }
            Step::Terminal(t) => {
                self.live.remove(&key);
                *self.terminal.slot(t) += 1;
            }
        }
        Ok(())
    }

    /// A projection as a checkpoint stored it: these live deliveries (the due index is rebuilt
    /// from the pending ones) and counters, after record `last_seq`.
    pub(crate) fn from_parts(
        live: Vec<(DeliveryKey, Live)>,
        terminal: TerminalCounts,
        last_seq: u64,
        last_recorded_at: Option<Timestamp>,
    ) -> Result<Self, String> {
        let mut p = Self {
            terminal,
            last_seq,
            last_recorded_at,
            ..Self::default()
        };
        for (key, state) in live {
            if let Live::Pending { due_us, .. } = state {
                p.due.insert(key, due_us);
            }
            if p.live.insert(key, state).is_some() {
                return Err(format!("delivery {key} is listed twice"));
            }
        }
        Ok(p)
    }

    /// The finished deliveries, counted.
    pub fn terminal(&self) -> TerminalCounts {
        self.terminal
    }

    /// The seq of the last record folded (0 for an empty ledger).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn last_recorded_at(&self) -> Option<Timestamp> {
        self.last_recorded_at
    }

    pub fn get(&self, key: &DeliveryKey) -> Option<Live> {
        self.live.get(key).copied()
    }

    /// Up to `limit` pending deliveries due at or before `now`, earliest first over all
    /// webhooks. The cost follows `limit`, not the size of the queue.
    pub fn due(&self, now: Timestamp, limit: usize) -> Vec<(DeliveryKey, Live)> {
        let keys = self.due.earliest(now.timestamp_micros(), limit);
        self.with_state(keys)
    }

    /// Pending deliveries due at or before `now`, webhook by webhook (the most overdue first),
    /// at most `quota(webhook)` of each and `limit` in all: what a re-drive pass can start. A
    /// webhook that can take nothing is skipped whatever its backlog.
    pub fn due_fair(
        &self,
        now: Timestamp,
        limit: usize,
        quota: impl FnMut(WebhookId) -> usize,
    ) -> Vec<(DeliveryKey, Live)> {
        let keys = self.due.fair(now.timestamp_micros(), limit, quota);
        self.with_state(keys)
    }

    fn with_state(&self, keys: Vec<DeliveryKey>) -> Vec<(DeliveryKey, Live)> {
        keys.into_iter().map(|k| (k, self.live[&k])).collect()
    }

    /// The earliest due time in the queue, if anything is pending.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.due
            .first_due()
            .and_then(chrono::DateTime::from_timestamp_micros)
    }

    /// Deliveries by state, in O(1): every pending delivery is in the due index, every other
    /// live one is in an attempt.
    pub fn counts(&self) -> Counts {
        let pending = self.due.len() as u64;
        Counts {
            pending,
            in_attempt: self.live.len() as u64 - pending,
            delivered: self.terminal.delivered,
            dead: self.terminal.dead,
            parked: self.terminal.parked,
        }
    }

    /// Every live delivery, in key order (stable for output and snapshots).
    pub fn live_rows(&self) -> Vec<(DeliveryKey, Live)> {
        let mut rows: Vec<_> = self.live.iter().map(|(k, l)| (*k, *l)).collect();
        rows.sort_unstable_by_key(|(k, _)| *k);
        rows
    }

    pub fn live_len(&self) -> usize {
        self.live.len()
    }
}

fn with_seq(err: LedgerError, seq: u64) -> LedgerError {
    match err {
        LedgerError::InvalidTransition { key, from, record } => LedgerError::Corrupt {
            seq,
            reason: format!("invalid transition for delivery {key}: `{record}` when {from}"),
        },
        other => other,
    }
}

/// Where a delivery stands as far as a [`Staging`] knows: live, or finished in a terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Staged {
    Live(Live),
    Finished(Terminal),
}

/// A projection with some records checked but not yet committed: the writer validates a whole
/// batch against it, then commits, then applies. Nothing here touches the base projection.
///
/// A `requeued` record must name the state its delivery is really in. For a delivery that is
/// neither live nor finished within the batch, that state comes from `finished`: the terminal
/// state of each delivery the batch requeues, read from its last stored record. A key missing
/// from it was never enqueued (or is not finished), and its requeue is refused.
pub struct Staging<'a> {
    base: &'a Projection,
    finished: &'a HashMap<DeliveryKey, Terminal>,
    staged: HashMap<DeliveryKey, Staged>,
    terminal: TerminalCounts,
}

impl<'a> Staging<'a> {
    pub fn new(base: &'a Projection, finished: &'a HashMap<DeliveryKey, Terminal>) -> Self {
        Self {
            base,
            finished,
            staged: HashMap::new(),
            terminal: base.terminal,
        }
    }

    fn state(&self, key: &DeliveryKey) -> Option<Staged> {
        match self.staged.get(key) {
            Some(staged) => Some(*staged),
            None => match self.base.get(key) {
                Some(live) => Some(Staged::Live(live)),
                None => self.finished.get(key).map(|t| Staged::Finished(*t)),
            },
        }
    }

    /// The delivery's state with the staged records applied.
    pub fn get(&self, key: &DeliveryKey) -> Option<Live> {
        match self.state(key) {
            Some(Staged::Live(live)) => Some(live),
            _ => None,
        }
    }

    /// Checks one record against the staged state and stages it.
    pub fn stage(&mut self, key: DeliveryKey, body: &RecordBody) -> Result<(), LedgerError> {
        let refuse = |from: String| LedgerError::InvalidTransition {
            key,
            from,
            record: body.kind(),
        };
        let state = self.state(&key);
        if let RecordBody::Requeued { from, .. } = body {
            match state {
                Some(Staged::Finished(t)) if t == *from => {}
                Some(Staged::Finished(t)) => {
                    return Err(refuse(format!(
                        "{}, not {} as the requeue says",
                        t.as_str(),
                        from.as_str()
                    )))
                }
                Some(Staged::Live(live)) => return Err(refuse(live.describe())),
                None => return Err(refuse("never enqueued".to_owned())),
            }
        }
        let live = match state {
            Some(Staged::Live(live)) => Some(live),
            _ => None,
        };
        let step = transition(live, body).map_err(refuse)?;
        if let RecordBody::Requeued { from, .. } = body {
            let slot = self.terminal.slot(*from);
            *slot = slot
                .checked_sub(1)
                .ok_or_else(|| refuse(format!("no delivery is {}", from.as_str())))?;
        }
        let next = match step {
            Step::Live(live) => Staged::Live(live),
            Step::Terminal(t) => {
                *self.terminal.slot(t) += 1;
                Staged::Finished(t)
            }
        };
        self.staged.insert(key, next);
        Ok(())
    }

    /// Pending deliveries of one webhook, as staged (for parking on deactivation).
    pub fn pending_of(&self, webhook: crate::ids::WebhookId) -> Vec<DeliveryKey> {
        let staged = self.staged.iter().filter_map(|(k, s)| match s {
            Staged::Live(live) => Some((*k, *live)),
            Staged::Finished(_) => None,
        });
        let base = self
            .base
            .live
            .iter()
            .filter(|(k, _)| !self.staged.contains_key(*k));
        let mut keys: Vec<_> = base
            .map(|(k, l)| (*k, *l))
            .chain(staged)
            .filter(|(k, l)| k.webhook_id == webhook && matches!(l, Live::Pending { .. }))
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        keys
    }
}

/// Deliveries by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counts {
    pub pending: u64,
    pub in_attempt: u64,
    pub delivered: u64,
    pub dead: u64,
    pub parked: u64,
}

impl Counts {
    /// Each state's name (as `DeliveryState` spells it) and count.
    pub fn by_state(&self) -> [(&'static str, u64); 5] {
        [
            ("pending", self.pending),
            ("in_attempt", self.in_attempt),
            ("delivered", self.delivered),
            ("dead", self.dead),
            ("parked", self.parked),
        ]
    }
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;
