//! `hookledger sql`: one read-only query, against a stopped file (`--db`, opened read-only) or a
//! running server (`--server URL`, through `POST /v1/sql` with `HOOKLEDGER_API_TOKEN`). Both
//! run the same [`super::run`], so the answer is the same wherever it is asked. On PostgreSQL,
//! `--store URL` runs it as that URL's auditor role ([`super::pg`]), as the server's route does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::render::{render, Format};
use super::{Answer, Limits};
use crate::error::{LedgerError, Result};
use crate::store::duck::{DuckStore, OpenMode};

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query: one SELECT over the ledger's tables and audit views.
    pub query: String,
    /// A stopped database file, opened read-only.
    #[arg(long, conflicts_with_all = ["server", "store"], required_unless_present_any = ["server", "store"])]
    pub db: Option<PathBuf>,
    /// A PostgreSQL ledger, connected to as a read-only auditor role (schema/pg/auditor.sql);
    /// a role that could write or read a secret is refused.
    #[arg(long, conflicts_with = "server")]
    pub store: Option<String>,
    /// A running server's base URL (e.g. http://127.0.0.1:8080); the token is read from
    /// HOOKLEDGER_API_TOKEN.
    #[arg(long)]
    pub server: Option<String>,
    /// How to print the answer.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Rows at most (the answer says when it was cut).
    #[arg(long, default_value_t = Limits::default().rows)]
    pub limit: usize,
}

pub fn sql(args: &SqlArgs) -> Result<ExitCode> {
    let limits = Limits {
        rows: args.limit,
        ..Limits::default()
    };
    let answer = match (&args.db, &args.server) {
        _ if args.store.is_some() => {
            let url = args.store.clone().unwrap_or_default();
            let query = args.query.clone();
            // The sync client runs its own runtime: not inside another one.
            std::thread::spawn(move || super::pg::run(&url, &query, limits))
                .join()
                .map_err(|_| LedgerError::Invalid("the query thread panicked".into()))?
                .map_err(|e| LedgerError::Invalid(format!("--store: {e}")))?
        }
        (Some(db), _) => {
            let store = DuckStore::open(db, OpenMode::ReadOnly)?;
            super::run(store.connection(), &args.query, limits)
                .map_err(|e| LedgerError::Invalid(e.to_string()))?
        }
        (None, Some(server)) => ask_server(server, &args.query, args.limit)?,
        (None, None) => {
            return Err(LedgerError::Invalid(
                "give --db PATH, --store URL or --server URL".into(),
            ))
        }
    };
    print!("{}", render(&answer, args.format));
    Ok(ExitCode::SUCCESS)
}

fn ask_server(server: &str, query: &str, limit: usize) -> Result<Answer> {
    let invalid = |m: String| LedgerError::Invalid(m);
    let token = std::env::var(crate::serve::API_TOKEN)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "--server needs the API token in {}",
                crate::serve::API_TOKEN
            ))
        })?;
    let url = format!("{}/v1/sql", server.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| invalid(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let response = client
            .post(&url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "query": query, "limit": limit }).to_string())
            .send()
            .await
            .map_err(|e| invalid(format!("--server {server}: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| invalid(format!("--server {server}: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("--server {server}: unreadable answer: {e}")))?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            return Err(invalid(format!(
                "the server refused the query ({status}): {message}"
            )));
        }
        serde_json::from_value::<Answer>(body)
            .map_err(|e| invalid(format!("--server {server}: unexpected answer: {e}")))
    })
}
