//! The `hookledger` command line: argument parsing (clap) and the inspection commands
//! `state`, `history`, `verify`, `head` and `whatif`, which open the database read-only: a
//! DuckDB file (`--db`) or a PostgreSQL database (`--store postgres://...`, or
//! `HOOKLEDGER_DATABASE_URL`; it wins over `--db`).
//!
//! Exit codes: 0 success, 1 `verify` found a problem, 2 an error (a message names the cause).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, WebhookId};
use crate::ledger::record::{Record, RecordBody, Timestamp};
use crate::ledger::view::QueueView;
use crate::ledger::{checkpoint, history, verify};
use crate::store::any::{AnyStore, Location};
use crate::store::duck::OpenMode;
use crate::store::Store as _;

#[derive(Debug, Parser)]
#[command(
    name = "hookledger",
    version,
    about = "An event-sourced webhook delivery ledger"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: the ledger, the delivery engine and the HTTP API.
    Serve(ServeArgs),
    /// Print the queue reconstructed from the ledger (now, or at a point in the past).
    State(StateArgs),
    /// Print one delivery's records in order: its audit trail.
    History(HistoryArgs),
    /// Re-fold the ledger from scratch and check seqs, transitions, the hash chain and every
    /// projection checkpoint.
    Verify(VerifyArgs),
    /// Print the ledger's head (last seq, chain hash, commit time) for an outside system to
    /// keep; `verify --expect-head` checks the log still contains it.
    Head(HeadArgs),
    /// Measure the ledger on this machine (figures with same-run baselines).
    Bench(BenchArgs),
    /// The `history` bench's child: open a file, print open-to-ready and memory as JSON.
    #[command(hide = true)]
    BenchOpen(BenchOpenArgs),
    /// Replay the ledger's real failures under another retry schedule (reads only).
    Whatif(WhatifArgs),
    /// Run one read-only SQL query over the ledger's tables and audit views, on a stopped file
    /// (`--db`) or through a running server (`--server`).
    Sql(crate::sql::cli::SqlArgs),
    /// Erase one event's body now (a stopped database; the API's DELETE /v1/events/{id}/body
    /// while serving), recording who, when and why as a chained fact.
    Expunge(crate::erasure::cli::ExpungeArgs),
    /// Seal the ledger's records not exported yet into immutable Parquet files in a directory
    /// (`serve` does it continuously with HOOKLEDGER_EXPORT_DIR).
    Export(crate::export::cli::ExportArgs),
}

#[derive(Debug, Args)]
pub struct WhatifArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The candidate retry schedule: delays between attempts, e.g. `5s,1m,10m,1h`.
    #[arg(long, value_parser = parse_schedule)]
    pub schedule: crate::delivery::backoff::RetrySchedule,
    /// Attempts allowed, the first included (default: the schedule's length + 1).
    #[arg(long)]
    pub budget: Option<u32>,
    /// Deliveries enqueued at or after this instant (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    pub since: Option<Timestamp>,
    /// Deliveries enqueued before this instant (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    pub until: Option<Timestamp>,
    /// Only this webhook (a UUID).
    #[arg(long)]
    pub webhook: Option<WebhookId>,
    /// List at most this many deliveries whose fate changes (all are counted).
    #[arg(long, default_value_t = crate::whatif::DEFAULT_LIMIT)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The address the HTTP API listens on.
    #[arg(long, env = "HOOKLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The largest accepted request body, in bytes (event payloads).
    #[arg(long, env = "HOOKLEDGER_MAX_PAYLOAD", default_value_t = crate::api::DEFAULT_MAX_PAYLOAD)]
    pub max_payload: usize,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which scenario (all runs every one).
    #[arg(long, default_value = "all", value_parser = clap::builder::PossibleValuesParser::new(crate::bench::SCENARIOS))]
    pub scenario: String,
    /// Rebuild sizes in records, comma-separated (e.g. 1000000,10000000); for `history`,
    /// its two ledger sizes (default 1000000,10000000).
    #[arg(long, value_delimiter = ',')]
    pub records: Option<Vec<u64>>,
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub whatif_records: Vec<u64>,
    /// Events published by deliver, retry and disk (and POSTs made by baseline).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Webhooks every event fans out to.
    #[arg(long, default_value_t = 1)]
    pub webhooks: usize,
    /// Attempts in flight at once (and the baseline's concurrent POSTs).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Concurrent publishers in the full-rate runs.
    #[arg(long, default_value_t = 512)]
    pub publishers: usize,
    /// How long the receiver waits before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Events per second `latency` publishes at.
    #[arg(long, default_value = "200", value_parser = positive_finite)]
    pub rate: f64,
    /// How long `latency` publishes for, in seconds.
    #[arg(long, default_value = "10", value_parser = positive_finite)]
    pub seconds: f64,
    /// Also run `commit` and `deliver` on this PostgreSQL server (each in a fresh schema).
    #[arg(long)]
    pub store: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A number above zero (clap names the flag in its error).
fn positive_finite(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a number above 0".into()),
        Err(_) => Err("not a number".into()),
    }
}

#[derive(Debug, Args)]
pub struct BenchOpenArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[arg(long)]
    pub no_checkpoints: bool,
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// The DuckDB database file.
    #[arg(long, env = "HOOKLEDGER_DB", default_value = "hookledger.duckdb")]
    pub db: PathBuf,
    /// A PostgreSQL database instead of the file (`postgres://user:password@host:port/db`).
    #[arg(long, env = crate::store::any::DATABASE_URL, hide_env_values = true)]
    pub store: Option<String>,
}

impl DbArg {
    /// The store these flags name.
    pub fn location(&self) -> Result<Location> {
        Location::from_flags(self.db.clone(), self.store.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Fail unless the log contains this head (`SEQ:HASH`, as `hookledger head` prints it).
    #[arg(long, value_parser = parse_anchor)]
    pub expect_head: Option<(u64, crate::ledger::chain::Hash)>,
    /// Check an export directory's files against the chain they carry instead of the database
    /// (with `--expect-head`, the anchor must be one of their batches).
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HeadArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_anchor(s: &str) -> std::result::Result<(u64, crate::ledger::chain::Hash), String> {
    crate::ledger::checkpoint::Head::parse_anchor(s)
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Reconstruct the state as of this instant (RFC 3339, e.g. 2026-01-01T03:00:00Z).
    #[arg(long, value_parser = parse_rfc3339, conflicts_with = "seq")]
    pub at: Option<Timestamp>,
    /// Reconstruct the state right after this record.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The webhook id (a UUID).
    #[arg(long)]
    pub webhook: WebhookId,
    /// The event id: the producer's id (an old event's UUID), in the webhook's app.
    #[arg(long)]
    pub event: String,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_rfc3339(s: &str) -> std::result::Result<Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e}); try 2026-01-01T03:00:00Z"))
}

fn parse_schedule(s: &str) -> std::result::Result<crate::delivery::backoff::RetrySchedule, String> {
    crate::delivery::backoff::RetrySchedule::parse(s).map_err(|e| e.to_string())
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::State(args) => state(&args),
        Command::History(args) => show_history(&args),
        Command::Whatif(args) => whatif(&args),
        Command::Serve(args) => {
            init_logging();
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| LedgerError::Invalid(format!("cannot start the runtime: {e}")))?;
            runtime.block_on(crate::serve::serve(crate::serve::ServeOptions {
                location: args.db.location()?,
                listen: args.listen,
                max_payload: args.max_payload,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let options = crate::bench::Options {
                scenario: args.scenario,
                records: args.records.clone().unwrap_or_else(|| vec![1_000_000]),
                history_records: args.records.unwrap_or_else(|| vec![1_000_000, 10_000_000]),
                whatif_records: args.whatif_records,
                events: args.events,
                webhooks: args.webhooks,
                concurrency: args.concurrency,
                publishers: args.publishers,
                receiver_latency: std::time::Duration::from_millis(args.latency_ms),
                rate: args.rate,
                seconds: args.seconds,
                store: args.store,
                ..crate::bench::Options::default()
            };
            let figures = crate::bench::run(&options, &mut |p| eprintln!("{p}"))?;
            if args.json {
                println!("{}", to_json(&figures)?);
            } else {
                print!("{}", crate::bench::render(&figures));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Head(args) => show_head(&args),
        Command::Sql(args) => crate::sql::cli::sql(&args),
        Command::Expunge(args) => crate::erasure::cli::expunge(&args),
        Command::BenchOpen(args) => {
            crate::bench::history::open_child(&args.db.db, !args.no_checkpoints)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => crate::export::cli::export(&args),
        Command::Verify(args) if args.export.is_some() => {
            let dir = args.export.as_deref().unwrap_or(std::path::Path::new("."));
            let report = crate::export::verify::verify(dir, args.expect_head)?;
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Verify(args) => {
            let options = verify::Options {
                expect_head: args.expect_head,
            };
            let verdict = verify::verify_with(&open_read_only(&args.db)?, None, &options)?;
            println!("{verdict}");
            Ok(if verdict.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `serve` logs to stderr, filtered by `RUST_LOG` (default `info`); stdout keeps the few lines
/// scripts read (where it listens, a first-start token).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn open_read_only(db: &DbArg) -> Result<AnyStore> {
    AnyStore::open(&db.location()?, OpenMode::ReadOnly)
}

fn state(args: &StateArgs) -> Result<ExitCode> {
    let store = open_read_only(&args.db)?;
    let upto = match (args.at, args.seq) {
        (Some(at), _) => checkpoint::seq_at_time(&store, at)?,
        (None, Some(seq)) => seq,
        (None, None) => u64::MAX,
    };
    let view = QueueView::of(&checkpoint::state_at(&store, upto)?);
    if args.json {
        println!("{}", to_json(&view)?);
    } else {
        print!("{}", render_state(&view));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_head(args: &HeadArgs) -> Result<ExitCode> {
    let store = open_read_only(&args.db)?;
    let head = checkpoint::head(&store, checkpoint::newest_seq(&store)?)?;
    let at = head.committed_at.map_or("-".to_owned(), |t| t.to_rfc3339());
    if args.json {
        let v = serde_json::json!({
            "seq": head.seq, "chain_hash": hex::encode(head.hash),
            "committed_at": head.committed_at, "anchor": head.anchor(),
        });
        println!("{}", to_json(&v)?);
    } else {
        println!("{}\ncommitted at {at}", head.anchor());
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| LedgerError::Invalid(e.to_string()))
}

/// The text form of `state`: counts by state, then the live rows.
pub fn render_state(view: &QueueView) -> String {
    let c = view.counts;
    let as_of = view.as_of.map_or("-".to_owned(), |t| t.to_rfc3339());
    let mut out = format!(
        "as of seq {} ({as_of})\npending {}  in_attempt {}  delivered {}  dead {}  parked {}\n",
        view.as_of_seq, c.pending, c.in_attempt, c.delivered, c.dead, c.parked
    );
    if !view.live.is_empty() {
        out.push_str("webhook_id                            event_id                              state       attempts  due_at\n");
    }
    for row in &view.live {
        let due = row.due_at.map_or("-".to_owned(), |t| t.to_rfc3339());
        out.push_str(&format!(
            "{}  {}  {:<10}  {:>8}  {due}\n",
            row.webhook_id, row.event_id, row.state, row.attempts
        ));
    }
    out
}

fn whatif(args: &WhatifArgs) -> Result<ExitCode> {
    let scope = crate::whatif::Scope {
        since: args.since,
        until: args.until,
        webhook: args.webhook,
    };
    let policy = crate::whatif::Policy {
        schedule: args.schedule.clone(),
        budget: args.budget,
    };
    let query = crate::whatif::Query::new(scope, policy, args.limit)
        .map_err(|e| LedgerError::Invalid(format!("--{} {}", e.field, e.message)))?;
    let store = open_read_only(&args.db)?;
    let report = crate::whatif::run(&store, &query, &mut |p| {
        eprintln!("whatif: read {} of {} records", p.read, p.total)
    })?;
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        print!("{}", crate::whatif::render::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_history(args: &HistoryArgs) -> Result<ExitCode> {
    let store = open_read_only(&args.db)?;
    let producer = crate::ids::ProducerId::parse(&args.event).ok_or_else(|| {
        LedgerError::Invalid(format!(
            "--event `{}` is not 1 to 256 characters of [A-Za-z0-9._:~-]",
            args.event
        ))
    })?;
    let registry = crate::registry::Registry::fold_all(store.changes()?)?;
    let event = producer.key(registry.app_of(&args.webhook));
    let records = history(&store, DeliveryKey::new(args.webhook, event))?;
    if records.is_empty() {
        return Err(LedgerError::Invalid(format!(
            "no records for webhook {} and event {}",
            args.webhook, args.event
        )));
    }
    if args.json {
        println!("{}", to_json(&records)?);
    } else {
        for r in &records {
            println!("{}", render_record(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One record as a line: seq, time, kind and what it carries.
pub fn render_record(r: &Record) -> String {
    let detail = match &r.body {
        RecordBody::Enqueued { due_at } => format!("due {}", due_at.to_rfc3339()),
        RecordBody::Attempted { attempt } => format!("attempt {attempt}"),
        RecordBody::Delivered {
            attempt,
            status,
            duration_ms,
        } => format!("attempt {attempt}: HTTP {status} in {duration_ms} ms"),
        RecordBody::Failed(f) => format!(
            "attempt {}: {} ({}) in {} ms; next due {}",
            f.attempt,
            f.error_class,
            f.error,
            f.duration_ms,
            f.next_due_at.to_rfc3339()
        ),
        RecordBody::DeadParked { reason } | RecordBody::Parked { reason } => reason.clone(),
        RecordBody::Requeued {
            from,
            due_at,
            reason,
        } => format!(
            "from {}: {reason}; due {}",
            from.as_str(),
            due_at.to_rfc3339()
        ),
    };
    format!(
        "{:>6}  {}  {:<11}  {detail}",
        r.seq,
        r.recorded_at.to_rfc3339(),
        r.kind().as_str()
    )
}
