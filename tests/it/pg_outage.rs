//! PostgreSQL taken away under load, beside two nodes: publishes answer 503 while it is down,
//! nothing a node did not acknowledge is stored, every acknowledged event is delivered, and
//! both nodes recover by themselves when it is back. The test runs its own throwaway cluster
//! (`.ci/postgres start`, then `pause` and `resume`), so the other tests' server is untouched.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;

use crate::serve_child::{assert_api_verify, get, post_json, register, ServeChild};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres");

/// A cluster of our own: the exports `.ci/postgres start` printed; stopped and removed on drop.
struct OwnPg {
    vars: Vec<(String, String)>,
}

impl OwnPg {
    fn start() -> Self {
        let out = Command::new(SCRIPT).arg("start").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Self { vars }
    }

    fn var(&self, name: &str) -> String {
        self.vars.iter().find(|(k, _)| k == name).unwrap().1.clone()
    }

    fn run(&self, what: &str) {
        let out = Command::new(SCRIPT)
            .arg(what)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .arg("stop")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

async fn node(url: &str, dir: &std::path::Path, name: &str) -> ServeChild {
    let schedule = "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";
    crate::pg_common::start_node(url, dir, name, schedule).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_answers_503_then_recovers_on_every_node() {
    if crate::pg_common::server(
        "postgres_restarted_under_load_answers_503_then_recovers_on_every_node",
    )
    .is_none()
    {
        return;
    }
    let pg = tokio::task::spawn_blocking(OwnPg::start).await.unwrap();
    let url = pg.var("HOOKLEDGER_TEST_PG_URL");
    let dir = tempfile::tempdir().unwrap();
    let app = Router::new().route("/hook", post(|| async { StatusCode::NO_CONTENT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let a = node(&url, dir.path(), "a").await;
    let b = node(&url, dir.path(), "b").await;
    register(&client, &a.base, &hook).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, page) = get(&client, &format!("{}/v1/webhooks", b.base)).await;
        if page["data"].as_array().is_some_and(|d| d.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "b never saw the webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut acked = BTreeSet::new();
    let mut refused = 0;
    let mut n = 0u32;
    let mut publish = async |base: &str, acked: &mut BTreeSet<String>| -> u16 {
        n += 1;
        let id = format!("pub-{n}");
        let (status, body) = post_json(
            &client,
            &format!("{base}/v1/events"),
            &json!({ "event_id": id, "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert!(status == 202 || status == 503, "{status} {body}");
        if status == 202 {
            acked.insert(id);
        }
        status
    };
    for i in 0..40 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        assert_eq!(publish(base, &mut acked).await, 202, "before the outage");
    }
    tokio::task::block_in_place(|| pg.run("pause"));
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        if publish(base, &mut acked).await == 503 {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 20,
        "every publish while PostgreSQL is down answers 503"
    );
    tokio::task::block_in_place(|| pg.run("resume"));
    // Both nodes accept publishes again by themselves.
    for base in [&a.base, &b.base] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if publish(base, &mut acked).await == 202 {
                break;
            }
            assert!(Instant::now() < deadline, "{base} did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        assert_eq!(publish(base, &mut acked).await, 202, "after the outage");
    }
    let total = acked.len() as u64;
    for base in [&a.base, &b.base] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, state) = get(&client, &format!("{base}/v1/state")).await;
            if state["counts"]["delivered"].as_u64() == Some(total) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{base}: not all delivered: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stored: BTreeSet<String> = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            crate::pg_common::connect(&url)
                .query("SELECT producer_id FROM events", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
        .await
        .unwrap()
    };
    assert_eq!(stored, acked, "exactly the acknowledged events are stored");
    assert_api_verify(&client, &a.base, "node a after the outage").await;
    assert_api_verify(&client, &b.base, "node b after the outage").await;
}
