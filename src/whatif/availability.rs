//! Receiver availability as the ledger observed it: per webhook, a timeline of runs of
//! observations in the same state (up: a 2xx; down: a failure, by error class).
//!
//! Invariant: pure (no I/O, no clock); runs are in time order, never overlap, and two adjacent
//! runs differ in what they saw. Between two observations the state is not known, so a lookup
//! never invents one: inside a run (or between two runs that agree on up or down) the answer is
//! that state; across a change, or before the first and after the last observation, the
//! [`Bound`] decides: [`Bound::Optimistic`] takes the switch to have happened right before the
//! later observation if that is down (right after the earlier one if that is up), so the gap is
//! up, and [`Bound::Pessimistic`] the other way round, so the gap is down.

use serde::Serialize;

use crate::ledger::record::ErrorClass;

/// What one attempt saw of its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "state", content = "error_class", rename_all = "snake_case")]
pub enum Seen {
    Up,
    Down(ErrorClass),
}

impl Seen {
    pub fn is_up(self) -> bool {
        matches!(self, Seen::Up)
    }
}

/// Which side of the unknown gaps a simulation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Unknown gaps are up: the most a candidate policy could deliver.
    Optimistic,
    /// Unknown gaps are down: the least.
    Pessimistic,
}

/// Consecutive observations that saw the same thing, from `first_us` to `last_us` (microseconds
/// since the epoch, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first_us: i64,
    pub last_us: i64,
    pub seen: Seen,
    pub observations: u32,
}

/// One receiver's observed availability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    runs: Vec<Run>,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an observation. Observations come in time order (the ledger's `recorded_at` never
    /// goes backwards); an earlier one is taken as happening at the last observed instant.
    pub fn observe(&mut self, at_us: i64, seen: Seen) {
        match self.runs.last_mut() {
            Some(last) if last.seen == seen => {
                last.last_us = last.last_us.max(at_us);
                last.observations = last.observations.saturating_add(1);
            }
            Some(last) => {
                let at_us = at_us.max(last.last_us);
                self.runs.push(Run {
                    first_us: at_us,
                    last_us: at_us,
                    seen,
                    observations: 1,
                });
            }
            None => self.runs.push(Run {
                first_us: at_us,
                last_us: at_us,
                seen,
                observations: 1,
            }),
        }
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Whether the receiver was up at `t_us`, under `bound` where the ledger does not know.
    pub fn up_at(&self, t_us: i64, bound: Bound) -> bool {
        let unknown = bound == Bound::Optimistic;
        // The first run that starts after t: t lies in the run before it or in the gap after.
        let after = self.runs.partition_point(|r| r.first_us <= t_us);
        let Some(before) = after.checked_sub(1).map(|i| &self.runs[i]) else {
            return unknown; // before the first observation
        };
        if t_us <= before.last_us {
            return before.seen.is_up();
        }
        match self.runs.get(after) {
            None => unknown, // after the last observation
            Some(next) if next.seen.is_up() == before.seen.is_up() => before.seen.is_up(),
            Some(_) => unknown,
        }
    }

    /// Whether `t_us` falls where the ledger does not know the state (the bounds disagree).
    pub fn is_unknown_at(&self, t_us: i64) -> bool {
        self.up_at(t_us, Bound::Optimistic) != self.up_at(t_us, Bound::Pessimistic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Seen = Seen::Down(ErrorClass::Status);

    fn timeline(obs: &[(i64, Seen)]) -> Timeline {
        let mut t = Timeline::new();
        for &(at, seen) in obs {
            t.observe(at, seen);
        }
        t
    }

    #[test]
    fn same_state_observations_merge_into_one_run() {
        let t = timeline(&[
            (10, Seen::Up),
            (20, Seen::Up),
            (30, DOWN),
            (40, DOWN),
            (50, Seen::Up),
        ]);
        let spans: Vec<_> = t
            .runs()
            .iter()
            .map(|r| (r.first_us, r.last_us, r.observations))
            .collect();
        assert_eq!(spans, [(10, 20, 2), (30, 40, 2), (50, 50, 1)]);
        // Two failures of different classes are two runs, both down.
        let t = timeline(&[(1, DOWN), (2, Seen::Down(ErrorClass::Timeout))]);
        assert_eq!(t.runs().len(), 2);
        assert!(!t.up_at(1, Bound::Optimistic) && !t.up_at(2, Bound::Optimistic));
    }

    #[test]
    fn inside_runs_and_agreeing_gaps_are_known_changes_are_not() {
        let t = timeline(&[
            (10, Seen::Up),
            (20, Seen::Up),
            (30, DOWN),
            (40, DOWN),
            (50, Seen::Up),
        ]);
        for bound in [Bound::Optimistic, Bound::Pessimistic] {
            assert!(t.up_at(10, bound) && t.up_at(15, bound) && t.up_at(20, bound));
            assert!(!t.up_at(30, bound) && !t.up_at(35, bound) && !t.up_at(40, bound));
            assert!(t.up_at(50, bound));
        }
        for gap in [21, 25, 29, 41, 49] {
            assert!(t.up_at(gap, Bound::Optimistic), "{gap}");
            assert!(!t.up_at(gap, Bound::Pessimistic), "{gap}");
            assert!(t.is_unknown_at(gap));
        }
        let split = timeline(&[(10, DOWN), (20, Seen::Down(ErrorClass::Connect))]);
        assert!(
            !split.up_at(15, Bound::Optimistic),
            "down on both sides is down"
        );
    }

    #[test]
    fn before_the_first_and_after_the_last_observation_are_unknown() {
        let t = timeline(&[(10, Seen::Up), (20, Seen::Up)]);
        for t_us in [9, 21] {
            assert!(t.up_at(t_us, Bound::Optimistic));
            assert!(!t.up_at(t_us, Bound::Pessimistic));
        }
        let empty = Timeline::new();
        assert!(empty.up_at(0, Bound::Optimistic) && !empty.up_at(0, Bound::Pessimistic));
    }
}
