//! Auditors' SQL on a real ledger file: reading queries answer, hostile ones are refused and
//! change nothing, secrets never come out, and the limits hold.

use std::time::Duration;

use hookledger::delivery::signing::Secret;
use hookledger::ledger::writer::Commit;
use hookledger::registry::Change;
use hookledger::sql::{self, Limits, Refusal, SqlError};
use hookledger::store::duck::{DuckStore, OpenMode};
use serde_json::json;

use crate::common::*;

/// A known secret, so that a test can look for its text in what comes out.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ledger_with_a_secret() -> TestLedger {
    let t = TestLedger::new();
    let change = Change::Created {
        url: "https://example.com/hook".into(),
        event_types: vec![],
        description: Some("audited".into()),
        secret: Secret::parse(SECRET).unwrap(),
        app: hookledger::ids::AppUid::default_app(),
        payload_format: Default::default(),
    };
    t.commit(Commit {
        changes: vec![(webhook(1), change)],
        ..Commit::default()
    })
    .unwrap();
    one_delivered_one_dead(&t);
    t
}

fn run(store: &DuckStore, query: &str) -> Result<sql::Answer, SqlError> {
    sql::run(store.connection(), query, Limits::default())
}

#[test]
fn reading_queries_answer_with_typed_values() {
    let mut t = ledger_with_a_secret();
    t.close();
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    let a = run(
        &store,
        "SELECT kind, count(*) AS n FROM delivery_history GROUP BY kind ORDER BY kind",
    )
    .unwrap();
    assert_eq!(a.columns, ["kind", "n"]);
    assert_eq!(
        a.rows,
        [
            vec![json!("attempted"), json!(2)],
            vec![json!("dead_parked"), json!(1)],
            vec![json!("delivered"), json!(1)],
            vec![json!("enqueued"), json!(2)],
            vec![json!("failed"), json!(1)],
        ]
    );
    assert!(!a.truncated);
    let a = run(
        &store,
        "SELECT webhook_id, url, kind FROM webhook_history WHERE kind = 'created'",
    )
    .unwrap();
    assert_eq!(
        a.rows,
        [vec![
            json!(webhook(1).to_string()),
            json!("https://example.com/hook"),
            json!("created")
        ]]
    );
    // A CTE, a join over the events of every bucket, and a timestamp.
    let a = run(
        &store,
        "WITH d AS (SELECT * FROM delivery_latest) \
         SELECT d.kind, e.event_type, e.published_at FROM d JOIN events_all e USING (event_id) \
         ORDER BY d.seq",
    )
    .unwrap();
    assert_eq!(a.rows.len(), 2);
    assert_eq!(a.rows[0][0], json!("delivered"));
    let published = t.now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(a.rows[0][2], json!(published));
}

#[test]
fn the_row_cap_cuts_and_says_so() {
    let mut t = ledger_with_a_secret();
    t.close();
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    let limits = Limits {
        rows: 3,
        ..Limits::default()
    };
    let a = sql::run(store.connection(), "SELECT * FROM range(10)", limits).unwrap();
    assert_eq!(a.rows.len(), 3);
    assert!(a.truncated);
    let a = sql::run(store.connection(), "SELECT * FROM range(3)", limits).unwrap();
    assert!(!a.truncated);
}

#[test]
fn a_query_past_its_time_limit_is_interrupted() {
    let mut t = ledger_with_a_secret();
    t.close();
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    let limits = Limits {
        time: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let heavy =
        "SELECT count(*) FROM range(100000000000) a, range(1000) b WHERE a.range % 7 = b.range";
    match sql::run(store.connection(), heavy, limits) {
        Err(SqlError::TimedOut(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Interrupted, not run to the end (which would take hours).
    assert!(started.elapsed() < Duration::from_secs(30));
    // The connection is usable afterwards.
    assert!(run(&store, "SELECT 1").is_ok());
}

/// Queries that write, reach outside the ledger, or read a secret: each class the guard knows,
/// with case, comment and nesting tricks.
pub(crate) fn hostile(dir: &std::path::Path) -> Vec<String> {
    let out = dir.join("out.csv").display().to_string();
    let other = dir.join("other.duckdb").display().to_string();
    let probe = dir.join("probe.csv").display().to_string();
    std::fs::write(&probe, "a\n1\n").unwrap();
    let mut q: Vec<String> = [
        "INSERT INTO settings VALUES ('x', 'y')",
        "insert into webhook_deliveries select * from webhook_deliveries",
        "UPDATE settings SET value = 'x'",
        "DELETE FROM webhook_deliveries",
        "/* audit */ DeLeTe FROM events",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "CREATE MACRO m() AS 1",
        "DROP TABLE events",
        "DROP VIEW delivery_history",
        "ALTER TABLE events ADD COLUMN x INT",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA enable_profiling",
        "PRAGMA database_size",
        "SET threads = 1",
        "RESET threads",
        "CALL pragma_version()",
        "CHECKPOINT",
        "FORCE CHECKPOINT",
        "BEGIN TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "VACUUM",
        "SELECT 1; DELETE FROM settings",
        "SELECT 1; SELECT 2",
        "WITH x AS (DELETE FROM settings RETURNING *) SELECT * FROM x",
        "SELECT * FROM settings",
        "SELECT value FROM settings WHERE name = 'api_token'",
        "SELECT * FROM projection_checkpoints",
        "SELECT secret FROM webhook_changes",
        "SELECT SECRET FROM webhook_changes",
        "SELECT length(secret) FROM webhook_changes",
        "SELECT * FROM webhook_changes",
        "SELECT count(*) FROM webhook_changes WHERE secret LIKE 'whsec_M%'",
        "SELECT url FROM webhook_changes ORDER BY secret",
        "SELECT token_digest FROM webhook_changes",
        "SELECT count(*) FROM webhook_changes WHERE token_digest IS NOT NULL",
        // Only the unoptimised plan shows these: statistics answer the first (the scan is
        // pruned), and the filter of the second is pushed into the scan out of sight.
        "SELECT value FROM settings WHERE name = 'no such setting'",
        "SELECT url FROM webhook_changes WHERE secret > 'whsec_A'",
        "SELECT (SELECT max(secret) FROM webhook_changes) AS s",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM 'https://example.com/x.parquet'",
        "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
        "EXPLAIN ANALYZE DELETE FROM settings",
        "EXPLAIN SELECT 1",
        "SELECT * FROM query('SELECT * FROM settings')",
        "",
        "  ;  ",
    ]
    .map(str::to_owned)
    .into();
    q.extend([
        format!("COPY events TO '{out}'"),
        format!("COPY (SELECT 1) TO '{out}'"),
        format!("EXPORT DATABASE '{}'", dir.join("export").display()),
        format!("ATTACH '{other}' AS o"),
        "DETACH o".to_owned(),
        format!("SELECT * FROM read_csv('{probe}')"),
        format!("SELECT * FROM '{probe}'"),
        format!("SELECT * FROM (SELECT * FROM read_csv_auto('{probe}')) t"),
        format!("WITH f AS (SELECT * FROM read_csv('{probe}')) SELECT * FROM f"),
        format!("SELECT (SELECT count(*) FROM read_csv('{probe}')) AS n"),
    ]);
    q
}

#[test]
fn hostile_queries_are_refused_and_change_nothing() {
    let mut t = ledger_with_a_secret();
    t.close();
    let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
    store
        .connection()
        .execute_batch("INSERT INTO settings VALUES ('api_token', 'a-token')")
        .unwrap();
    let rows = |q: &str| run(&store, q).unwrap().rows;
    let counts =
        "SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM events), \
                  (SELECT count(*) FROM webhook_changes), (SELECT count(*) FROM ledger_batches)";
    let counted = rows(counts);
    let tables = store
        .connection()
        .query_row("SELECT count(*) FROM duckdb_tables()", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    let queries = hostile(t.dir.path());
    assert!(queries.len() >= 30);
    for q in &queries {
        match run(&store, q) {
            Err(SqlError::Refused(r)) => {
                assert!(!r.to_string().is_empty(), "{q}");
            }
            other => panic!("{q:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(rows(counts), counted);
    let settings: Vec<(String, String)> = store
        .connection()
        .prepare("SELECT name, value FROM settings ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let tables_after = store
        .connection()
        .query_row("SELECT count(*) FROM duckdb_tables()", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    assert_eq!(tables_after, tables);
    assert!(
        settings.contains(&("api_token".into(), "a-token".into())),
        "{settings:?}"
    );
    assert!(
        !settings.iter().any(|(name, _)| name == "x"),
        "{settings:?}"
    );
    for made in ["out.csv", "other.duckdb", "export"] {
        assert!(!t.dir.path().join(made).exists(), "{made} was written");
    }
    drop(store);
    // The ledger still verifies: its chain covers every row a write could have touched.
    let verdict = hookledger(&["verify"], &t.path);
    assert!(verdict.status.success(), "{}", stdout(&verdict));
}

#[test]
fn refusals_name_what_caused_them() {
    let mut t = ledger_with_a_secret();
    t.close();
    // Read-write, so that a write the guard let through would not be stopped by DuckDB.
    let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
    let refusal = |q: &str| match run(&store, q) {
        Err(SqlError::Refused(r)) => r,
        other => panic!("{q}: {other:?}"),
    };
    assert_eq!(refusal("SELECT 1; SELECT 2"), Refusal::Statements(2));
    assert_eq!(
        refusal("SELECT secret FROM webhook_changes"),
        Refusal::Secret
    );
    assert!(
        matches!(refusal("SELECT * FROM settings"), Refusal::Table(t) if t.ends_with("main.settings"))
    );
    assert_eq!(
        refusal("SELECT * FROM glob('/etc/*')"),
        Refusal::Function("glob".into())
    );
    assert_eq!(
        refusal("DELETE FROM events"),
        Refusal::Operator("DELETE".into())
    );
    // The registry is auditable without its secrets.
    let a = run(
        &store,
        "SELECT kind, url FROM webhook_changes WHERE kind <> 'secret_rotated'",
    )
    .unwrap();
    assert_eq!(a.rows.len(), 1);
    let all = run(&store, "SELECT * FROM webhook_history").unwrap();
    assert!(!format!("{all:?}").contains(&SECRET[6..]));
}

#[test]
fn the_command_prints_a_table_csv_and_json() {
    let mut t = ledger_with_a_secret();
    t.close();
    let q = "SELECT kind, count(*) AS n FROM delivery_history GROUP BY kind ORDER BY kind";
    let table = hookledger(&["sql", q], &t.path);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert_eq!(
        stdout(&table),
        "kind         n\n\
         -----------  -\n\
         attempted    2\n\
         dead_parked  1\n\
         delivered    1\n\
         enqueued     2\n\
         failed       1\n\
         (5 rows)\n"
    );
    let csv = hookledger(&["sql", q, "--format", "csv"], &t.path);
    assert_eq!(
        stdout(&csv),
        "kind,n\nattempted,2\ndead_parked,1\ndelivered,1\nenqueued,2\nfailed,1\n"
    );
    let json = hookledger(&["sql", q, "--format", "json", "--limit", "2"], &t.path);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert_eq!(v["truncated"], json!(true));
    let refused = hookledger(&["sql", "SELECT * FROM settings"], &t.path);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("main.settings"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The route and `hookledger sql --server` against a live server answer what the same query
/// answers on the stopped file; a refusal is a 400 naming the query, and the route needs the
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_and_the_command_answer_as_the_stopped_file_does() {
    use crate::serve::{call, post_json, receiver, Server, TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.duckdb");
    let server = Server::start(&db);
    let base = server.base.clone();
    let (url, got) = receiver().await;
    let (status, _) = post_json(&format!("{base}/v1/webhooks"), json!({ "url": url })).await;
    assert_eq!(status, 201);
    for n in 0..5 {
        let (status, _) = post_json(
            &format!("{base}/v1/events"),
            json!({ "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert_eq!(status, 202);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let query = "SELECT kind, count(*) AS n FROM delivery_history GROUP BY kind ORDER BY kind";
    // Poll until the outcomes are committed (the receiver answered before they were).
    let live = loop {
        let (status, answer) =
            post_json(&format!("{base}/v1/sql"), json!({ "query": query })).await;
        assert_eq!(status, 200, "{answer}");
        if answer["rows"].as_array().unwrap().len() == 3 {
            break answer;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(live["columns"], json!(["kind", "n"]));
    assert_eq!(live["truncated"], json!(false));
    let command = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hookledger"))
                .args(["sql", query, "--format", "json", "--server", &base])
                .env("HOOKLEDGER_API_TOKEN", TOKEN)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        command.status.success(),
        "{}",
        String::from_utf8_lossy(&command.stderr)
    );
    let through_command: serde_json::Value = serde_json::from_slice(&command.stdout).unwrap();
    assert_eq!(through_command, live);

    let csv = reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .bearer_auth(TOKEN)
        .header("accept", "text/csv")
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text().await.unwrap(),
        "kind,n\nattempted,5\ndelivered,5\nenqueued,5\n"
    );
    let (status, refused) = post_json(
        &format!("{base}/v1/sql"),
        json!({ "query": "SELECT * FROM settings" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], json!("sql_refused"));
    assert_eq!(refused["error"]["field"], json!("query"));
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/sql"),
        None,
        Some(json!({ "query": query })),
    )
    .await;
    assert_eq!(status, 401);
    let (status, bad) = post_json(
        &format!("{base}/v1/sql"),
        json!({ "query": query, "limit": 0 }),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(bad["error"]["field"], json!("limit"));
    let (status, bad) = post_json(&format!("{base}/v1/sql"), json!({ "query": "" })).await;
    assert_eq!(status, 422);
    assert_eq!(bad["error"]["field"], json!("query"));

    assert!(server.stop().success());
    let stopped = hookledger(&["sql", query, "--format", "json"], &db);
    let on_file: serde_json::Value = serde_json::from_slice(&stopped.stdout).unwrap();
    assert_eq!(on_file, live);
}
