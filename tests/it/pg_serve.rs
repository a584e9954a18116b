//! `hookledger serve` on PostgreSQL, as a child process: publish, deliver to a real receiver
//! on 127.0.0.1, stop it (SIGTERM) and kill it (SIGKILL), start it again on the same
//! database, and `verify` (the CLI with `--store`, and `GET /v1/verify`) passes every time.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::serve_child::{assert_api_verify, get, post_json, register, ServeChild};

/// `hookledger verify --store URL`: its exit status and output.
fn cli_verify(url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(["verify", "--store", url])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn start(url: &str, dir: &std::path::Path) -> ServeChild {
    let (db, log, url) = (
        dir.join("unused.duckdb"),
        dir.join("serve-stderr.log"),
        url.to_owned(),
    );
    let server = tokio::task::spawn_blocking(move || {
        let env = [
            ("HOOKLEDGER_DATABASE_URL", url.as_str()),
            ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
            // On PostgreSQL the main key comes from the variable (no file beside a database).
            (
                "HOOKLEDGER_SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ];
        ServeChild::start(&db, &env, &log)
    })
    .await
    .unwrap();
    assert!(
        !dir.join("unused.duckdb").exists(),
        "serve with a store URL must not create the --db file"
    );
    server
}

/// Waits until every delivery is delivered.
async fn delivered(client: &reqwest::Client, base: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, state) = get(client, &format!("{base}/v1/state")).await;
        if state["counts"]["delivered"] == json!(n) {
            return;
        }
        assert!(Instant::now() < deadline, "not all delivered: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_delivers_restarts_and_verifies() {
    let url = pg_schema!("serve_on_postgres_delivers_restarts_and_verifies");
    let dir = tempfile::tempdir().unwrap();
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers.get("webhook-id").unwrap().to_str().unwrap();
                seen.lock().unwrap().push(id.to_owned());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    let server = start(&url, dir.path()).await;
    register(&client, &server.base, &hook).await;
    for n in 0..10 {
        let (status, body) = post_json(
            &client,
            &format!("{}/v1/events", server.base),
            &json!({ "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    delivered(&client, &server.base, 10).await;
    assert_api_verify(&client, &server.base, "after delivering").await;
    assert!(server.stop().success(), "a SIGTERM stops serve with 0");
    let (ok, text) = cli_verify(&url);
    assert!(ok, "after SIGTERM: {text}");

    // Started again on the same database: the state is folded from PostgreSQL.
    let server = start(&url, dir.path()).await;
    let (_, state) = get(&client, &format!("{}/v1/state", server.base)).await;
    assert_eq!(state["counts"]["delivered"], json!(10), "{state}");
    let (status, page) = get(&client, &format!("{}/v1/deliveries?limit=100", server.base)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(10), "{page}");
    let (status, _) = post_json(
        &client,
        &format!("{}/v1/events", server.base),
        &json!({ "event_type": "order.created", "payload": { "n": 10 } }),
    )
    .await;
    assert_eq!(status, 202);
    delivered(&client, &server.base, 11).await;
    assert!(!server.kill().success());
    let (ok, text) = cli_verify(&url);
    assert!(ok, "after SIGKILL: {text}");
    let server = start(&url, dir.path()).await;
    assert_api_verify(&client, &server.base, "after the restart").await;
    let (status, answer) = post_json(
        &client,
        &format!("{}/v1/sql", server.base),
        &json!({ "query": "SELECT count(*) FROM delivery_history" }),
    )
    .await;
    // Without an auditor role (HOOKLEDGER_SQL_URL, see pg_sql.rs) SQL is not served here.
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["error"]["code"],
        json!("sql_unavailable"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("HOOKLEDGER_SQL_URL")),
        "{answer}"
    );
    drop(server);
    let ids: Vec<String> = received.lock().unwrap().clone();
    assert!(ids.len() >= 11, "{ids:?}");

    // The head the CLI prints is the one the server answered.
    let out = Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(["head", "--json", "--store", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(head["seq"].as_u64().unwrap() >= 33, "{head}");
}
