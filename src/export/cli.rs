//! `hookledger export`: seals the ledger's records not exported yet into Parquet files in
//! `--out` (one run; `serve` does the same continuously with `HOOKLEDGER_EXPORT_DIR`). Reads
//! the database read-only (a stopped DuckDB file, or PostgreSQL while it serves).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::plan::Seal;
use super::{writer, Options, DEFAULT_EVERY};
use crate::cli::DbArg;
use crate::error::{LedgerError, Result};
use crate::ledger::record::Timestamp;
use crate::store::any::AnyStore;
use crate::store::duck::OpenMode;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The export directory (created if missing); a run continues after its last file.
    #[arg(long)]
    pub out: PathBuf,
    /// Into an empty directory only: start at the commit holding the first record recorded at
    /// or after this instant (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Stop at the last commit recorded before this instant (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Also write each event's body (an expunged one never).
    #[arg(long)]
    pub bodies: bool,
    /// Cut a file once it holds at least this many records (whole commits).
    #[arg(long, default_value_t = DEFAULT_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
}

fn parse_time(s: &str) -> std::result::Result<Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e}); try 2026-01-01T03:00:00Z"))
}

pub fn export(args: &ExportArgs) -> Result<ExitCode> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since >= until {
            return Err(LedgerError::Invalid(
                "--since must be before --until".into(),
            ));
        }
    }
    let store = AnyStore::open(&args.db.location()?, OpenMode::ReadOnly)?;
    let options = Options {
        every: args.every,
        bodies: args.bodies,
        since: args.since,
        until: args.until,
    };
    let written = writer::export(&store, &args.out, &options, Seal::All)?;
    for e in &written {
        println!("{}  {} records  chain {}", e.name, e.rows, e.chain_hash);
    }
    let manifest = super::manifest::Manifest::load(&args.out).map_err(LedgerError::from)?;
    println!(
        "exported {} files ({} records) to {}; it holds seq up to {}",
        written.len(),
        written.iter().map(|e| e.rows).sum::<u64>(),
        args.out.display(),
        manifest.last_seq()
    );
    Ok(ExitCode::SUCCESS)
}
