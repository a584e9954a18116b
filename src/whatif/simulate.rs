//! The simulation: each delivery of the window replayed under a candidate [`Policy`] against
//! its receiver's observed availability.
//!
//! Invariant: pure (no I/O, no clock, no randomness): the same [`Facts`] and policy give the
//! same outcome, bit for bit. A delivery's attempts fall at its first due time and then after
//! each of the candidate's delays in turn (jitter off); it is delivered at the first attempt
//! that falls where its receiver was up (under the [`Bound`] for unknown gaps), and dead at the
//! attempt that spends the budget. Operator actions are taken as recorded: a `parked` record
//! parks the delivery at that instant if it is still pending, and a `requeued` record gives it
//! a fresh budget if the candidate had left it in a like terminal state (delivered for a
//! redeliver, dead or parked for a recover). Attempts that would fall after the ledger's last
//! record are not simulated: such a delivery is `pending`, as it would be at that instant.

use std::collections::HashMap;
use std::time::Duration;

use super::availability::Bound;
use super::facts::{minute, Delivery, Facts, Fate, Op};
use crate::delivery::backoff::RetrySchedule;
use crate::ledger::record::Terminal;

/// A candidate retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub schedule: RetrySchedule,
    /// Attempts allowed, the first included; the schedule's own budget (its length + 1) when
    /// absent. A longer budget repeats the last delay.
    pub budget: Option<u32>,
}

impl Policy {
    pub fn new(schedule: RetrySchedule) -> Self {
        Self {
            schedule,
            budget: None,
        }
    }

    pub fn max_attempts(&self) -> u32 {
        self.budget
            .unwrap_or_else(|| self.schedule.max_attempts())
            .max(1)
    }

    /// The wait after failed attempt `n` (1-based), in microseconds.
    fn delay_us(&self, n: u32) -> i64 {
        let delays = self.schedule.delays();
        let d = delays
            .get(n as usize - 1)
            .or(delays.last())
            .copied()
            .unwrap_or(Duration::ZERO);
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
    }
}

/// What the simulation made of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Simulated {
    pub fate: Fate,
    /// When it reached `fate` (pending: when its last simulated attempt was).
    pub end_us: i64,
    pub attempts: u32,
}

/// One bound's simulation of every delivery, index-aligned with [`Facts::deliveries`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Simulation {
    pub outcomes: Vec<Simulated>,
    /// Simulated attempts per (webhook index, minute since the epoch).
    pub load: HashMap<(u32, i64), u32>,
}

/// Both bounds of a candidate policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub optimistic: Simulation,
    pub pessimistic: Simulation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Live,
    Done(Fate),
}

/// Simulates every delivery under both bounds.
pub fn simulate(facts: &Facts, policy: &Policy) -> Bounds {
    Bounds {
        optimistic: simulate_bound(facts, policy, Bound::Optimistic),
        pessimistic: simulate_bound(facts, policy, Bound::Pessimistic),
    }
}

/// Simulates every delivery under one bound.
pub fn simulate_bound(facts: &Facts, policy: &Policy, bound: Bound) -> Simulation {
    let mut sim = Simulation {
        outcomes: Vec::with_capacity(facts.deliveries.len()),
        load: HashMap::new(),
    };
    for (i, d) in facts.deliveries.iter().enumerate() {
        let ops = facts.ops.get(&(i as u32)).map_or(&[][..], Vec::as_slice);
        let outcome = one(facts, d, ops, policy, bound, &mut |minute| {
            *sim.load.entry((d.webhook, minute)).or_default() += 1;
        });
        sim.outcomes.push(outcome);
    }
    sim
}

/// One delivery's candidate life (or lives, when requeued).
fn one(
    facts: &Facts,
    d: &Delivery,
    ops: &[Op],
    policy: &Policy,
    bound: Bound,
    attempted: &mut dyn FnMut(i64),
) -> Simulated {
    let timeline = &facts.timelines[d.webhook as usize];
    let budget = policy.max_attempts();
    let mut ops = ops.iter().peekable();
    let mut standing = Standing::Live;
    let (mut next_us, mut life, mut attempts, mut end_us) =
        (d.first_due_us, 0u32, 0u32, d.first_due_us);
    loop {
        // An operator action recorded before (or at) the next attempt comes first.
        let op_first = match (standing, ops.peek()) {
            (_, None) => false,
            (Standing::Live, Some(op)) => op.at_us() <= next_us,
            (Standing::Done(_), Some(_)) => true,
        };
        if op_first {
            let Some(op) = ops.next() else { break };
            match (*op, standing) {
                (Op::Park { at_us }, Standing::Live) => {
                    standing = Standing::Done(Fate::Parked);
                    end_us = at_us;
                }
                (Op::Requeue { due_us, from, .. }, Standing::Done(fate)) if like(fate, from) => {
                    standing = Standing::Live;
                    (next_us, life) = (due_us, 0);
                }
                _ => {} // an action the candidate's path never reached
            }
            continue;
        }
        let Standing::Live = standing else { break };
        if next_us > facts.horizon_us {
            return Simulated {
                fate: Fate::Pending,
                end_us,
                attempts,
            };
        }
        attempts += 1;
        life += 1;
        end_us = next_us;
        attempted(minute(next_us));
        if timeline.up_at(next_us, bound) {
            standing = Standing::Done(Fate::Delivered);
        } else if life >= budget {
            standing = Standing::Done(Fate::Dead);
        } else {
            next_us = next_us.saturating_add(policy.delay_us(life));
        }
    }
    let fate = match standing {
        Standing::Done(fate) => fate,
        Standing::Live => Fate::Pending,
    };
    Simulated {
        fate,
        end_us,
        attempts,
    }
}

/// Whether the candidate's terminal state is the kind the recorded requeue lifted: a
/// redeliver (from delivered) applies to a delivered one, a recover (from dead or parked) to a
/// dead or parked one.
fn like(fate: Fate, from: Terminal) -> bool {
    fate.terminal()
        .is_some_and(|t| (t == Terminal::Delivered) == (from == Terminal::Delivered))
}
