//! `hookledger expunge EVENT_ID --reason TEXT [--db PATH | --store URL]`: erases one event's
//! body in a stopped ledger (it is opened read-write, so not while `serve` runs: use
//! `DELETE /v1/events/{id}/body` then). The same commit as the route: the fact (actor
//! `operator`), the body's removal, its pending deliveries parked.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::clock::SystemClock;
use crate::error::{LedgerError, Result};
use crate::ids::{AppUid, ProducerId};
use crate::ledger::expunge::{ExpungeOrder, OPERATOR};
use crate::ledger::writer::Commit;
use crate::ledger::{Ledger, LedgerOptions};
use crate::store::any::Location;

#[derive(Debug, Args)]
pub struct ExpungeArgs {
    #[command(flatten)]
    pub db: crate::cli::DbArg,
    /// The event: the producer's id in the default app (a UUID is its own id).
    pub event_id: String,
    /// Why (kept in the chained fact; 1 to 1,000 characters).
    #[arg(long)]
    pub reason: String,
}

pub fn expunge(args: &ExpungeArgs) -> Result<ExitCode> {
    let event_id = ProducerId::parse(&args.event_id)
        .map(|p| p.key(&AppUid::default_app()))
        .ok_or_else(|| {
            LedgerError::Invalid(format!(
                "EVENT_ID `{}` must be 1 to 256 characters of [A-Za-z0-9._:~-]",
                args.event_id
            ))
        })?;
    let reason = args.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(LedgerError::Invalid(
            "--reason must be 1 to 1,000 characters".into(),
        ));
    }
    let location = args.db.location()?;
    if let Location::Duck(path) = &location {
        if !path.exists() {
            return Err(LedgerError::NotFound { path: path.clone() });
        }
    }
    let ledger = Ledger::open_at(
        &location,
        Arc::new(SystemClock),
        &LedgerOptions::from_env()?,
    )?;
    let receipt = ledger.commit_blocking(Commit {
        expunge: vec![ExpungeOrder {
            event_id,
            actor: OPERATOR.to_owned(),
            reason: reason.to_owned(),
        }],
        ..Commit::default()
    })?;
    println!(
        "expunged the body of event {} (fact {}); {} pending deliveries parked",
        args.event_id,
        receipt.expunges.first().copied().unwrap_or(0),
        receipt.seqs.len()
    );
    ledger.close();
    Ok(ExitCode::SUCCESS)
}
