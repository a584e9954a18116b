//! `hookledger serve` end to end: the real binary as a child process, a real receiver, HTTP
//! requests with reqwest. Register, publish, receive (verified with `standardwebhooks`), read
//! the audit trail, refuse bad input without writing, stop on SIGTERM, restart with everything
//! still there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

pub(crate) const TOKEN: &str = "test-token-0123456789";

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(db: &Path) -> Self {
        Self::start_with(db, &[("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1")])
    }

    /// Starts serve on `db` with these extra environment variables.
    pub(crate) fn start_with(db: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-payload",
                "4096",
                "--db",
            ])
            .arg(db)
            .env("HOOKLEDGER_API_TOKEN", TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("serve printed where it listens")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub(crate) async fn get(url: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, Some(TOKEN), None).await
}

pub(crate) async fn post_json(url: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(TOKEN), Some(body)).await
}

pub(crate) type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

pub(crate) async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((headers, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// The kinds of a delivery trail's records, in order.
pub(crate) fn record_kinds(trail: &Value) -> Vec<&str> {
    trail["records"]
        .as_array()
        .expect("a trail has records")
        .iter()
        .map(|r| r["kind"].as_str().expect("a record has a kind"))
        .collect()
}

pub(crate) async fn as_of_seq(base: &str) -> u64 {
    get(&format!("{base}/v1/state")).await.1["as_of_seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_publish_receive_audit_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("serve.duckdb");
    let (hook_url, got) = receiver().await;
    let server = Server::start(&db);
    let base = server.base.clone();
    assert_eq!(
        call(reqwest::Method::GET, &format!("{base}/healthz"), None, None)
            .await
            .0,
        200
    );

    let (status, webhook) = post_json(
        &format!("{base}/v1/webhooks"),
        json!({ "url": hook_url, "event_types": ["order"] }),
    )
    .await;
    assert_eq!(status, 201, "{webhook}");
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let (_, listed) = get(&format!("{base}/v1/webhooks")).await;
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are never listed"
    );

    let event_id = "0190c3a1-0000-7000-8000-0000000000aa";
    let (status, published) = post_json(
        &format!("{base}/v1/events"),
        json!({ "event_id": event_id, "event_type": "order.created", "payload": {"total": 12} }),
    )
    .await;
    assert_eq!(status, 202, "{published}");
    assert_eq!(published["deliveries"], json!([webhook_id]));
    let trail_url = format!("{base}/v1/deliveries/{webhook_id}/{event_id}");
    let mut trail = Value::Null;
    for _ in 0..200 {
        trail = get(&trail_url).await.1;
        if trail["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(record_kinds(&trail), ["enqueued", "attempted", "delivered"]);
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
        verifier
            .verify(&got[0].1, &got[0].0)
            .expect("signature verifies");
        let body: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(
            body["data"],
            json!({"total": 12}),
            "the Standard Webhooks envelope"
        );
        assert_eq!(body["type"], "order.created");
    }
    let (status, again) = post_json(
        &format!("{base}/v1/events"),
        json!({ "event_id": event_id, "event_type": "order.created", "payload": {"total": 12} }),
    )
    .await;
    assert_eq!((status, &again["deliveries"]), (200, &json!([webhook_id])));
    let (status, _) = post_json(
        &format!("{base}/v1/events"),
        json!({ "event_id": event_id, "event_type": "order.created", "payload": {"total": 13} }),
    )
    .await;
    assert_eq!(status, 409);

    let (_, page) = get(&format!("{base}/v1/ledger?limit=2")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after_seq"], 2);
    let (_, rest) = get(&format!(
        "{base}/v1/ledger?after_seq=2&webhook_id={webhook_id}"
    ))
    .await;
    assert_eq!(rest["data"][0]["kind"], "delivered");
    let (_, delivered) = get(&format!("{base}/v1/ledger?kind=delivered")).await;
    assert_eq!(delivered["data"].as_array().unwrap().len(), 1);

    assert!(server.stop().success(), "SIGTERM exits 0");
    let server = Server::start(&db);
    let (status, after) = get(&format!(
        "{}/v1/deliveries/{webhook_id}/{event_id}",
        server.base
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        after["records"], trail["records"],
        "everything is still there"
    );
    assert_eq!(
        get(&format!("{}/v1/verify", server.base)).await.1["ok"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_naming_the_field_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("bad.duckdb"));
    let base = server.base.clone();
    let hooks = format!("{base}/v1/webhooks");
    let events = format!("{base}/v1/events");
    for token in [None, Some("wrong")] {
        let (status, body) = call(reqwest::Method::GET, &hooks, token, None).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let before = as_of_seq(&base).await;
    let cases = [
        (&hooks, json!({}), 400, "url"),
        (
            &hooks,
            json!({ "url": "http://127.0.0.1/", "colour": 1 }),
            400,
            "colour",
        ),
        (&hooks, json!({ "url": 7 }), 400, "url"),
        (&hooks, json!({ "url": "ftp://x/" }), 422, "url"),
        (&hooks, json!({ "url": "http://10.1.2.3/" }), 422, "url"),
        (&hooks, json!({ "url": "http://0x7f000001/" }), 200, ""),
        (
            &hooks,
            json!({ "url": "http://127.0.0.1/", "event_types": ["a..b"] }),
            422,
            "event_types",
        ),
        (
            &hooks,
            json!({ "url": "http://127.0.0.1/", "secret": "nope" }),
            422,
            "secret",
        ),
        (&events, json!({ "payload": {} }), 400, "event_type"),
        (
            &events,
            json!({ "event_type": "a b", "payload": {} }),
            422,
            "event_type",
        ),
        (
            &events,
            json!({ "event_type": "a", "payload": {}, "event_id": "has space" }),
            422,
            "event_id",
        ),
        (
            &events,
            json!({ "event_type": "a", "payload": "x".repeat(5000) }),
            413,
            "body",
        ),
    ];
    for (url, body, status, field) in cases {
        let (got, answer) = post_json(url, body.clone()).await;
        if status == 200 {
            // 0x7f000001 is 127.0.0.1, which this server allowlists: accepted.
            assert_eq!(got, 201, "{body}: {answer}");
            continue;
        }
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = get(&format!("{base}/v1/state?at=yesterday")).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("at"))
    );
    for (query, status, field) in [
        ("limit=0", 422, "limit"),
        ("kind=exploded", 422, "kind"),
        ("after_seq=-1", 400, "after_seq"),
        ("webhook_id=nope", 422, "webhook_id"),
        ("colour=red", 400, "colour"),
    ] {
        let (got, answer) = get(&format!("{base}/v1/ledger?{query}")).await;
        assert_eq!(
            (got, answer["error"]["field"].as_str()),
            (status, Some(field)),
            "{query}: {answer}"
        );
    }
    let (status, _) = get(&format!("{base}/v1/deliveries/nope/nope")).await;
    assert_eq!(status, 422);
    assert_eq!(
        as_of_seq(&base).await,
        before,
        "no ledger record for refused requests"
    );
}

pub(crate) async fn wait_for(got: &Received, n: usize) {
    for _ in 0..400 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the receiver did not get {n} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_redeliver_rotate_patch_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ops.duckdb"));
    let base = server.base.clone();
    let (hook_url, got) = receiver().await;
    let (_, webhook) = post_json(&format!("{base}/v1/webhooks"), json!({ "url": hook_url })).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let old_secret = webhook["secret"].as_str().unwrap().to_owned();
    let event_id = "0190c3a1-0000-7000-8000-0000000000bb";
    let publish = json!({ "event_id": event_id, "event_type": "x", "payload": {} });
    assert_eq!(
        post_json(&format!("{base}/v1/events"), publish).await.0,
        202
    );
    wait_for(&got, 1).await;

    // Rotation: the next attempt is signed by both keys, each verifying alone.
    let (status, rotated) =
        post_json(&format!("{base}/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    let redeliver = format!("{base}/v1/deliveries/{id}/{event_id}/redeliver");
    let mut requeued = (0, Value::Null);
    for _ in 0..100 {
        // The first answer may race the delivered record of the first attempt.
        requeued = post_json(&redeliver, json!({})).await;
        if requeued.0 == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(requeued.0, 202, "{}", requeued.1);
    wait_for(&got, 2).await;
    {
        let got = got.lock().unwrap();
        let (headers, body) = &got[1];
        let signatures = headers["webhook-signature"].to_str().unwrap();
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
        for secret in [&old_secret, &new_secret] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(body, headers)
                .expect("each key verifies alone");
        }
    }

    let (status, patched) = call(
        reqwest::Method::PATCH,
        &format!("{base}/v1/webhooks/{id}"),
        Some(TOKEN),
        Some(json!({ "description": "shop", "active": false })),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (patched["active"].clone(), patched["description"].clone()),
        (json!(false), json!("shop"))
    );

    let recover = format!("{base}/v1/webhooks/{id}/recover");
    let (status, answer) = post_json(&recover, json!({ "since": "last week" })).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("since"))
    );
    let (status, answer) = post_json(&recover, json!({ "since": "2020-01-01T00:00:00Z" })).await;
    assert_eq!(
        (status, answer["requeued"].as_u64()),
        (200, Some(0)),
        "nothing dead or parked"
    );
}
