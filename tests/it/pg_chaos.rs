//! Three nodes on one PostgreSQL schema, four publishers spread over them, a flaky receiver
//! (30 % of answers 500) and a slow one, and a random node killed with SIGKILL every few
//! hundred milliseconds for 20 cycles (and started again). Afterwards: every acknowledged event
//! is delivered or dead-parked on both webhooks, `verify` passed after every kill (on a node
//! that was up), and every request a receiver got is explained by an `attempted` record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use crate::serve_child::{assert_api_verify, get, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_killed_at_random_lose_nothing_and_verify_after_every_kill() {
    let url = pg_schema!("three_nodes_killed_at_random_lose_nothing_and_verify_after_every_kill");
    let dir = tempfile::tempdir().unwrap();
    // (path, webhook-id) -> requests received
    let got: Arc<Mutex<HashMap<(String, String), u32>>> = Arc::default();
    let seen = got.clone();
    let app = Router::new().route(
        "/{kind}",
        post(move |Path(kind): Path<String>, h: HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = h["webhook-id"].to_str().unwrap().to_owned();
                *seen.lock().unwrap().entry((kind.clone(), id)).or_default() += 1;
                match kind.as_str() {
                    "slow" => {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        StatusCode::NO_CONTENT
                    }
                    _ if fastrand::u8(..100) < 30 => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::NO_CONTENT,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let start = |name: String| {
        let (url, dir) = (url.clone(), dir.path().to_owned());
        let schedule = "200ms,200ms,500ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s";
        tokio::task::spawn_blocking(move || crate::pg_common::node(&url, &dir, &name, schedule))
    };
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start(format!("n{i}-0")).await.unwrap());
    }
    let flaky = register(&client, &nodes[0].base, &format!("{hooks}/flaky")).await;
    let slow = register(&client, &nodes[1].base, &format!("{hooks}/slow")).await;
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        while get(&client, &format!("{}/v1/webhooks", n.base)).await.1["data"]
            .as_array()
            .map_or(0, Vec::len)
            < 2
        {
            assert!(Instant::now() < deadline, "a node never saw both webhooks");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Four publishers, each on a node of its own choosing per publish; they keep the ids of
    // the publishes a node acknowledged.
    let bases: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.base.clone()).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (client, bases, stop) = (client.clone(), bases.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("p{p}-{n}");
                let base = {
                    let b = bases.lock().unwrap();
                    b[fastrand::usize(..b.len())].clone()
                };
                let body =
                    json!({ "event_id": id, "event_type": "order.created", "payload": { "n": n } });
                if let Ok(r) = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(crate::serve_child::TOKEN)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                {
                    if r.status() == 202 {
                        acked.push(id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        }));
    }

    for cycle in 1..=20 {
        tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(..300))).await;
        let i = fastrand::usize(..nodes.len());
        let victim = nodes.remove(i);
        assert!(!victim.kill().success());
        // A node that is up verifies the shared ledger.
        assert_api_verify(&client, &nodes[0].base, &format!("after kill {cycle}")).await;
        let fresh = start(format!("n{i}-{cycle}")).await.unwrap();
        bases.lock().unwrap()[i] = fresh.base.clone();
        nodes.insert(i, fresh);
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for p in publishers {
        acked.extend(p.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "the publishers got through: {}",
        acked.len()
    );

    // Everything acknowledged reaches an end on both webhooks.
    let deadline = Instant::now() + Duration::from_secs(90);
    let expected = (acked.len() * 2) as u64;
    loop {
        let (_, state) = get(&client, &format!("{}/v1/state", nodes[0].base)).await;
        let c = &state["counts"];
        let done = c["delivered"].as_u64().unwrap_or(0) + c["dead"].as_u64().unwrap_or(0);
        let live = c["pending"].as_u64().unwrap_or(0) + c["in_attempt"].as_u64().unwrap_or(0);
        // A publish cut off by a kill may be stored without its answer: at least the
        // acknowledged ones, and nothing left live.
        if live == 0 && done >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all finished ({done} of {expected}): {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in &nodes {
        assert_api_verify(&client, &n.base, "at the end").await;
    }
    // Every acknowledged event is in the ledger on both webhooks, and every request a receiver
    // got is covered by an attempted record of its delivery.
    let attempts: HashMap<(String, String), i64> = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            crate::pg_common::connect(&url)
                .query(
                    "SELECT d.webhook_id::text, e.producer_id, count(*) FILTER (WHERE d.kind = 'attempted') \
                     FROM webhook_deliveries d JOIN events e USING (event_id) GROUP BY 1, 2",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect()
        })
        .await
        .unwrap()
    };
    for id in &acked {
        for w in [&flaky, &slow] {
            assert!(
                attempts.contains_key(&(w.clone(), id.clone())),
                "{id} to {w} is in the ledger"
            );
        }
    }
    for ((kind, id), requests) in got.lock().unwrap().iter() {
        let w = if kind == "flaky" { &flaky } else { &slow };
        let recorded = attempts.get(&(w.clone(), id.clone())).copied().unwrap_or(0);
        assert!(
            i64::from(*requests) <= recorded,
            "{kind} got {id} {requests} times, the ledger has {recorded} attempts"
        );
    }
}
