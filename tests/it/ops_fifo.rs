//! FIFO webhooks against the real `hookledger serve`: 500 events to a receiver that fails 30 %
//! of the requests at random arrive in publish order (each event's first 2xx after the
//! previous event's), across a SIGKILL and a restart of the server in the middle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ops_common::{Hit, Receiver};
use crate::serve_child::{post_json, ServeChild};

const ENV: [(&str, &str); 3] = [
    ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
    // 13 attempts: a delivery dead-parks with odds 0.3^13 (none of 500 in practice).
    (
        "HOOKLEDGER_RETRY_SCHEDULE",
        "20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms",
    ),
    ("HOOKLEDGER_ATTEMPT_TIMEOUT", "5s"),
];

async fn start(db: &std::path::Path, log: &std::path::Path) -> ServeChild {
    let (db, log) = (db.to_owned(), log.to_owned());
    tokio::task::spawn_blocking(move || ServeChild::start(&db, &ENV, &log))
        .await
        .unwrap()
}

/// The event number `n` of a hit (the standard envelope's `data`).
fn number(hit: &Hit) -> u64 {
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    body["data"]["n"].as_u64().unwrap()
}

/// Each event's first 2xx, by event number.
fn first_ok(hits: &[Hit]) -> HashMap<u64, Instant> {
    let mut first = HashMap::new();
    for h in hits.iter().filter(|h| h.ok) {
        first.entry(number(h)).or_insert(h.at);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_webhook_gets_500_events_in_publish_order_across_a_restart_with_30_percent_failures()
{
    const N: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("f.duckdb"), dir.path().join("log"));
    let server = start(&db, &log).await;
    let client = reqwest::Client::new();
    let (rx, url) = Receiver::start(0, 0.3, 16).await;
    let (status, w) = post_json(
        &client,
        &format!("{}/v1/webhooks", server.base),
        &json!({ "url": url, "ordering": "fifo" }),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["ordering"], json!("fifo"), "{w}");
    for n in 0..N {
        let body = json!({ "event_type": "order.created", "payload": { "n": n } });
        let (status, answer) =
            post_json(&client, &format!("{}/v1/events", server.base), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    // Killed in the middle of the line, then started again on the same file.
    let bound = Instant::now() + Duration::from_secs(120);
    while first_ok(&rx.hits()).len() < (N / 3) as usize {
        assert!(
            Instant::now() < bound,
            "stalled at {}",
            first_ok(&rx.hits()).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let before = first_ok(&rx.hits()).len();
    assert!(
        before < N as usize,
        "all delivered before the kill: no restart tested"
    );
    let server = start(&db, &log).await;
    let bound = Instant::now() + Duration::from_secs(240);
    while first_ok(&rx.hits()).len() < N as usize {
        assert!(
            Instant::now() < bound,
            "stalled at {} of {N}",
            first_ok(&rx.hits()).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = rx.hits();
    let first = first_ok(&hits);
    for n in 1..N {
        assert!(
            first[&(n - 1)] < first[&n],
            "event {n} got its first 2xx before event {}",
            n - 1
        );
    }
    let failed = hits.iter().filter(|h| !h.ok).count();
    eprintln!(
        "fifo: {N} events, {} requests ({failed} answered 500), {before} delivered before the kill",
        hits.len()
    );
    assert!(
        failed > 100,
        "the receiver failed only {failed}: no failing heads tested"
    );
    let status = server.stop();
    assert!(status.success(), "{status}");
}
