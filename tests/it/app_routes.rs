//! Apps and scoped tokens through the real router, served in process on 127.0.0.1, with real
//! receivers (issue 11, points 1 to 3): per-app fan-out, per-app state and metrics that add up
//! to the whole, a scoped token that reaches only its own app (404 for another app's objects,
//! 403 on operator-only routes, 401 once revoked), and producers' event ids over HTTP.

use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::SystemClock;
use hookledger::delivery::engine::{Engine, EngineConfig};
use hookledger::delivery::sender::SenderConfig;
use hookledger::ledger::Ledger;
use hookledger::store::Store;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{loopback_sender, serve_api};

use super::apps::Receiver;

const OPERATOR: &str = "operator-token-3b1f9c";

struct Api {
    base: String,
    client: reqwest::Client,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("apps.duckdb"), Arc::new(SystemClock)).unwrap();
        let (sender, egress) = loopback_sender(SenderConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SenderConfig::default()
        });
        let engine = Engine::new(
            Arc::new(ledger),
            sender,
            Arc::new(SystemClock),
            EngineConfig::default(),
        );
        let base = serve_api(&engine, egress, OPERATOR).await;
        Self {
            base,
            client: reqwest::Client::new(),
            engine,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, OPERATOR, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    async fn create_app(&self, uid: &str) {
        self.ok(
            Method::POST,
            "/v1/apps",
            Some(json!({"uid": uid, "name": uid.to_uppercase()})),
        )
        .await;
    }

    async fn webhook(&self, app: &str, url: &str, extra: Value) -> String {
        let mut body = json!({"url": url, "event_types": ["order"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let v = self
            .ok(
                Method::POST,
                &format!("/v1/apps/{app}/webhooks"),
                Some(body),
            )
            .await;
        assert_eq!(v["app"], app);
        v["id"].as_str().unwrap().to_owned()
    }

    /// What has been written: records, registry changes, the last event's seq.
    fn written(&self) -> (u64, u64, Option<u64>) {
        let shared = self.engine.ledger().shared();
        let records = shared.read_projection().last_seq();
        let changes = shared.read_registry().last_seq();
        let events = self
            .engine
            .ledger()
            .reader()
            .unwrap()
            .last_event()
            .unwrap()
            .map(|(seq, _)| seq);
        (records, changes, events)
    }
}

/// Waits (bounded) until `f` holds: receivers get their POSTs on their own time.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

fn counts(state: &Value) -> [u64; 5] {
    ["pending", "in_attempt", "delivered", "dead", "parked"].map(|s| {
        state["counts"][s]
            .as_u64()
            .unwrap_or_else(|| panic!("{state}"))
    })
}

/// `hookledger_deliveries` by state, from Prometheus text (with or without an `app` label).
fn metric_counts(text: &str) -> [u64; 5] {
    ["pending", "in_attempt", "delivered", "dead", "parked"].map(|state| {
        text.lines()
            .filter(|l| l.starts_with("hookledger_deliveries{"))
            .filter(|l| l.contains(&format!("state=\"{state}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    })
}

#[tokio::test]
async fn an_event_reaches_only_its_apps_webhooks_and_per_app_state_and_metrics_add_up() {
    let api = Api::start().await;
    api.create_app("acme").await;
    api.create_app("globex").await;
    let (ra, url_a) = Receiver::start(0).await;
    let (rb, url_b) = Receiver::start(0).await;
    let (rd, url_d) = Receiver::start(0).await;
    // A receiver that fails twice: its delivery waits, pending, for a retry.
    let (_rf, url_f) = Receiver::start(2).await;
    let wa = api.webhook("acme", &url_a, json!({})).await;
    let wb = api.webhook("globex", &url_b, json!({})).await;
    let wf = api.webhook("globex", &url_f, json!({})).await;
    let v = api
        .ok(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url_d, "event_types": ["order"]})),
        )
        .await;
    assert_eq!(
        v["app"], "default",
        "the unscoped route writes into the default app"
    );

    let published = api
        .ok(
            Method::POST,
            "/v1/apps/acme/events",
            Some(json!({"event_id": "ord-1", "event_type": "order.created", "payload": {"n": 1}})),
        )
        .await;
    assert_eq!(published["event_id"], "ord-1");
    assert_eq!(published["deliveries"], json!([wa]), "only acme's webhook");
    for n in 0..3 {
        api.ok(
            Method::POST,
            "/v1/apps/globex/events",
            Some(json!({"event_id": format!("g-{n}"), "event_type": "order.paid", "payload": {}})),
        )
        .await;
    }
    api.ok(
        Method::POST,
        "/v1/events",
        Some(json!({"event_type": "order.x", "payload": {}})),
    )
    .await;
    eventually("acme's receiver got ord-1", || ra.bodies().len() == 1).await;
    eventually("globex's receiver got 3", || rb.bodies().len() == 3).await;
    eventually("default's receiver got 1", || rd.bodies().len() == 1).await;
    let body: Value = serde_json::from_slice(&ra.bodies()[0]).unwrap();
    assert_eq!(body["data"], json!({"n": 1}));

    // Deliveries listed per app are that app's only, and they show the producer's ids.
    let listed = api
        .ok(Method::GET, "/v1/apps/globex/deliveries", None)
        .await;
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{listed}");
    assert!(rows.iter().all(|r| r["app"] == "globex"));
    assert!(rows
        .iter()
        .all(|r| r["webhook_id"] == wb || r["webhook_id"] == wf));
    assert!(rows.iter().any(|r| r["event_id"] == "g-0"));
    let same = api.ok(Method::GET, "/v1/deliveries?app=globex", None).await;
    assert_eq!(same["data"], listed["data"]);

    // Per-app state and metrics add up to the whole, and the failing delivery is in them
    // (once every first attempt is recorded: the re-drive loop is not running, so nothing
    // moves after that).
    let mut settled = false;
    for _ in 0..500 {
        let now = counts(&api.ok(Method::GET, "/v1/state", None).await);
        if now[1] == 0 && now.iter().sum::<u64>() == 8 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "every first attempt recorded");
    let whole = counts(&api.ok(Method::GET, "/v1/state", None).await);
    let whole_metrics = metric_counts(
        api.ok(Method::GET, "/metrics", None)
            .await
            .as_str()
            .unwrap(),
    );
    let mut sum = [0; 5];
    let mut sum_metrics = [0; 5];
    for app in ["default", "acme", "globex"] {
        let part = counts(
            &api.ok(Method::GET, &format!("/v1/state?app={app}"), None)
                .await,
        );
        let text = api
            .ok(Method::GET, &format!("/metrics?app={app}"), None)
            .await;
        let text = text.as_str().unwrap();
        assert!(text.contains(&format!("app=\"{app}\"")), "{text}");
        let part_metrics = metric_counts(text);
        assert_eq!(part, part_metrics, "{app}: state and metrics agree");
        for i in 0..5 {
            sum[i] += part[i];
            sum_metrics[i] += part_metrics[i];
        }
    }
    assert_eq!(sum, whole);
    assert_eq!(sum_metrics, whole_metrics);
    assert_eq!(whole.iter().sum::<u64>(), 8, "{whole:?}");
    assert!(
        whole[0] + whole[1] > 0,
        "the failing receiver keeps some live: {whole:?}"
    );
    let acme = counts(&api.ok(Method::GET, "/v1/state?app=acme", None).await);
    assert_eq!(acme, [0, 0, 1, 0, 0]);
    // Metrics naming an app need a token.
    let resp = reqwest::get(format!("{}/metrics?app=acme", api.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = reqwest::get(format!("{}/metrics", api.base)).await.unwrap();
    assert_eq!(resp.status(), 200, "the unlabelled metrics stay public");
}

#[tokio::test]
async fn a_scoped_token_reaches_only_its_app_and_stops_working_once_revoked() {
    let api = Api::start().await;
    api.create_app("a").await;
    api.create_app("b").await;
    let (rb, url_b) = Receiver::start(0).await;
    let (_ra, url_a) = Receiver::start(0).await;
    let wa = api.webhook("a", &url_a, json!({})).await;
    let wb = api.webhook("b", &url_b, json!({})).await;
    api.ok(
        Method::POST,
        "/v1/apps/b/events",
        Some(json!({"event_id": "evt-b", "event_type": "order", "payload": {}})),
    )
    .await;
    eventually("b's receiver got evt-b", || rb.bodies().len() == 1).await;

    let issued = api.ok(Method::POST, "/v1/apps/a/tokens", None).await;
    let token = issued["token_value"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hlt_") && token.len() == 68, "{issued}");
    let token_id = issued["id"].as_str().unwrap().to_owned();
    let listed = api.ok(Method::GET, "/v1/apps/a/tokens", None).await;
    assert_eq!(listed["data"][0]["id"], token_id.as_str());
    assert!(
        !listed.to_string().contains(&token),
        "a listing never shows the value"
    );

    // Another app's objects: 404, exactly as a missing one, and nothing is written.
    let before = api.written();
    let other: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/apps/b".into(), None),
        (
            Method::PATCH,
            "/v1/apps/b".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, format!("/v1/webhooks/{wb}"), None),
        (
            Method::PATCH,
            format!("/v1/webhooks/{wb}"),
            Some(json!({"active": false})),
        ),
        (Method::DELETE, format!("/v1/webhooks/{wb}"), None),
        (
            Method::POST,
            format!("/v1/webhooks/{wb}/rotate-secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{wb}/recover"),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        (Method::POST, format!("/v1/webhooks/{wb}/test"), None),
        (Method::GET, "/v1/apps/b/webhooks".into(), None),
        (Method::GET, format!("/v1/apps/b/webhooks/{wb}"), None),
        (
            Method::POST,
            "/v1/apps/b/webhooks".into(),
            Some(json!({"url": url_b})),
        ),
        (
            Method::POST,
            "/v1/apps/b/events".into(),
            Some(json!({"event_type": "order", "payload": {}})),
        ),
        (Method::GET, format!("/v1/deliveries/{wb}/evt-b"), None),
        (
            Method::POST,
            format!("/v1/deliveries/{wb}/evt-b/redeliver"),
            None,
        ),
        (Method::GET, "/v1/apps/b/deliveries".into(), None),
        (Method::GET, "/v1/deliveries?app=b".into(), None),
        (Method::GET, format!("/v1/deliveries?webhook_id={wb}"), None),
        (Method::GET, "/v1/state?app=b".into(), None),
        (Method::GET, "/v1/ledger?app=b".into(), None),
        (Method::GET, format!("/v1/ledger?webhook_id={wb}"), None),
        (Method::GET, "/v1/webhooks?app=b".into(), None),
        (Method::GET, "/metrics?app=b".into(), None),
        (Method::GET, "/v1/apps/nope".into(), None),
    ];
    for (method, path, body) in &other {
        let (status, v) = api.call(method.clone(), path, &token, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}: {v}");
        // The operator reads the same objects (so the 404 is the scope's, not a bad request).
        if method == Method::GET && path != "/v1/apps/nope" {
            let (op_status, _) = api.call(Method::GET, path, OPERATOR, None).await;
            assert_eq!(op_status, 200, "operator {method} {path}");
        }
    }
    assert_eq!(
        api.written(),
        before,
        "nothing was written for the refused requests"
    );

    // Operator-only routes: 403.
    let operator_only: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::POST, "/v1/apps", Some(json!({"uid": "c"}))),
        (Method::GET, "/v1/apps", None),
        (Method::DELETE, "/v1/apps/a", None),
        (Method::POST, "/v1/apps/a/tokens", None),
        (Method::GET, "/v1/apps/a/tokens", None),
        (Method::POST, "/v1/sql", Some(json!({"query": "SELECT 1"}))),
        (Method::GET, "/v1/verify", None),
        (Method::GET, "/v1/ledger/head", None),
        (
            Method::DELETE,
            "/v1/events/evt-b/body",
            Some(json!({"reason": "x"})),
        ),
        (
            Method::DELETE,
            "/v1/apps/a/events/evt-a/body",
            Some(json!({"reason": "x"})),
        ),
    ];
    for (method, path, body) in &operator_only {
        let (status, v) = api.call(method.clone(), path, &token, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
    }
    assert_eq!(api.written(), before);

    // Its own app works, through the unscoped and the app routes alike.
    let (status, v) = api.call(Method::GET, "/v1/apps/a", &token, None).await;
    assert_eq!((status, v["uid"].clone()), (200, json!("a")));
    let (status, v) = api.call(Method::GET, "/v1/webhooks", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], wa.as_str());
    let (status, v) = api
        .call(
            Method::POST,
            "/v1/events",
            &token,
            Some(json!({"event_id": "evt-a", "event_type": "order", "payload": {}})),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["deliveries"], json!([wa]), "published into its own app");
    let (status, v) = api
        .call(
            Method::GET,
            &format!("/v1/deliveries/{wa}/evt-a"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["app"].clone(), v["event_id"].clone()),
        (json!("a"), json!("evt-a"))
    );
    let (status, v) = api.call(Method::GET, "/v1/deliveries", &token, None).await;
    assert_eq!(status, 200);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["app"] == "a"),
        "{v}"
    );
    let (status, _) = api
        .call(
            Method::PATCH,
            "/v1/apps/a",
            &token,
            Some(json!({"metadata": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = api
        .call(
            Method::POST,
            "/v1/webhooks",
            &token,
            Some(json!({"url": url_a})),
        )
        .await;
    assert_eq!((status, v["app"].clone()), (201, json!("a")));

    // Revoked: 401 everywhere, recorded in the registry log.
    let revoked = api
        .ok(
            Method::DELETE,
            &format!("/v1/apps/a/tokens/{token_id}"),
            None,
        )
        .await;
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = api.call(Method::GET, "/v1/apps/a", &token, None).await;
    assert_eq!(status, 401);
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/apps/a/tokens/{token_id}"),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(status, 409, "revoking twice is a conflict");
    let kinds: Vec<String> = api
        .engine
        .ledger()
        .reader()
        .unwrap()
        .changes()
        .unwrap()
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert!(
        kinds.iter().any(|k| k == "token_issued") && kinds.iter().any(|k| k == "token_revoked")
    );
}

#[tokio::test]
async fn producer_ids_over_http_and_apps_refuse_what_they_should() {
    let api = Api::start().await;
    let (r, url) = Receiver::start(0).await;
    let w = api
        .ok(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url, "payload_format": "raw"})),
        )
        .await;
    assert_eq!(w["payload_format"], "raw");
    let w = w["id"].as_str().unwrap().to_owned();
    let upper = uuid::Uuid::now_v7().to_string().to_uppercase();
    let long = "x".repeat(257);
    let max = "y".repeat(256);
    let cases: Vec<(&str, u16)> = vec![
        ("", 422),
        (&long, 422),
        ("a b", 422),
        ("a/b", 422),
        ("é", 422),
        ("evt_123", 202),
        ("order-42.created:v1~x", 202),
        (&max, 202),
        (&upper, 202),
    ];
    for (id, expected) in &cases {
        let (status, v) = api
            .call(
                Method::POST,
                "/v1/events",
                OPERATOR,
                Some(json!({"event_id": id, "event_type": "t", "payload": {"id": id}})),
            )
            .await;
        assert_eq!(status, *expected, "{id:?}: {v}");
        if *expected == 422 {
            assert_eq!(v["error"]["field"], "event_id", "{id:?}: {v}");
        } else {
            assert_eq!(v["event_id"], *id);
        }
    }
    // The same body again: the first answer; another body: 409.
    let again = json!({"event_id": "evt_123", "event_type": "t", "payload": {"id": "evt_123"}});
    let (status, _) = api
        .call(Method::POST, "/v1/events", OPERATOR, Some(again))
        .await;
    assert_eq!(status, 200);
    let other = json!({"event_id": "evt_123", "event_type": "t", "payload": {"id": 0}});
    let (status, _) = api
        .call(Method::POST, "/v1/events", OPERATOR, Some(other))
        .await;
    assert_eq!(status, 409);
    // The lower-case form of the upper-case UUID is the same event in the default app.
    let lower =
        json!({"event_id": upper.to_lowercase(), "event_type": "t", "payload": {"id": upper}});
    let (status, v) = api
        .call(Method::POST, "/v1/events", OPERATOR, Some(lower))
        .await;
    assert_eq!((status, v["event_id"].clone()), (200, json!(upper)));
    // The same producer id in another app is another event.
    api.create_app("shop").await;
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/apps/shop/events",
            OPERATOR,
            Some(json!({"event_id": "evt_123", "event_type": "t", "payload": {"id": 0}})),
        )
        .await;
    assert_eq!(status, 202);

    // The raw webhook got bare payloads; the trail and the listing show the producer's id.
    eventually("4 bodies", || r.bodies().len() == 4).await;
    assert!(r
        .bodies()
        .iter()
        .any(|b| b.as_ref() == br#"{"id":"evt_123"}"#));
    let trail = api
        .ok(Method::GET, &format!("/v1/deliveries/{w}/evt_123"), None)
        .await;
    assert_eq!(trail["event_id"], "evt_123");
    assert_eq!(trail["app"], "default");
    assert!(trail["event_key"].is_string());
    let page = api
        .ok(Method::GET, "/v1/deliveries?event_id=evt_123", None)
        .await;
    assert_eq!(page["data"][0]["event_id"], "evt_123", "{page}");
    let records = api.ok(Method::GET, "/v1/ledger", None).await;
    let key = trail["event_key"].as_str().unwrap();
    assert_eq!(records["producer_ids"][key], "evt_123", "{records}");
    let patched = api
        .ok(
            Method::PATCH,
            &format!("/v1/webhooks/{w}"),
            Some(json!({"payload_format": "standard"})),
        )
        .await;
    assert_eq!(patched["payload_format"], "standard");

    // Apps: a bad uid names the field; a second create, deleting `default`, and deleting an
    // app with active webhooks are conflicts; a deleted uid is not reused.
    let (status, v) = api
        .call(
            Method::POST,
            "/v1/apps",
            OPERATOR,
            Some(json!({"uid": "a b"})),
        )
        .await;
    assert_eq!((status, v["error"]["field"].clone()), (422, json!("uid")));
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/apps",
            OPERATOR,
            Some(json!({"uid": "shop"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(Method::DELETE, "/v1/apps/default", OPERATOR, None)
        .await;
    assert_eq!(status, 409);
    let hook = api.webhook("shop", &url, json!({})).await;
    let (status, _) = api
        .call(Method::DELETE, "/v1/apps/shop", OPERATOR, None)
        .await;
    assert_eq!(status, 409, "shop has an active webhook");
    api.ok(
        Method::DELETE,
        &format!("/v1/apps/shop/webhooks/{hook}"),
        None,
    )
    .await;
    api.ok(Method::DELETE, "/v1/apps/shop", None).await;
    let (status, _) = api.call(Method::GET, "/v1/apps/shop", OPERATOR, None).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/apps",
            OPERATOR,
            Some(json!({"uid": "shop"})),
        )
        .await;
    assert_eq!(status, 409, "a deleted uid is not reused");
    // A body is a JSON object: serde would read a struct from an array of its fields.
    for (path, body) in [
        ("/v1/apps/default", json!([null, null])),
        ("/v1/apps/default", json!([])),
    ] {
        let (status, v) = api.call(Method::PATCH, path, OPERATOR, Some(body)).await;
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (400, json!("bad_json")),
            "{v}"
        );
    }
    let apps = api.ok(Method::GET, "/v1/apps", None).await;
    assert_eq!(apps["data"][0]["uid"], "default");
    assert_eq!(apps["data"].as_array().unwrap().len(), 1);
}
