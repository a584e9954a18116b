//! `hookledger bench --scenario sqlload`: what an auditor's heavy query costs deliveries. The
//! `deliver` run twice in the same process, the second with a thread that runs a heavy query
//! through [`crate::sql::run`] (the code `POST /v1/sql` runs, on a reader connection of its
//! own, with the route's default limits) back to back for the whole run. The query is a join of
//! `delivery_history` with itself on a low-cardinality key: quadratic in the ledger, so it runs
//! until its time limit interrupts it, the worst one query can do.
//!
//! Invariant: the load thread is stopped and joined before the figures are made, and a query
//! that neither answers nor is interrupted fails the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{LedgerError, Result};
use crate::ledger::Ledger;
use crate::sql::{self, Limits, SqlError};

/// The heavy query: every pair of records with the same attempt number.
pub const HEAVY: &str =
    "SELECT count(*) AS pairs FROM delivery_history a JOIN delivery_history b ON a.attempt = b.attempt";

/// Queries run back to back on a thread of their own until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Ran>>,
}

/// What the load did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ran {
    pub answered: u64,
    pub interrupted: u64,
}

impl Load {
    pub fn start(ledger: Arc<Ledger>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ran = Ran::default();
            while !flag.load(Ordering::Relaxed) {
                let reader = ledger.reader()?;
                match sql::run(reader.connection(), HEAVY, Limits::default()) {
                    Ok(_) => ran.answered += 1,
                    Err(SqlError::TimedOut(_)) => ran.interrupted += 1,
                    Err(e) => return Err(LedgerError::Invalid(format!("sqlload: {e}"))),
                }
            }
            Ok(ran)
        });
        Self { stop, thread }
    }

    /// Stops after the query in flight (at most its time limit) and answers what ran.
    pub fn stop(self) -> Result<Ran> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| LedgerError::Invalid("the sqlload thread panicked".into()))?
    }
}
