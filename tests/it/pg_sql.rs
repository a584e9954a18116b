//! Auditors' SQL on a PostgreSQL ledger (`src/sql/pg.rs`): `POST /v1/sql` on a real `serve`
//! child with `HOOKLEDGER_SQL_URL`, and `hookledger sql --store`, as the auditor role that
//! `schema/pg/auditor.sql` makes. The same hostile table as DuckDB's (`sql.rs`) plus
//! PostgreSQL's own escapes is refused and changes nothing; a role that could read a secret is
//! refused before anything runs; the time limit interrupts.

use std::process::Command;
use std::time::{Duration, Instant};

use hookledger::sql::pg::{self, AUDITOR_SQL};
use hookledger::sql::{Limits, SqlError};
use serde_json::{json, Value};

use crate::pg_common::{connect, NODE_KEY};
use crate::serve_child::{get, post_json, register, ServeChild};

/// The schema's URL as a new login role in `hookledger_auditor` (trust auth: no password).
fn auditor(url: &str) -> String {
    let schema = url.rsplit("search_path%3D").next().unwrap().to_owned();
    let role = format!("aud_{schema}");
    let mut admin = connect(url);
    admin.batch_execute(AUDITOR_SQL).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN IN ROLE hookledger_auditor"
        ))
        .unwrap();
    url.replacen("://postgres@", &format!("://{role}@"), 1)
}

fn start(url: &str, dir: &std::path::Path, sql_url: Option<&str>) -> ServeChild {
    let mut env = vec![
        ("HOOKLEDGER_DATABASE_URL", url),
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_SECRET_KEY", NODE_KEY),
    ];
    if let Some(s) = sql_url {
        env.push(("HOOKLEDGER_SQL_URL", s));
    }
    ServeChild::start(&dir.join("unused.duckdb"), &env, &dir.join("serve.log"))
}

/// `hookledger sql QUERY --store URL --format json`: (success, stdout, stderr).
fn command(url: &str, query: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(["sql", query, "--format", "json", "--store", url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a write could have changed, read as the administrator.
fn fingerprint(url: &str) -> Vec<String> {
    let mut admin = connect(url);
    let q = "SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM events), \
             (SELECT count(*) FROM webhook_changes), (SELECT count(*) FROM ledger_batches), \
             (SELECT string_agg(name || '=' || value, ',' ORDER BY name) FROM settings), \
             (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema())";
    let row = admin.query_one(q, &[]).unwrap();
    (0..6)
        .map(|i| {
            row.try_get::<_, i64>(i)
                .map(|n| n.to_string())
                .or_else(|_| {
                    row.try_get::<_, Option<String>>(i)
                        .map(|s| s.unwrap_or_default())
                })
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_sql_on_postgres_answers_as_the_auditor_role_and_refuses_the_hostile_table() {
    let url = pg_schema!(
        "auditors_sql_on_postgres_answers_as_the_auditor_role_and_refuses_the_hostile_table"
    );
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (hook, got) = crate::serve::receiver().await;

    // Without an auditor role the route says what to set, and runs nothing.
    let server = tokio::task::block_in_place(|| start(&url, dir.path(), None));
    let base = server.base.clone();
    let (status, body) = post_json(
        &client,
        &format!("{base}/v1/sql"),
        &json!({ "query": "SELECT 1" }),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], json!("sql_unavailable"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOOKLEDGER_SQL_URL"),
        "{body}"
    );
    register(&client, &base, &hook).await;
    for n in 0..5 {
        let (status, body) = post_json(
            &client,
            &format!("{base}/v1/events"),
            &json!({ "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, state) = get(&client, &format!("{base}/v1/state")).await;
        if state["counts"]["delivered"] == json!(5) && got.lock().unwrap().len() == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.stop().success());

    // A role that could read a secret (here the superuser) stops the start, naming the variable.
    let refused = tokio::task::block_in_place(|| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &url])
            .env("HOOKLEDGER_SECRET_KEY", NODE_KEY)
            .env("HOOKLEDGER_API_TOKEN", crate::serve_child::TOKEN)
            .env("HOOKLEDGER_SQL_URL", &url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a start that goes through would otherwise serve forever.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve started with a superuser as auditor");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    });
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "serve started with a superuser as auditor"
    );
    assert!(
        said.contains("HOOKLEDGER_SQL_URL") && said.contains("superuser"),
        "{said}"
    );
    let (ok, _, said) = command(&url, "SELECT 1");
    assert!(!ok && said.contains("superuser"), "{said}");

    let auditor = tokio::task::block_in_place(|| auditor(&url));
    let server = tokio::task::block_in_place(|| start(&url, dir.path(), Some(&auditor)));
    let base = server.base.clone();
    let sql = async |query: &str| {
        post_json(
            &client,
            &format!("{base}/v1/sql"),
            &json!({ "query": query }),
        )
        .await
    };

    // The route and the command answer alike, with typed values.
    let query = "SELECT kind, count(*) AS n FROM delivery_history GROUP BY kind ORDER BY kind";
    let (status, live) = sql(query).await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["columns"], json!(["kind", "n"]));
    assert_eq!(
        live["rows"],
        json!([["attempted", 5], ["delivered", 5], ["enqueued", 5]])
    );
    let (ok, out, said) = tokio::task::block_in_place(|| command(&auditor, query));
    assert!(ok, "{said}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), live);
    let (status, typed) = sql(
        "SELECT seq, recorded_at, webhook_id, ok, duration_ms FROM attempt_outcomes ORDER BY seq LIMIT 1",
    )
    .await;
    assert_eq!(status, 200, "{typed}");
    let row = &typed["rows"][0];
    assert!(row[0].is_u64() && row[3] == json!(true), "{typed}");
    assert!(row[1].as_str().unwrap().ends_with('Z'), "{typed}");
    assert_eq!(row[2].as_str().unwrap().len(), 36, "{typed}");
    let (status, history) = sql("SELECT kind, url FROM webhook_history").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["rows"][0], json!(["created", hook]));
    let (status, cut) = post_json(
        &client,
        &format!("{base}/v1/sql"),
        &json!({ "query": "SELECT generate_series(1, 50) AS n", "limit": 10 }),
    )
    .await;
    assert_eq!(status, 200, "{cut}");
    assert_eq!(cut["rows"].as_array().unwrap().len(), 10);
    assert_eq!(cut["truncated"], json!(true));

    // The hostile table: every query refused with a 400 naming the query, nothing changed.
    let before = tokio::task::block_in_place(|| fingerprint(&url));
    let mut hostile = crate::sql::hostile(dir.path());
    hostile.extend(
        [
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT lo_import('/etc/passwd')",
            "SELECT set_config('role', 'postgres', true)",
            "SELECT nextval('projection_checkpoints_id_seq')",
            "SELECT 1) AS x; DELETE FROM settings; SELECT (1",
            "SELECT * FROM (SELECT 1) q; DELETE FROM settings",
            "COPY events TO PROGRAM 'id'",
            "SET ROLE postgres",
            "SET statement_timeout = 0",
            "SELECT * FROM cluster_nodes",
            "SELECT * FROM partition_leases",
            "SELECT secret FROM webhook_changes WHERE false",
            "SELECT count(*) FROM webhook_changes WHERE secret IS NOT NULL",
            "WITH x AS (DELETE FROM events RETURNING *) SELECT count(*) FROM x",
            "WITH x AS (INSERT INTO settings VALUES ('x', 'y') RETURNING *) SELECT * FROM x",
        ]
        .map(str::to_owned),
    );
    assert!(hostile.len() >= 60, "{}", hostile.len());
    for q in &hostile {
        let (status, body) = sql(q).await;
        // An empty text is the route's own 422, before any SQL.
        let expected = if q.is_empty() {
            (422, "invalid")
        } else {
            (400, "sql_refused")
        };
        assert_eq!(status, expected.0, "{q:?} was not refused: {body}");
        assert_eq!(body["error"]["code"], json!(expected.1), "{q:?}: {body}");
        assert_eq!(body["error"]["field"], json!("query"), "{q:?}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{q:?}"
        );
    }
    assert_eq!(tokio::task::block_in_place(|| fingerprint(&url)), before);
    assert!(!dir.path().join("out.csv").exists());
    let (status, verdict) = get(&client, &format!("{base}/v1/verify")).await;
    assert_eq!(
        (status, verdict["ok"].clone()),
        (200, json!(true)),
        "{verdict}"
    );

    // The time limit interrupts a long query; the server keeps answering.
    let slow = auditor.clone();
    let timed = tokio::task::spawn_blocking(move || {
        let limits = Limits {
            time: Duration::from_millis(300),
            ..Limits::default()
        };
        let started = Instant::now();
        (
            pg::run(&slow, "SELECT pg_sleep(20)", limits),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    assert!(
        matches!(timed.0, Err(SqlError::TimedOut(_))),
        "{:?}",
        timed.0
    );
    assert!(timed.1 < Duration::from_secs(10), "{:?}", timed.1);
    let (status, _) = sql("SELECT 1 AS one").await;
    assert_eq!(status, 200);
}
