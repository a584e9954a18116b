//! Auditors' SQL on a PostgreSQL ledger: the same [`Answer`] as DuckDB's [`super::run`], from
//! PostgreSQL's own guards instead of a plan check.
//!
//! A query runs only as an auditor role (`schema/pg/auditor.sql`, [`AUDITOR_SQL`]): one that
//! [`check_role`] finds cannot write any table of the ledger's schema, cannot read the settings,
//! the checkpoints or `webhook_changes.secret` / `token_digest`, is no superuser and holds none
//! of the server-file or program roles. Then, in a `READ ONLY` transaction with
//! `statement_timeout` and `work_mem` set to the [`Limits`]:
//! - the text is wrapped as a subquery, `SELECT ... FROM (\n<query>\n) AS q(c0, c1, ...)`, so
//!   only a query expression parses (no `SET`, `CALL`, `COPY`, transaction control, or a
//!   data-modifying CTE, which PostgreSQL allows only at the top level);
//! - it is prepared with the extended protocol, which refuses a second statement;
//! - columns of types decoded here natively are read as they are, any other as `::text`.
//!
//! Invariant: nothing runs as a role [`check_role`] did not pass, and nothing runs outside a
//! read-only transaction that is rolled back.

use std::time::Duration;

use postgres::types::Type;
use postgres::{Client, NoTls, Row};
use serde_json::Value;

use super::{Answer, Limits, Refusal, SqlError};

/// The grants an administrator runs to make the auditor role (see the file's comment).
pub const AUDITOR_SQL: &str = include_str!("../../schema/pg/auditor.sql");

/// What [`check_role`] asks of the connected role, one boolean per way it could do harm.
const ROLE_CHECK: &str = "
SELECT r.rolsuper,
       has_column_privilege('webhook_changes', 'secret', 'SELECT')
           OR has_column_privilege('webhook_changes', 'token_digest', 'SELECT'),
       has_table_privilege('settings', 'SELECT')
           OR has_table_privilege('projection_checkpoints', 'SELECT'),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p')
                 AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')),
       has_schema_privilege(current_schema(), 'CREATE'),
       pg_has_role('pg_read_server_files', 'MEMBER')
           OR pg_has_role('pg_write_server_files', 'MEMBER')
           OR pg_has_role('pg_execute_server_program', 'MEMBER')
FROM pg_roles r WHERE r.rolname = current_user";

/// What each [`ROLE_CHECK`] column means when true.
const ROLE_HARMS: [&str; 6] = [
    "is a superuser",
    "can read webhook_changes.secret or token_digest",
    "can read the settings or the checkpoints",
    "can write a table of the ledger's schema",
    "can create objects in the ledger's schema",
    "can read or write server files or run programs",
];

/// Refuses a role that could write or read a secret; `Ok` names the role.
pub fn check_role(c: &mut impl postgres::GenericClient) -> Result<String, String> {
    let row = c
        .query_one(ROLE_CHECK, &[])
        .map_err(|e| format!("cannot check the role: {}", message(&e)))?;
    let user: String = c
        .query_one("SELECT current_user::text", &[])
        .map_err(|e| message(&e))?
        .get(0);
    let harms: Vec<&str> = ROLE_HARMS
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<_, bool>(*i))
        .map(|(_, h)| *h)
        .collect();
    if harms.is_empty() {
        Ok(user)
    } else {
        Err(format!(
            "the role `{user}` {}: auditors' SQL runs only as a read-only role (schema/pg/auditor.sql)",
            harms.join(", ")
        ))
    }
}

/// Connects to `url` and checks its role (for `serve`'s start-up and the command).
pub fn connect_checked(url: &str) -> Result<Client, String> {
    let mut c = Client::connect(url, NoTls)
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", message(&e)))?;
    check_role(&mut c)?;
    Ok(c)
}

/// Runs `query` as the auditor role `url` connects as.
pub fn run(url: &str, query: &str, limits: Limits) -> Result<Answer, SqlError> {
    let mut c = connect_checked(url).map_err(SqlError::Failed)?;
    run_on(&mut c, query, limits)
}

/// Runs `query` on a connection [`check_role`] has passed.
pub fn run_on(c: &mut Client, query: &str, limits: Limits) -> Result<Answer, SqlError> {
    let inner = query
        .trim()
        .trim_end_matches(|ch: char| ch == ';' || ch.is_whitespace());
    if inner.is_empty() {
        return Err(Refusal::Empty.into());
    }
    let mut tx = c
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(|e| SqlError::Failed(message(&e)))?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL work_mem = '{}MB'",
        limits.time.as_millis().max(1),
        limits.memory_mib.max(1)
    ))
    .map_err(|e| SqlError::Failed(message(&e)))?;
    check_role(&mut tx).map_err(SqlError::Failed)?;
    let probe = tx
        .prepare(&format!("SELECT * FROM (\n{inner}\n) AS hookledger_q"))
        .map_err(|e| refusal(&e, limits.time))?;
    let columns: Vec<(String, Type)> = probe
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let cap = limits.rows.saturating_add(1);
    let select = if columns.is_empty() {
        format!("SELECT 1 FROM (\n{inner}\n) AS hookledger_q LIMIT {cap}")
    } else {
        let list: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                if native(t) {
                    format!("c{i}")
                } else {
                    format!("c{i}::text")
                }
            })
            .collect();
        let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
        format!(
            "SELECT {} FROM (\n{inner}\n) AS hookledger_q({}) LIMIT {cap}",
            list.join(", "),
            aliases.join(", ")
        )
    };
    let rows = tx
        .query(&select, &[])
        .map_err(|e| refusal(&e, limits.time))?;
    let truncated = rows.len() > limits.rows;
    let out = rows
        .iter()
        .take(limits.rows)
        .map(|row| {
            (0..columns.len())
                .map(|i| json_value(row, i, &columns[i].1))
                .collect()
        })
        .collect();
    let _ = tx.rollback();
    Ok(Answer {
        columns: columns.into_iter().map(|(n, _)| n).collect(),
        rows: out,
        truncated,
    })
}

/// Types [`json_value`] decodes itself; anything else is cast to text by the query.
fn native(t: &Type) -> bool {
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::TEXT,
        Type::VARCHAR,
        Type::NAME,
        Type::BPCHAR,
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMP,
        Type::BYTEA,
    ]
    .contains(t)
}

/// One value as JSON, the way DuckDB's answer shows it: times as RFC 3339 UTC, bytes as hex.
fn json_value(row: &Row, i: usize, t: &Type) -> Value {
    fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Option<T> {
        row.try_get::<_, Option<T>>(i).ok().flatten()
    }
    let v = match *t {
        Type::BOOL => get::<bool>(row, i).map(Value::from),
        Type::INT2 => get::<i16>(row, i).map(Value::from),
        Type::INT4 => get::<i32>(row, i).map(Value::from),
        Type::INT8 => get::<i64>(row, i).map(Value::from),
        Type::FLOAT4 => get::<f32>(row, i).map(|f| Value::from(f64::from(f))),
        Type::FLOAT8 => get::<f64>(row, i).map(Value::from),
        Type::UUID => get::<uuid::Uuid>(row, i).map(|u| u.to_string().into()),
        Type::TIMESTAMPTZ => get::<chrono::DateTime<chrono::Utc>>(row, i).map(rfc3339),
        Type::TIMESTAMP => get::<chrono::NaiveDateTime>(row, i).map(|t| rfc3339(t.and_utc())),
        Type::BYTEA => get::<Vec<u8>>(row, i).map(|b| hex::encode(b).into()),
        _ => get::<String>(row, i).map(Value::from),
    };
    v.unwrap_or(Value::Null)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> Value {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        .into()
}

/// A PostgreSQL error as what it means for the query: cancelled by the timeout, refused by a
/// guard (privilege, read-only transaction, not a single query expression), or failed.
fn refusal(e: &postgres::Error, time: Duration) -> SqlError {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::QUERY_CANCELED => SqlError::TimedOut(time),
        Some(c)
            if *c == SqlState::INSUFFICIENT_PRIVILEGE
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                || *c == SqlState::SYNTAX_ERROR
                || *c == SqlState::FEATURE_NOT_SUPPORTED
                || *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::UNDEFINED_FUNCTION =>
        {
            Refusal::Denied(message(e)).into()
        }
        _ => SqlError::Failed(message(e)),
    }
}

/// The server's message when there is one (the client's Display says only "db error").
fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// The variable naming the auditor role's connection for `POST /v1/sql` on a PostgreSQL ledger.
pub const SQL_URL: &str = "HOOKLEDGER_SQL_URL";

/// `serve`'s auditor connection: [`SQL_URL`] checked at start (a role that could write or read
/// a secret stops the start, naming the variable), `None` when it is not set. It applies only
/// to a PostgreSQL ledger; on DuckDB the route reads through the plan guard instead.
pub fn from_env(
    location: &crate::store::any::Location,
) -> crate::Result<Option<std::sync::Arc<str>>> {
    use crate::error::LedgerError;
    use crate::store::any::Location;
    let Some(url) = std::env::var(SQL_URL).ok().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    if let Location::Duck(_) = location {
        return Err(LedgerError::Invalid(format!(
            "{SQL_URL}: set for a DuckDB ledger; it names the auditor role of a PostgreSQL one"
        )));
    }
    let checked = url.clone();
    std::thread::spawn(move || connect_checked(&checked).map(drop))
        .join()
        .map_err(|_| LedgerError::Invalid(format!("{SQL_URL}: the check panicked")))?
        .map_err(|e| LedgerError::Invalid(format!("{SQL_URL}: {e}")))?;
    Ok(Some(url.into()))
}
