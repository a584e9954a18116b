//! `serve`'s continuous export, read the way an auditor would: the real binary publishes and
//! delivers with `HOOKLEDGER_EXPORT_DIR` set, and Python's `duckdb` package (from
//! `HOOKLEDGER_TEST_PYTHON`, see `.ci/python`) reads the sealed files while the server runs. The
//! README's three audit queries on the files answer what they answer through `POST /v1/sql`.
//!
//! Without `HOOKLEDGER_TEST_PYTHON` the test prints `*** SKIPPED` and passes; under `CI=true`
//! it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::serve_child::{get, post_json, ServeChild};

/// The README's three audit queries (the SQL section; `the_queries_are_the_readme_s` holds them
/// to it).
const HISTORY: &str = "SELECT seq, recorded_at, kind, attempt, status_code, error_class \
    FROM delivery_history WHERE webhook_id = ?::UUID AND event_id = ?::UUID ORDER BY seq;";
const FAILURES: &str = "SELECT webhook_id, error_class, count(*) AS failures \
    FROM attempt_outcomes WHERE NOT ok AND recorded_at > now()::TIMESTAMP - INTERVAL 24 HOUR \
    GROUP BY ALL ORDER BY failures DESC;";
const P99: &str =
    "SELECT webhook_id, quantile_cont(duration_ms, 0.99) AS p99_ms, count(*) AS attempts \
    FROM attempt_outcomes GROUP BY webhook_id ORDER BY p99_ms DESC;";

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_queries_and_views_are_the_readme_s() {
    let readme = words(include_str!("../../README.md"));
    for q in [HISTORY, FAILURES, P99, VIEWS] {
        let q = words(q).replace("DIR/", "export/");
        assert!(readme.contains(&q), "the README shows {q}");
    }
}

/// The README's views over the files (`DIR` is replaced by the export directory).
const VIEWS: &str = "\
CREATE VIEW delivery_history AS
SELECT * REPLACE (webhook_id::UUID AS webhook_id, event_id::UUID AS event_id)
FROM read_parquet('DIR/webhook_deliveries-*.parquet');
CREATE VIEW attempt_outcomes AS
SELECT seq, recorded_at, webhook_id, event_id, attempt, kind = 'delivered' AS ok, status_code,
       error_class, duration_ms
FROM delivery_history WHERE kind IN ('delivered', 'failed');";

/// Runs `queries` on the files of `dir` in Python's duckdb; each query's rows, timestamps as
/// microseconds since the epoch.
const SCRIPT: &str = r#"
import datetime, json, sys, uuid
import duckdb
views, queries = sys.argv[1], json.loads(sys.argv[2])
con = duckdb.connect()
con.execute(views)
def value(v):
    if isinstance(v, datetime.datetime):
        return (v - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)
    if isinstance(v, uuid.UUID):
        return str(v)
    return v
print(json.dumps([[[value(v) for v in row] for row in con.execute(q).fetchall()] for q in queries]))
"#;

fn python() -> Option<PathBuf> {
    match std::env::var_os("HOOKLEDGER_TEST_PYTHON") {
        Some(p) => Some(p.into()),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("HOOKLEDGER_TEST_PYTHON is not set under CI=true (run `eval \"$(.ci/python)\"`)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED export_live: HOOKLEDGER_TEST_PYTHON is not set (eval \"$(.ci/python)\" \
                 makes a virtualenv with duckdb); under CI=true this fails ***\n"
            );
            None
        }
    }
}

fn on_files(python: &Path, dir: &Path, queries: &[String]) -> Vec<Value> {
    let views = VIEWS.replace("DIR", dir.to_str().unwrap());
    let out = Command::new(python)
        .args(["-c", SCRIPT, &views, &json!(queries).to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// `/v1/sql`'s rows with its RFC 3339 times as microseconds, as `on_files` gives them.
fn normalised(rows: &Value) -> Value {
    let v = |v: &Value| {
        let s = v.as_str().unwrap_or_default();
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            json!(t.timestamp_micros())
        } else if let Ok(id) = uuid::Uuid::parse_str(s) {
            json!(id.to_string())
        } else {
            v.clone()
        }
    };
    Value::Array(
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| Value::Array(r.as_array().unwrap().iter().map(v).collect()))
            .collect(),
    )
}

/// Rows sorted by their text (ties in ORDER BY may come in either order), floats rounded.
fn comparable(rows: &Value) -> Vec<String> {
    let mut out: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cells: Vec<String> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|c| match c.as_f64() {
                    Some(f) if c.is_f64() => format!("{f:.6}"),
                    _ => c.to_string(),
                })
                .collect();
            cells.join("|")
        })
        .collect();
    out.sort();
    out
}

async fn sql(client: &reqwest::Client, base: &str, query: &str) -> Value {
    let (status, answer) = post_json(
        client,
        &format!("{base}/v1/sql"),
        &json!({ "query": query }),
    )
    .await;
    assert_eq!(status, 200, "{query}: {answer}");
    answer["rows"].clone()
}

async fn receiver() -> String {
    let app = Router::new()
        .route("/ok", post(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route(
            "/fail",
            post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn exported_seq(dir: &Path) -> u64 {
    hookledger::export::manifest::Manifest::load(dir)
        .map(|m| m.last_seq())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sealed_while_serving_answer_the_readme_queries_as_the_server_does() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let out_s = out.to_str().unwrap().to_owned();
    let env = [
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ("HOOKLEDGER_EXPORT_DIR", out_s.as_str()),
        ("HOOKLEDGER_EXPORT_EVERY", "25"),
        ("HOOKLEDGER_EXPORT_INTERVAL", "1s"),
    ];
    let server = ServeChild::start(
        &dir.path().join("ledger.duckdb"),
        &env,
        &dir.path().join("serve.log"),
    );
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let hooks = receiver().await;
    for path in ["ok", "fail"] {
        let (status, w) = post_json(
            &client,
            &format!("{base}/v1/webhooks"),
            &json!({ "url": format!("{hooks}/{path}") }),
        )
        .await;
        assert_eq!(status, 201, "{w}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut read_while_publishing = 0;
    for n in 0..60 {
        let (status, a) = post_json(
            &client,
            &format!("{base}/v1/events"),
            &json!({ "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert_eq!(status, 202, "{a}");
        if n % 10 == 9 && exported_seq(&out) > 0 {
            let count = on_files(
                &python,
                &out,
                &["SELECT count(*) FROM delivery_history".into()],
            );
            read_while_publishing = count[0][0][0].as_u64().unwrap();
            assert!(read_while_publishing > 0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every attempt has its outcome, and the export has caught up with the head.
    let head = loop {
        let outcomes = sql(&client, &base, "SELECT count(*) FROM attempt_outcomes").await[0][0]
            .as_u64()
            .unwrap();
        let head = sql(&client, &base, "SELECT max(seq) FROM delivery_history").await[0][0]
            .as_u64()
            .unwrap();
        if outcomes == 120 && exported_seq(&out) == head {
            break head;
        }
        assert!(
            Instant::now() < deadline,
            "outcomes {outcomes}, exported {} of {head}",
            exported_seq(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        read_while_publishing > 0,
        "files were read while publishing"
    );
    let pair = sql(
        &client,
        &base,
        "SELECT webhook_id, event_id FROM attempt_outcomes WHERE NOT ok LIMIT 1",
    )
    .await;
    let history = HISTORY
        .replacen(
            "?::UUID",
            &format!("'{}'::UUID", pair[0][0].as_str().unwrap()),
            1,
        )
        .replacen(
            "?::UUID",
            &format!("'{}'::UUID", pair[0][1].as_str().unwrap()),
            1,
        );
    let queries = [history, FAILURES.into(), P99.into()];
    let queries = queries.map(|q| q.trim_end_matches(';').to_owned());
    let files = on_files(&python, &out, &queries);
    for (q, from_files) in queries.iter().zip(&files) {
        let live = normalised(&sql(&client, &base, q).await);
        assert!(!live.as_array().unwrap().is_empty(), "{q}");
        assert_eq!(comparable(from_files), comparable(&live), "{q}");
    }
    let (status, verdict) = get(&client, &format!("{base}/v1/verify")).await;
    assert_eq!((status, &verdict["ok"]), (200, &json!(true)), "{verdict}");
    let (ok, said) = crate::export::verify_export(&out);
    assert!(ok, "verify --export while serving: {said}");
    assert!(said.contains(&format!("{head} records")), "{said}");
    let files = hookledger::export::writer::list(&out).unwrap();
    assert!(files.len() >= 3, "sealed by count and by time: {files:?}");
    assert!(server.stop().success());
}
