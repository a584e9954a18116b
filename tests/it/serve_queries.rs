//! `hookledger serve` as operators read it: the delivery listing and its cursor, the test
//! delivery, `/metrics`, the queue at a past instant (an insta snapshot), and the URL check at
//! registration. The real binary, real receivers, real HTTP.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::serve::{call, get, post_json, receiver, record_kinds, wait_for, Server, TOKEN};

/// A receiver that answers every request with `status`.
async fn answering(status: u16) -> String {
    let app = Router::new().route(
        "/hook",
        post(move || async move { StatusCode::from_u16(status).unwrap() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn register(base: &str, url: &str) -> String {
    let (status, webhook) = post_json(&format!("{base}/v1/webhooks"), json!({ "url": url })).await;
    assert_eq!(status, 201, "{webhook}");
    webhook["id"].as_str().unwrap().to_owned()
}

fn event_id(n: u32) -> String {
    format!("0190c3a1-0000-7000-8000-{n:012}")
}

async fn publish(base: &str, n: u32) {
    let body =
        json!({ "event_id": event_id(n), "event_type": "order.created", "payload": {"n": n} });
    let (status, answer) = post_json(&format!("{base}/v1/events"), body).await;
    assert_eq!(status, 202, "{answer}");
}

/// Polls `GET /v1/state` until nothing is in an attempt.
async fn settled(base: &str) -> Value {
    for _ in 0..400 {
        let (_, state) = get(&format!("{base}/v1/state")).await;
        if state["counts"]["in_attempt"] == 0 {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("attempts did not settle");
}

fn pairs(page: &Value) -> Vec<(String, String, String)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("webhook_id"), s("event_id"), s("state"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_in_enqueue_order_with_a_stable_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("list.duckdb"),
        &[
            ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
            ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ],
    );
    let base = server.base.clone();
    let (ok_url, got) = receiver().await;
    let ok = register(&base, &ok_url).await;
    let failing = register(&base, &answering(500).await).await;
    for n in 1..=3 {
        publish(&base, n).await;
    }
    wait_for(&got, 3).await;
    settled(&base).await;

    let list = format!("{base}/v1/deliveries");
    let (status, all) = get(&format!("{list}?limit=100")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["data"].as_array().unwrap().len(), 6);
    assert_eq!(all["next_cursor"], Value::Null, "a short page is the last");

    // Pages of 4 then 2, in enqueue order, and the cursor still points at the same place after
    // the log grows.
    let (_, first) = get(&format!("{list}?limit=4")).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    publish(&base, 4).await;
    settled(&base).await;
    let (_, second) = get(&format!("{list}?limit=4&cursor={cursor}")).await;
    let mut paged = pairs(&first);
    paged.extend(pairs(&second));
    let (_, everything) = get(&list).await;
    assert_eq!(paged, pairs(&everything), "pages join up without gaps");
    assert_eq!(paged.len(), 8);

    let (_, dead_ends) = get(&format!("{list}?webhook_id={failing}&state=pending")).await;
    let rows = dead_ends["data"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{dead_ends}");
    for row in rows {
        assert_eq!(row["last_status"], 500);
        assert_eq!(row["last_error_class"], "status");
        assert_eq!(row["attempts"], 1);
        assert!(row["due_at"].is_string(), "pending rows say when: {row}");
    }
    let (_, one) = get(&format!("{list}?event_id={}&state=delivered", event_id(2))).await;
    assert_eq!(pairs(&one), [(ok, event_id(2), "delivered".into())]);

    for (query, field) in [
        ("cursor=nonsense", "cursor"),
        ("cursor=ZW5xOi0x", "cursor"),
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("webhook_id=7", "webhook_id"),
        ("colour=red", "colour"),
    ] {
        let (status, answer) = get(&format!("{list}?{query}")).await;
        assert!((400..500).contains(&status), "{query}: {status}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_delivery_is_signed_recorded_and_answered_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("test.duckdb"));
    let base = server.base.clone();
    let (url, got) = receiver().await;
    let (_, webhook) = post_json(
        &format!("{base}/v1/webhooks"),
        json!({ "url": url, "event_types": ["invoice.paid"] }),
    )
    .await;
    let id = webhook["id"].as_str().unwrap();
    let secret = webhook["secret"].as_str().unwrap();

    let (status, answer) = post_json(&format!("{base}/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], true, "{answer}");
    assert_eq!(answer["records"][0]["kind"], "delivered");
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "sent despite the filter, exactly once");
        let (headers, body) = &got[0];
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body, headers)
            .expect("the test event is signed");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["type"], "webhook.test");
    }
    let event = answer["event_id"].as_str().unwrap();
    let (_, trail) = get(&format!("{base}/v1/deliveries/{id}/{event}")).await;
    assert_eq!(record_kinds(&trail), ["enqueued", "attempted", "delivered"]);

    let failing = register(&base, &answering(503).await).await;
    let (status, answer) =
        post_json(&format!("{base}/v1/webhooks/{failing}/test"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], false);
    assert_eq!(answer["records"][0]["kind"], "failed");
    assert_eq!(answer["records"][0]["status"], 503);

    let unknown = "0190c3a1-0000-7000-8000-00000000dead";
    let (status, _) = post_json(&format!("{base}/v1/webhooks/{unknown}/test"), json!({})).await;
    assert_eq!(status, 404);
    call(
        reqwest::Method::DELETE,
        &format!("{base}/v1/webhooks/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    let (status, answer) = post_json(&format!("{base}/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, 409, "an inactive webhook gets no test: {answer}");
    let (status, answer) = post_json(
        &format!("{base}/v1/deliveries/{id}/{unknown}/redeliver"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "redeliver of no delivery: {answer}");
}

/// The value of the exposition line that starts with `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_and_the_queue_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("metrics.duckdb"),
        &[
            ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
            ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ],
    );
    let base = server.base.clone();
    let (url, got) = receiver().await;
    register(&base, &url).await;
    register(&base, &answering(500).await).await;
    for n in 1..=2 {
        publish(&base, n).await;
    }
    wait_for(&got, 2).await;
    settled(&base).await;
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let delivered = r#"hookledger_attempts_total{outcome="delivered",error_class=""}"#;
    let failed = r#"hookledger_attempts_total{outcome="failed",error_class="status"}"#;
    assert_eq!(sample(&text, delivered), 2.0);
    assert_eq!(sample(&text, failed), 2.0);
    assert_eq!(
        sample(&text, r#"hookledger_deliveries{state="delivered"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"hookledger_deliveries{state="pending"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, "hookledger_attempt_duration_seconds_count"),
        4.0
    );
    let (_, state) = get(&format!("{base}/v1/state")).await;
    assert_eq!(
        sample(&text, "hookledger_ledger_seq"),
        state["as_of_seq"].as_f64().unwrap()
    );
    assert!(!text.contains(&url), "no URLs in metrics");
}

/// Replaces the random webhook ids with names and every time with a placeholder, so the
/// snapshot shows the structure: which deliveries, in which state, with how many attempts.
fn normalised(state: &Value, names: &[(&str, &str)]) -> String {
    let mut text = serde_json::to_string_pretty(state).unwrap();
    for (id, name) in names {
        text = text.replace(id, name);
    }
    let time = times_in(&text);
    for t in time {
        text = text.replace(&t, "[time]");
    }
    text
}

/// Every RFC 3339 string value in `text` (the `"...Z"` strings after `": "`).
fn times_in(text: &str) -> Vec<String> {
    text.split('"')
        .filter(|s| s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_at_a_past_instant_is_the_queue_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("at.duckdb"),
        &[
            ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
            ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ],
    );
    let base = server.base.clone();
    let (url, got) = receiver().await;
    let ok = register(&base, &url).await;
    let failing = register(&base, &answering(500).await).await;
    for n in 1..=2 {
        publish(&base, n).await;
    }
    wait_for(&got, 2).await;
    let then = settled(&base).await;
    let at = then["as_of"].as_str().unwrap().to_owned();

    // Later: another event, and the failing webhook is deleted (its deliveries parked).
    publish(&base, 3).await;
    wait_for(&got, 3).await;
    settled(&base).await;
    call(
        reqwest::Method::DELETE,
        &format!("{base}/v1/webhooks/{failing}"),
        Some(TOKEN),
        None,
    )
    .await;
    let (_, now) = get(&format!("{base}/v1/state")).await;
    assert_eq!(now["counts"]["parked"], 3, "{now}");

    let (status, past) = get(&format!("{base}/v1/state?at={at}")).await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(
        past, then,
        "the queue at `at` is the queue that was live then"
    );
    let text = normalised(&past, &[(&ok, "webhook-ok"), (&failing, "webhook-failing")]);
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("serve_state_at_a_past_instant", text);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_an_internal_address_is_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("dns.duckdb"), &[]);
    let hooks = format!("{}/v1/webhooks", server.base);
    let (status, answer) = post_json(&hooks, json!({ "url": "http://localhost:9/hook" })).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "url");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{answer}"
    );
    // `.invalid` never resolves (RFC 6761): accepted now, checked again at every delivery.
    let (status, answer) = post_json(
        &hooks,
        json!({ "url": "https://hookledger-test.invalid/hook" }),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_the_parked_deliveries_of_the_window_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("recover.duckdb"),
        &[
            ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
            ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ],
    );
    let base = server.base.clone();
    let failing = register(&base, &answering(500).await).await;
    for n in 1..=3 {
        publish(&base, n).await;
    }
    settled(&base).await;
    let webhook = format!("{base}/v1/webhooks/{failing}");
    let (_, deleted) = call(reqwest::Method::DELETE, &webhook, Some(TOKEN), None).await;
    assert_eq!(deleted["parked"], 3, "{deleted}");
    let (status, _) = call(
        reqwest::Method::PATCH,
        &webhook,
        Some(TOKEN),
        Some(json!({ "active": true })),
    )
    .await;
    assert_eq!(status, 200);

    let recover = format!("{webhook}/recover");
    let (_, none) = post_json(
        &recover,
        json!({ "since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z" }),
    )
    .await;
    assert_eq!(none["requeued"], 0, "nothing parked in that window");
    let (status, answer) = post_json(&recover, json!({ "since": "2020-01-01T00:00:00Z" })).await;
    assert_eq!((status, &answer["requeued"]), (200, &json!(3)), "{answer}");
    let (_, again) = post_json(&recover, json!({ "since": "2020-01-01T00:00:00Z" })).await;
    assert_eq!(again["requeued"], 0, "requeued deliveries are live again");
    let (_, list) = get(&format!("{base}/v1/deliveries?state=parked")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}
