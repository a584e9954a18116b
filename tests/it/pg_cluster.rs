//! Several `hookledger serve` nodes (child processes) on one PostgreSQL schema: the work is
//! spread, a node killed with SIGKILL mid-attempt is taken over (its attempt abandoned and
//! retried by another node within 15 s), a node stopped with SIGTERM hands over without
//! abandoning anything, and the same event id published to two nodes at once is one event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::serve_child::{assert_api_verify, get, post_json, register, ServeChild};

async fn start(url: &str, dir: &std::path::Path, name: &str) -> ServeChild {
    crate::pg_common::start_node(url, dir, name, "1s,1s,1s,1s,1s,1s,1s,1s").await
}

/// A receiver: `/ok/{n}` answers 204; `/hang` holds its first request for a minute (the
/// attempt a kill cuts off) and answers the next ones at once. Every request is kept.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let (a, b) = (self.clone(), self.clone());
        let app = Router::new()
            .route(
                "/ok/{n}",
                post(move |Path(n): Path<String>, h: HeaderMap| {
                    let a = a.clone();
                    async move {
                        a.keep(&format!("ok/{n}"), &h);
                        StatusCode::NO_CONTENT
                    }
                }),
            )
            .route(
                "/hang",
                post(move |h: HeaderMap| {
                    let b = b.clone();
                    async move {
                        let first = b.keep("hang", &h) == 1;
                        if first {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        StatusCode::NO_CONTENT
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    /// Keeps a request; how many requests that path has had.
    fn keep(&self, path: &str, h: &HeaderMap) -> usize {
        let id = h
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut got = self.got.lock().unwrap();
        got.push((path.to_owned(), id, Instant::now()));
        got.iter().filter(|(p, _, _)| p == path).count()
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match done().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A node's count of deliveries in `state`.
async fn count(client: &reqwest::Client, base: &str, state: &str) -> u64 {
    let (_, s) = get(client, &format!("{base}/v1/state")).await;
    s["counts"][state].as_u64().unwrap_or(0)
}

/// The attempts a node made itself, from its own `/metrics`.
async fn attempts_by(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("hookledger_attempts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A SQL query on the schema, from a plain thread (the sync client needs one).
async fn sql(url: &str, query: &str) -> Vec<postgres::Row> {
    let (url, query) = (url.to_owned(), query.to_owned());
    tokio::task::spawn_blocking(move || crate::pg_common::connect(&url).query(&query, &[]).unwrap())
        .await
        .unwrap()
}

async fn publish(client: &reqwest::Client, base: &str, body: &Value) -> (u16, Value) {
    post_json(client, &format!("{base}/v1/events"), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_the_work_and_take_over_a_killed_nodes_attempt() {
    let url = pg_schema!("two_nodes_share_the_work_and_take_over_a_killed_nodes_attempt");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let client = reqwest::Client::new();
    let a = start(&url, dir.path(), "a").await;
    let b = start(&url, dir.path(), "b").await;
    let nodes = [&a, &b];

    // A node that joins gets its share within two lease rounds.
    wait_for(
        "both nodes hold leases",
        Duration::from_secs(10),
        async || {
            let rows = sql(
                &url,
                "SELECT count(DISTINCT node_id) FROM partition_leases WHERE expires_at > now()",
            )
            .await;
            let n: i64 = rows[0].get(0);
            (n == 2).then_some(()).ok_or(format!("{n} owners"))
        },
    )
    .await;
    // Webhooks created on either node, each one's events published on either node.
    for n in 0..16 {
        register(&client, &nodes[n % 2].base, &format!("{hooks}/ok/{n}")).await;
    }
    for base in [&a.base, &b.base] {
        wait_for(
            "both registries hold 16 webhooks",
            Duration::from_secs(5),
            async || {
                let (_, page) = get(&client, &format!("{base}/v1/webhooks")).await;
                let n = page["data"].as_array().map_or(0, Vec::len);
                (n == 16).then_some(()).ok_or(format!("{n}"))
            },
        )
        .await;
    }
    for i in 0..60 {
        let (status, body) = publish(
            &client,
            &nodes[i % 2].base,
            &json!({ "event_type": "order.created", "payload": { "i": i } }),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    for base in [&a.base, &b.base] {
        wait_for(
            "every node's projection shows 960 delivered",
            Duration::from_secs(60),
            async || {
                let d = count(&client, base, "delivered").await;
                (d == 960).then_some(()).ok_or(format!("{d} delivered"))
            },
        )
        .await;
    }
    let (by_a, by_b) = (
        attempts_by(&client, &a.base).await,
        attempts_by(&client, &b.base).await,
    );
    assert_eq!(
        by_a + by_b,
        960,
        "each delivery attempted once: {by_a} + {by_b}"
    );
    assert!(
        by_a > 100 && by_b > 100,
        "the work is spread: a {by_a}, b {by_b}"
    );
    assert_api_verify(&client, &a.base, "node a, after the spread").await;
    assert_api_verify(&client, &b.base, "node b, after the spread").await;

    // A delivery whose receiver hangs: kill its node mid-attempt.
    let hang = register(&client, &a.base, &format!("{hooks}/hang")).await;
    wait_for(
        "b knows the hanging webhook",
        Duration::from_secs(5),
        async || {
            let (s, _) = get(&client, &format!("{}/v1/webhooks/{hang}", b.base)).await;
            (s == 200).then_some(()).ok_or(format!("{s}"))
        },
    )
    .await;
    let (status, body) = publish(
        &client,
        &a.base,
        &json!({ "event_type": "order.created", "payload": { "hang": true } }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let event = body["event_id"].as_str().unwrap().to_owned();
    wait_for(
        "the hanging attempt started",
        Duration::from_secs(10),
        async || {
            let n = receiver
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| g.0 == "hang")
                .count();
            (n == 1).then_some(()).ok_or(format!("{n}"))
        },
    )
    .await;
    let partition = (uuid::Uuid::parse_str(&hang).unwrap().as_u128() % 64) as i32;
    let owner = sql(
        &url,
        &format!(
            "SELECT n.host FROM partition_leases l JOIN cluster_nodes n USING (node_id) \
             WHERE l.partition = {partition}"
        ),
    )
    .await;
    let host: String = owner[0].get(0);
    let (victim, survivor) = if host.ends_with(&format!("pid {}", a.pid())) {
        (a, b)
    } else {
        assert!(host.ends_with(&format!("pid {}", b.pid())), "{host}");
        (b, a)
    };
    let killed = Instant::now();
    assert!(!victim.kill().success());

    let trail_url = format!("{}/v1/deliveries/{hang}/{event}", survivor.base);
    wait_for(
        "the survivor abandons and retries the cut-off attempt",
        Duration::from_secs(15),
        async || {
            let (_, trail) = get(&client, &trail_url).await;
            let kinds: Vec<String> = trail["records"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["kind"].as_str().unwrap_or("").to_owned())
                .collect();
            (kinds == ["enqueued", "attempted", "failed", "attempted", "delivered"])
                .then_some(())
                .ok_or(format!("{kinds:?}"))
        },
    )
    .await;
    let took = killed.elapsed();
    let (_, trail) = get(&client, &trail_url).await;
    assert_eq!(trail["records"][2]["error_class"], "abandoned", "{trail}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let requests = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.0 == "hang")
        .count();
    assert_eq!(requests, 2, "the cut-off attempt and its retry");
    assert_api_verify(&client, &survivor.base, "after the takeover").await;
    let held = sql(
        &url,
        "SELECT count(DISTINCT node_id) FROM partition_leases WHERE expires_at > now()",
    )
    .await;
    assert_eq!(
        held[0].get::<_, i64>(0),
        1,
        "the survivor holds every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_hands_over_without_abandoning() {
    let url = pg_schema!("a_node_stopped_with_sigterm_hands_over_without_abandoning");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let client = reqwest::Client::new();
    let a = start(&url, dir.path(), "a").await;
    let b = start(&url, dir.path(), "b").await;
    for n in 0..8 {
        register(&client, &a.base, &format!("{hooks}/ok/{n}")).await;
    }
    wait_for("b holds its share", Duration::from_secs(10), async || {
        let rows = sql(
            &url,
            "SELECT count(DISTINCT node_id) FROM partition_leases WHERE expires_at > now()",
        )
        .await;
        let n: i64 = rows[0].get(0);
        (n == 2).then_some(()).ok_or(format!("{n} owners"))
    })
    .await;
    wait_for("b knows the webhooks", Duration::from_secs(5), async || {
        let (_, page) = get(&client, &format!("{}/v1/webhooks", b.base)).await;
        let n = page["data"].as_array().map_or(0, Vec::len);
        (n == 8).then_some(()).ok_or(format!("{n}"))
    })
    .await;
    for i in 0..100 {
        let (status, body) = publish(
            &client,
            &b.base,
            &json!({ "event_type": "order.created", "payload": { "i": i } }),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        if i == 50 {
            assert!(a.stop().success(), "a stops gracefully");
            break;
        }
    }
    wait_for(
        "b delivers everything",
        Duration::from_secs(60),
        async || {
            let d = count(&client, &b.base, "delivered").await;
            (d == 51 * 8).then_some(()).ok_or(format!("{d} delivered"))
        },
    )
    .await;
    let abandoned = sql(
        &url,
        "SELECT count(*) FROM webhook_deliveries WHERE error_class = 'abandoned'",
    )
    .await;
    assert_eq!(
        abandoned[0].get::<_, i64>(0),
        0,
        "a SIGTERM abandons nothing"
    );
    // a released its partitions as it stopped; b takes them at its next lease round.
    wait_for("b holds every partition", Duration::from_secs(5), async || {
        let held = sql(&url, "SELECT count(*) FROM partition_leases l JOIN cluster_nodes n USING (node_id) WHERE n.stopped_at IS NULL AND l.expires_at > now()").await;
        let n: i64 = held[0].get(0);
        (n == 64).then_some(()).ok_or(format!("{n} held"))
    })
    .await;
    assert_api_verify(&client, &b.base, "after the hand-over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_id_published_to_two_nodes_at_once_is_one_event() {
    let url = pg_schema!("the_same_event_id_published_to_two_nodes_at_once_is_one_event");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let client = reqwest::Client::new();
    let a = start(&url, dir.path(), "a").await;
    let b = start(&url, dir.path(), "b").await;
    register(&client, &a.base, &format!("{hooks}/ok/0")).await;
    wait_for("b knows the webhook", Duration::from_secs(5), async || {
        let (_, page) = get(&client, &format!("{}/v1/webhooks", b.base)).await;
        let n = page["data"].as_array().map_or(0, Vec::len);
        (n == 1).then_some(()).ok_or(format!("{n}"))
    })
    .await;
    const SAME: usize = 1000;
    const OTHER: usize = 50;
    let mut answers: HashMap<usize, [(u16, Value); 2]> = HashMap::new();
    let mut pending = Vec::new();
    for i in 0..SAME + OTHER {
        let (c, a, b) = (client.clone(), a.base.clone(), b.base.clone());
        pending.push(tokio::spawn(async move {
            let id = format!("order-{i}");
            let one =
                json!({ "event_id": id, "event_type": "order.created", "payload": { "i": i } });
            // The last OTHER ids get a different body on the second node.
            let other = if i >= SAME {
                json!({ "event_id": id, "event_type": "order.created", "payload": { "i": -1 } })
            } else {
                one.clone()
            };
            let (x, y) = tokio::join!(publish(&c, &a, &one), publish(&c, &b, &other));
            (i, [x, y])
        }));
        if pending.len() == 16 {
            for p in pending.drain(..) {
                let (i, pair) = p.await.unwrap();
                answers.insert(i, pair);
            }
        }
    }
    for p in pending {
        let (i, pair) = p.await.unwrap();
        answers.insert(i, pair);
    }
    for (i, [(s1, b1), (s2, b2)]) in &answers {
        let mut statuses = [*s1, *s2];
        statuses.sort_unstable();
        if *i < SAME {
            assert_eq!(
                statuses,
                [200, 202],
                "id {i}: one publish, one duplicate: {b1} {b2}"
            );
        } else {
            assert_eq!(
                statuses,
                [202, 409],
                "id {i}: another body is refused: {b1} {b2}"
            );
        }
    }
    let events = sql(
        &url,
        "SELECT count(*), count(DISTINCT producer_id) FROM events",
    )
    .await;
    assert_eq!(events[0].get::<_, i64>(0), (SAME + OTHER) as i64);
    assert_eq!(events[0].get::<_, i64>(1), (SAME + OTHER) as i64);
    let enqueued = sql(
        &url,
        "SELECT count(*) FROM webhook_deliveries WHERE kind = 'enqueued'",
    )
    .await;
    assert_eq!(
        enqueued[0].get::<_, i64>(0),
        (SAME + OTHER) as i64,
        "one delivery per event"
    );
    assert_api_verify(&client, &a.base, "node a").await;
    assert_api_verify(&client, &b.base, "node b").await;
}
