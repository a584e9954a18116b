//! The read-only guard of auditors' SQL: a query runs only if it is one statement whose
//! physical plan reads nothing but the ledger's own tables, and no secret column.
//!
//! The check is made on what DuckDB will execute, not on the query's text: the statement is
//! counted by DuckDB's own parser, then planned with `EXPLAIN (FORMAT JSON)` twice, optimised
//! and not (planning runs nothing). In both plans every operator must be one that only reads,
//! every scan must be of an allowed table, and a plan that scans `webhook_changes` may not name
//! its `secret` or `token_digest` column anywhere (projected, or filtered on: a filter is an oracle, even one the
//! optimiser answers from statistics). Views, CTEs and subqueries are expanded in the plan, so
//! they cannot hide a write or a file read. Anything not known to be safe is refused: the guard
//! fails closed (a literal `'secret'` in a query over the registry is refused too), and a
//! refusal names the operator, table, function or column that caused it.
//!
//! Invariant: [`check`] returns `Ok` only for a single statement whose plan passed; the caller
//! executes exactly that string on the same connection, so nothing else can run.

use std::ffi::{c_char, CString};
use std::sync::Mutex;

use duckdb::{ffi, Connection};
use serde_json::Value;

/// Why a query was refused (the message is shown to the auditor).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the query is empty")]
    Empty,
    #[error("one statement at a time: this text holds {0}")]
    Statements(usize),
    #[error("the query does not parse: {0}")]
    Parse(String),
    #[error("the query cannot be planned: {0}")]
    Plan(String),
    #[error("only reading queries run here: the plan has {0}")]
    Operator(String),
    #[error("`{0}` is not one of the ledger's tables that can be read here")]
    Table(String),
    #[error("the table function `{0}` reads outside the ledger")]
    Function(String),
    #[error(
        "`webhook_changes.secret` and `token_digest` are never readable (not even in a filter)"
    )]
    Secret,
    /// PostgreSQL's own guards (the role's privileges, the read-only transaction, the single
    /// query expression) refused it.
    #[error("refused: {0}")]
    Denied(String),
}

/// Plan operators that only compute over their inputs.
const READING_OPERATORS: &[&str] = &[
    "PROJECTION",
    "FILTER",
    "ORDER_BY",
    "TOP_N",
    "LIMIT",
    "STREAMING_LIMIT",
    "LIMIT_PERCENT",
    "HASH_JOIN",
    "NESTED_LOOP_JOIN",
    "PIECEWISE_MERGE_JOIN",
    "BLOCKWISE_NL_JOIN",
    "IE_JOIN",
    "ASOF_JOIN",
    "POSITIONAL_JOIN",
    "CROSS_PRODUCT",
    "LEFT_DELIM_JOIN",
    "RIGHT_DELIM_JOIN",
    "DELIM_JOIN",
    "DELIM_SCAN",
    "HASH_GROUP_BY",
    "PERFECT_HASH_GROUP_BY",
    "PARTITIONED_AGGREGATE",
    "UNGROUPED_AGGREGATE",
    "WINDOW",
    "STREAMING_WINDOW",
    "UNION",
    "UNNEST",
    "CTE",
    "CTE_SCAN",
    "REC_CTE",
    "REC_CTE_SCAN",
    "RECURSIVE_CTE",
    "RECURSIVE_CTE_SCAN",
    "DUMMY_SCAN",
    "EMPTY_RESULT",
    "COLUMN_DATA_SCAN",
    "CHUNK_SCAN",
    "EXPRESSION_SCAN",
    "STREAMING_SAMPLE",
    "RESERVOIR_SAMPLE",
    "PIVOT",
];

/// Table functions that compute values and read nothing.
const PURE_FUNCTIONS: &[&str] = &["RANGE", "GENERATE_SERIES", "UNNEST"];

/// Whether the ledger table `name` may be read.
fn readable_table(name: &str) -> bool {
    const TABLES: &[&str] = &[
        "webhook_deliveries",
        "ledger_batches",
        "events",
        "event_buckets",
        "webhook_changes",
        "event_expunges",
    ];
    TABLES.contains(&name)
        || name
            .strip_prefix("events_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses `query` unless it is one statement whose plans only read allowed tables.
///
/// Both plans are checked: the optimised one shows which columns each scan reads (a `SELECT
/// t FROM webhook_changes t` projects `secret`), the unoptimised one keeps every scan and
/// filter the optimiser would prune or push out of sight (a filter on `secret` is an oracle
/// even when statistics answer it).
pub fn check(conn: &Connection, query: &str) -> Result<(), Refusal> {
    if query.trim().trim_end_matches(';').trim().is_empty() {
        return Err(Refusal::Empty);
    }
    match count_statements(query)? {
        1 => {}
        n => return Err(Refusal::Statements(n)),
    }
    check_plan(&plan(conn, query)?)?;
    conn.execute_batch("PRAGMA disable_optimizer")
        .map_err(|e| Refusal::Plan(first_line(&e.to_string())))?;
    let unoptimised = plan(conn, query);
    conn.execute_batch("PRAGMA enable_optimizer")
        .map_err(|e| Refusal::Plan(first_line(&e.to_string())))?;
    check_plan(&unoptimised?)
}

fn plan(conn: &Connection, query: &str) -> Result<Value, Refusal> {
    let plan: String = conn
        .query_row(&format!("EXPLAIN (FORMAT JSON) {query}"), [], |r| r.get(1))
        .map_err(|e| Refusal::Plan(first_line(&e.to_string())))?;
    serde_json::from_str(&plan).map_err(|e| Refusal::Plan(format!("unreadable plan: {e}")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// Checks every operator of a plan (the JSON DuckDB's `EXPLAIN (FORMAT JSON)` prints: an
/// array of root operators, each with `name`, `extra_info` and `children`), and, when the plan
/// scans `webhook_changes`, that no operator names its `secret` column.
pub fn check_plan(plan: &Value) -> Result<(), Refusal> {
    let mut seen = Seen::default();
    walk(plan, &mut seen)?;
    if seen.registry_scan && seen.secret {
        return Err(Refusal::Secret);
    }
    Ok(())
}

#[derive(Default)]
struct Seen {
    registry_scan: bool,
    secret: bool,
}

fn walk(plan: &Value, seen: &mut Seen) -> Result<(), Refusal> {
    match plan {
        Value::Array(nodes) => nodes.iter().try_for_each(|n| walk(n, seen)),
        Value::Object(node) => {
            let name = node.get("name").and_then(Value::as_str).unwrap_or_default();
            let info = node.get("extra_info").unwrap_or(&Value::Null);
            check_operator(name.trim(), info, seen)?;
            seen.secret |= mentions_secret(info);
            node.get("children").map_or(Ok(()), |c| walk(c, seen))
        }
        _ => Err(Refusal::Plan("unexpected plan shape".into())),
    }
}

fn check_operator(name: &str, info: &Value, seen: &mut Seen) -> Result<(), Refusal> {
    if name == "SEQ_SCAN" || name == "TABLE_SCAN" || name == "INDEX_SCAN" {
        if let Some(table) = info.get("Table").and_then(Value::as_str) {
            seen.registry_scan |= check_scan(table)? == "webhook_changes";
            return Ok(());
        }
    }
    if READING_OPERATORS.contains(&name) {
        return Ok(());
    }
    match info.get("Function").and_then(Value::as_str) {
        Some(f) if PURE_FUNCTIONS.contains(&f) => Ok(()),
        Some(f) => Err(Refusal::Function(f.to_lowercase())),
        None => Err(Refusal::Operator(name.to_owned())),
    }
}

/// A scan of `catalog.schema.table`: the table must be one of the ledger's; its name.
fn check_scan(qualified: &str) -> Result<&str, Refusal> {
    let mut parts = qualified.rsplitn(3, '.');
    let table = parts.next().unwrap_or_default();
    let schema = parts.next().unwrap_or("main");
    if schema != "main" || !readable_table(table) {
        return Err(Refusal::Table(qualified.to_owned()));
    }
    Ok(table)
}

/// The registry's columns that never come out: signing secrets and token digests.
const SECRET_COLUMNS: &[&str] = &["secret", "token_digest"];

/// Whether a secret column's name appears as a whole word (not `secret_rotated`) in any string
/// of `info`.
fn mentions_secret(info: &Value) -> bool {
    match info {
        Value::String(s) => {
            let s = s.to_lowercase();
            SECRET_COLUMNS.iter().any(|column| {
                s.match_indices(column).any(|(at, w)| {
                    let before = s[..at].chars().next_back();
                    let after = s[at + w.len()..].chars().next();
                    !before.is_some_and(word_char) && !after.is_some_and(word_char)
                })
            })
        }
        Value::Array(items) => items.iter().any(mentions_secret),
        Value::Object(map) => map.values().any(mentions_secret),
        _ => false,
    }
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A private in-memory DuckDB, used only for its parser: counting statements must not go
/// through `duckdb::Connection::prepare`, which executes every statement but the last.
struct Parser {
    db: ffi::duckdb_database,
    conn: ffi::duckdb_connection,
}

// SAFETY: the handles are used only under the mutex below, one call at a time.
unsafe impl Send for Parser {}

static PARSER: Mutex<Option<Parser>> = Mutex::new(None);

fn count_statements(query: &str) -> Result<usize, Refusal> {
    let text = CString::new(query).map_err(|_| Refusal::Parse("the query holds a NUL".into()))?;
    let mut slot = PARSER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(Parser::open()?);
    }
    let parser = slot.as_ref().expect("opened above");
    // SAFETY: `conn` is a live connection; `extracted` is destroyed before returning.
    unsafe {
        let mut extracted = std::ptr::null_mut();
        let n = ffi::duckdb_extract_statements(
            parser.conn,
            text.as_ptr() as *const c_char,
            &mut extracted,
        );
        let result = if n == 0 {
            let err = ffi::duckdb_extract_statements_error(extracted);
            let msg = if err.is_null() {
                "no statement".to_owned()
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            Err(Refusal::Parse(first_line(&msg)))
        } else {
            Ok(n as usize)
        };
        ffi::duckdb_destroy_extracted(&mut extracted);
        result
    }
}

impl Parser {
    fn open() -> Result<Self, Refusal> {
        let unavailable = || Refusal::Parse("the SQL parser is unavailable".into());
        // SAFETY: out-pointers to fresh handles; each failure closes what was opened.
        unsafe {
            let mut db = std::ptr::null_mut();
            if ffi::duckdb_open(std::ptr::null(), &mut db) != ffi::DuckDBSuccess {
                return Err(unavailable());
            }
            let mut conn = std::ptr::null_mut();
            if ffi::duckdb_connect(db, &mut conn) != ffi::DuckDBSuccess {
                ffi::duckdb_close(&mut db);
                return Err(unavailable());
            }
            Ok(Self { db, conn })
        }
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: both handles were opened by `open` and are closed once.
        unsafe {
            ffi::duckdb_disconnect(&mut self.conn);
            ffi::duckdb_close(&mut self.db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_counted_by_the_parser() {
        assert_eq!(count_statements("SELECT 1"), Ok(1));
        assert_eq!(count_statements("SELECT 1;"), Ok(1));
        assert_eq!(count_statements("SELECT 1; SELECT 2"), Ok(2));
        assert_eq!(count_statements("SELECT ';'"), Ok(1));
        assert_eq!(count_statements("SELECT 1 -- ; DELETE\n"), Ok(1));
        assert!(matches!(
            count_statements("SELEC 1"),
            Err(Refusal::Parse(_))
        ));
    }

    #[test]
    fn secret_is_matched_as_a_word() {
        use serde_json::json;
        assert!(mentions_secret(&json!({"Projections": ["url", "secret"]})));
        assert!(mentions_secret(&json!({"Filters": "secret='x'"})));
        assert!(mentions_secret(&json!({"Projections": "length(secret)"})));
        assert!(!mentions_secret(
            &json!({"Filters": "kind='secret_rotated'"})
        ));
        assert!(!mentions_secret(&json!({"Projections": ["url", "reason"]})));
        assert!(mentions_secret(&json!({"Projections": ["token_digest"]})));
        assert!(!mentions_secret(&json!({"Projections": ["token_id"]})));
    }

    #[test]
    fn only_the_ledgers_tables_are_readable() {
        for t in [
            "events",
            "events_00001",
            "webhook_deliveries",
            "webhook_changes",
        ] {
            assert!(readable_table(t), "{t}");
        }
        for t in [
            "settings",
            "projection_checkpoints",
            "checkpoint_body_1",
            "events_",
            "events_x1",
            "x",
        ] {
            assert!(!readable_table(t), "{t}");
        }
    }
}
