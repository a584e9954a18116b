//! Auditors' SQL: one read-only query over the ledger's tables and audit views, on a reader
//! connection of its own, bounded in rows, time and memory.
//!
//! [`run`] refuses anything but a reading query ([`guard`]), then executes it with a row cap
//! (the answer says when it was cut), a time limit that interrupts DuckDB, and a per-connection
//! memory limit for intermediates (`operator_memory_limit`), so one query cannot starve the
//! writer. The same function serves `POST /v1/sql` inside the server and `hookledger sql --db`
//! on a stopped file, so the same views answer the same way in both.
//!
//! Invariant: nothing is executed but the one statement the guard passed.

pub mod cli;
pub mod guard;
pub mod pg;
pub mod render;

use std::sync::mpsc;
use std::time::Duration;

use duckdb::types::{TimeUnit, Value as Duck};
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use guard::Refusal;

/// How much one query may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rows returned at most; the answer is marked `truncated` beyond.
    pub rows: usize,
    /// Wall time before the query is interrupted.
    pub time: Duration,
    /// Memory for the query's intermediates, in MiB (DuckDB's `operator_memory_limit`).
    pub memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rows: 10_000,
            time: Duration::from_secs(10),
            memory_mib: 128,
        }
    }
}

/// A query's answer: column names and rows of JSON values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// True when more rows existed than the row cap let through.
    pub truncated: bool,
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the query ran past its time limit of {0:?} and was interrupted")]
    TimedOut(Duration),
    #[error("the query failed: {0}")]
    Failed(String),
}

/// What SQL runs on: a DuckDB connection, or a ledger store's (refused, with the store's
/// reason, when the ledger is not in DuckDB).
pub trait Target {
    fn duck(&self) -> Result<&Connection, SqlError>;
}

impl Target for &Connection {
    fn duck(&self) -> Result<&Connection, SqlError> {
        Ok(*self)
    }
}

impl Target for crate::Result<&Connection> {
    fn duck(&self) -> Result<&Connection, SqlError> {
        self.as_ref()
            .map(|c| *c)
            .map_err(|e| SqlError::Failed(e.to_string()))
    }
}

/// Checks and runs `query` on `target` (a connection used for nothing else meanwhile).
pub fn run(target: impl Target, query: &str, limits: Limits) -> Result<Answer, SqlError> {
    let conn = target.duck()?;
    guard::check(conn, query)?;
    conn.execute_batch(&format!(
        "SET operator_memory_limit = '{}MiB'",
        limits.memory_mib
    ))
    .map_err(|e| SqlError::Failed(e.to_string()))?;
    let (done, cancelled) = mpsc::channel::<()>();
    let interrupt = conn.interrupt_handle();
    let timer = std::thread::spawn(move || {
        let fired = cancelled.recv_timeout(limits.time) == Err(mpsc::RecvTimeoutError::Timeout);
        if fired {
            interrupt.interrupt();
        }
        fired
    });
    let answer = execute(conn, query, limits.rows);
    let _ = done.send(());
    let fired = timer.join().unwrap_or(false);
    match answer {
        Err(_) if fired => Err(SqlError::TimedOut(limits.time)),
        other => other,
    }
}

fn execute(conn: &Connection, query: &str, cap: usize) -> Result<Answer, SqlError> {
    let failed = |e: duckdb::Error| SqlError::Failed(e.to_string());
    let mut stmt = conn.prepare(query).map_err(failed)?;
    let mut rows = stmt.query([]).map_err(failed)?;
    let columns: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let mut out = Vec::new();
    let mut truncated = false;
    while let Some(row) = rows.next().map_err(failed)? {
        if out.len() == cap {
            truncated = true;
            break;
        }
        let values = (0..columns.len())
            .map(|i| row.get::<_, Duck>(i).map(json_value))
            .collect::<duckdb::Result<Vec<_>>>()
            .map_err(failed)?;
        out.push(values);
    }
    Ok(Answer {
        columns,
        rows: out,
        truncated,
    })
}

/// A DuckDB value as JSON: numbers as numbers (128-bit ones and decimals as strings, so no
/// digit is lost), times as RFC 3339 UTC, blobs as hex, nested values nested.
pub fn json_value(v: Duck) -> Value {
    match v {
        Duck::Null => Value::Null,
        Duck::Boolean(b) => b.into(),
        Duck::TinyInt(n) => n.into(),
        Duck::SmallInt(n) => n.into(),
        Duck::Int(n) => n.into(),
        Duck::BigInt(n) => n.into(),
        Duck::UTinyInt(n) => n.into(),
        Duck::USmallInt(n) => n.into(),
        Duck::UInt(n) => n.into(),
        Duck::UBigInt(n) => n.into(),
        Duck::HugeInt(n) => n.to_string().into(),
        Duck::UHugeInt(n) => n.to_string().into(),
        Duck::Float(f) => {
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        Duck::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Duck::Decimal(d) => d.to_string().into(),
        Duck::Timestamp(unit, n) => micros_to_rfc3339(to_micros(unit, n)),
        Duck::Time64(unit, n) => {
            let us = to_micros(unit, n);
            format!(
                "{:02}:{:02}:{:02}.{:06}",
                us / 3_600_000_000,
                us / 60_000_000 % 60,
                us / 1_000_000 % 60,
                us % 1_000_000
            )
            .into()
        }
        Duck::Date32(days) => chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
            .map_or(Value::Null, |d| d.to_string().into()),
        Duck::Interval {
            months,
            days,
            nanos,
        } => serde_json::json!({ "months": months, "days": days, "micros": nanos / 1000 }),
        Duck::Text(s) | Duck::Enum(s) => s.into(),
        Duck::Blob(b) | Duck::Geometry(b) => hex::encode(b).into(),
        Duck::List(items) | Duck::Array(items) => {
            Value::Array(items.into_iter().map(json_value).collect())
        }
        Duck::Struct(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v.clone())))
                .collect(),
        ),
        Duck::Map(entries) => Value::Array(
            entries
                .iter()
                .map(|(k, v)| Value::Array(vec![json_value(k.clone()), json_value(v.clone())]))
                .collect(),
        ),
        Duck::Union(v) => json_value(*v),
        // A type added to DuckDB later: its debug text rather than nothing.
        other => format!("{other:?}").into(),
    }
}

fn to_micros(unit: TimeUnit, n: i64) -> i64 {
    match unit {
        TimeUnit::Second => n.saturating_mul(1_000_000),
        TimeUnit::Millisecond => n.saturating_mul(1_000),
        TimeUnit::Microsecond => n,
        TimeUnit::Nanosecond => n / 1_000,
    }
}

fn micros_to_rfc3339(us: i64) -> Value {
    chrono::DateTime::from_timestamp_micros(us).map_or(Value::Null, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into()
    })
}
