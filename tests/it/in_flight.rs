//! In-flight limits against the real `hookledger serve` (DuckDB, and PostgreSQL when a server
//! is given): receivers on 127.0.0.1 hold every request until the test lets one go, and count
//! the requests in their handler when each arrives. A webhook with `max_in_flight: 2` never
//! has a third on the wire; a PATCH to 4 lets two more go without a restart; clearing it
//! (`null`) while 4 are held lowers it to the default (`HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`,
//! 3 here), and nothing new leaves until fewer than 3 are on the wire; a webhook without a
//! limit of its own gets the default. The value is kept across a restart (from a checkpoint)
//! and enforced after it. Bad values are refused 4xx naming `max_in_flight`, and the OpenAPI
//! document shows the field with its bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hookledger::clock::SystemClock;
use hookledger::ids::WebhookId;
use hookledger::ledger::{Ledger, LedgerOptions};
use hookledger::store::any::Location;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::serve_child::{call, get, post_json, ServeChild};

/// How long any awaited condition may take (far above what it takes).
const BOUND: Duration = Duration::from_secs(60);
/// Events published per round.
const N: usize = 10;

/// A receiver that holds each request until the test releases it.
#[derive(Clone)]
struct Holding {
    inner: Arc<Held>,
}

struct Held {
    /// Requests in the handler now.
    now: AtomicUsize,
    /// Requests answered.
    done: AtomicUsize,
    /// What the test is doing, stored with each arrival.
    phase: AtomicUsize,
    /// Each arrival: (phase, requests in the handler counting it).
    arrivals: Mutex<Vec<(usize, usize)>>,
    release: Semaphore,
    changed: watch::Sender<u64>,
}

async fn hold(State(h): State<Holding>) -> StatusCode {
    let h = h.inner;
    let n = h.now.fetch_add(1, Ordering::SeqCst) + 1;
    h.arrivals
        .lock()
        .unwrap()
        .push((h.phase.load(Ordering::SeqCst), n));
    h.changed.send_modify(|v| *v += 1);
    h.release.acquire().await.unwrap().forget();
    // Out of the count before the answer leaves: hookledger frees the slot after it.
    h.now.fetch_sub(1, Ordering::SeqCst);
    h.done.fetch_add(1, Ordering::SeqCst);
    h.changed.send_modify(|v| *v += 1);
    StatusCode::NO_CONTENT
}

impl Holding {
    async fn start() -> (Self, String) {
        let h = Holding {
            inner: Arc::new(Held {
                now: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                phase: AtomicUsize::new(1),
                arrivals: Mutex::new(Vec::new()),
                release: Semaphore::new(0),
                changed: watch::Sender::new(0),
            }),
        };
        let app = Router::new()
            .route("/hook", post(hold))
            .with_state(h.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (h, url)
    }

    fn now(&self) -> usize {
        self.inner.now.load(Ordering::SeqCst)
    }

    fn done(&self) -> usize {
        self.inner.done.load(Ordering::SeqCst)
    }

    fn phase(&self, p: usize) {
        self.inner.phase.store(p, Ordering::SeqCst);
    }

    fn release(&self, n: usize) {
        self.inner.release.add_permits(n);
    }

    /// Waits until `done` requests were answered and `now` are held; panics after [`BOUND`].
    async fn wait(&self, done: usize, now: usize, what: &str) {
        self.wait_until(|d, n| (d, n) == (done, now), what).await;
    }

    /// Waits until `cond(answered, held)`; panics after [`BOUND`].
    async fn wait_until(&self, cond: impl Fn(usize, usize) -> bool, what: &str) {
        let mut rx = self.inner.changed.subscribe();
        let reached = tokio::time::timeout(BOUND, async {
            while !cond(self.done(), self.now()) {
                rx.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "{what}: have {} answered and {} held; arrivals {:?}",
            self.done(),
            self.now(),
            self.inner.arrivals.lock().unwrap()
        );
    }

    /// The most requests in the handler at an arrival in `phase`.
    fn most_in(&self, phase: usize) -> usize {
        let arrivals = self.inner.arrivals.lock().unwrap();
        arrivals
            .iter()
            .filter(|(p, _)| *p == phase)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }
}

async fn start(db: &std::path::Path, env: &[(&str, &str)], log: &std::path::Path) -> ServeChild {
    let (db, log) = (db.to_owned(), log.to_owned());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServeChild::start(&db, &env, &log)
    })
    .await
    .unwrap()
}

/// The environment of every server here: the default per-webhook limit is 3.
fn env_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_RETRY_SCHEDULE", "1s,1s,1s"),
        ("HOOKLEDGER_ATTEMPT_TIMEOUT", "120s"),
        ("HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK", "3"),
        ("HOOKLEDGER_CHECKPOINT_EVERY", "5"),
    ];
    env.extend_from_slice(extra);
    env
}

async fn publish(client: &reqwest::Client, base: &str, n: usize) {
    for i in 0..n {
        let body = json!({ "event_type": "order.created", "payload": { "n": i } });
        let (status, answer) = post_json(client, &format!("{base}/v1/events"), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
}

async fn patch(client: &reqwest::Client, base: &str, id: &str, body: Value) -> (u16, Value) {
    call(
        client,
        Method::PATCH,
        &format!("{base}/v1/webhooks/{id}"),
        Some(&body),
    )
    .await
    .unwrap()
}

/// The whole story on one ledger; `location` is where a test opens it after the last stop.
async fn limits_hold_change_live_and_survive_a_restart(
    db: &std::path::Path,
    extra: &[(&str, &str)],
    location: Location,
) {
    let log = db.with_extension("log");
    let env = env_with(extra);
    let server = start(db, &env, &log).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let (a, a_url) = Holding::start().await;
    let (b, b_url) = Holding::start().await;
    let (status, w) = post_json(
        &client,
        &format!("{base}/v1/webhooks"),
        &json!({ "url": a_url, "max_in_flight": 2 }),
    )
    .await;
    assert_eq!((status, &w["max_in_flight"]), (201, &json!(2)), "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    let (status, w) = post_json(
        &client,
        &format!("{base}/v1/webhooks"),
        &json!({ "url": b_url }),
    )
    .await;
    assert_eq!((status, &w["max_in_flight"]), (201, &Value::Null), "{w}");

    // Phase 1: at most 2 of A's on the wire, and B gets the default, 3.
    publish(&client, &base, N).await;
    a.wait(0, 2, "A's first two").await;
    b.wait(0, 3, "B's first three").await;
    for done in 1..=2 {
        a.release(1);
        a.wait(done, 2, "A, one answered, one more in").await;
    }

    // Phase 2: raised to 4 while 2 are held, without a restart.
    a.phase(2);
    let (status, v) = patch(&client, &base, &id, json!({ "max_in_flight": 4 })).await;
    assert_eq!((status, &v["max_in_flight"]), (200, &json!(4)), "{v}");
    a.wait(2, 4, "A after the raise to 4").await;

    // Phase 3: cleared back to the default (3) while 4 are held: one answered leaves 3 on
    // the wire and lets nothing new go; then one at a time.
    let (status, v) = patch(&client, &base, &id, json!({ "max_in_flight": null })).await;
    assert_eq!((status, &v["max_in_flight"]), (200, &Value::Null), "{v}");
    a.phase(3);
    a.release(2);
    a.wait(4, 3, "A two answered after the lowering to 3").await;
    for done in 5..=N {
        a.release(1);
        a.wait(done, 3.min(N - done), "A one at a time at 3").await;
    }
    b.release(N);
    b.wait(N, 0, "B all answered").await;
    assert_eq!(a.most_in(1), 2, "phase 1 at max_in_flight 2");
    assert_eq!(a.most_in(2), 4, "phase 2 at max_in_flight 4");
    assert_eq!(a.most_in(3), 3, "phase 3 at the default 3");
    assert_eq!(b.most_in(1), 3, "B at the default 3");

    // Set again, then a restart (from a checkpoint): kept and enforced.
    let (status, v) = patch(&client, &base, &id, json!({ "max_in_flight": 1 })).await;
    assert_eq!((status, &v["max_in_flight"]), (200, &json!(1)), "{v}");
    let status = server.stop();
    assert!(status.success(), "{status}");
    let server = start(db, &env, &log).await;
    let base = server.base.clone();
    let (_, v) = get(&client, &format!("{base}/v1/webhooks/{id}")).await;
    assert_eq!(v["max_in_flight"], json!(1), "after the restart: {v}");
    a.phase(4);
    b.phase(4);
    publish(&client, &base, 3).await;
    a.wait(N, 1, "A's first after the restart").await;
    b.wait(N, 3, "B's after the restart").await;
    // (On PostgreSQL the restarted node may abandon an attempt it started before its first
    // take-over pass, and send that delivery again: one answer more than events, so the
    // release is by answers, and the rest is let go at the end.)
    for done in N + 1..=N + 3 {
        a.release(1);
        let what = "A one at a time at 1";
        a.wait_until(|d, n| d == done && (n == 1 || d == N + 3), what)
            .await;
    }
    a.release(N);
    b.release(N);
    b.wait_until(
        |d, n| d >= N + 3 && n == 0,
        "B all answered after the restart",
    )
    .await;
    assert_eq!(a.most_in(4), 1, "after the restart at max_in_flight 1");
    assert_eq!(b.most_in(4), 3, "B after the restart at the default 3");
    let status = server.stop();
    assert!(status.success(), "{status}");

    // The ledger as the server left it: opened from a checkpoint, the value in its registry.
    let ledger = tokio::task::spawn_blocking(move || {
        Ledger::open_at(&location, Arc::new(SystemClock), &LedgerOptions::default()).unwrap()
    })
    .await
    .unwrap();
    assert!(
        ledger.rebuild_stats().start.checkpoint.is_some(),
        "{:?}",
        ledger.rebuild_stats()
    );
    let webhook = WebhookId(id.parse().unwrap());
    let options = ledger.shared().read_registry().options_of(&webhook);
    assert_eq!(options.max_in_flight.map(|n| n.get()), Some(1));
    tokio::task::spawn_blocking(move || ledger.close())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limits_hold_change_live_and_survive_a_restart_on_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.duckdb");
    limits_hold_change_live_and_survive_a_restart(&db, &[], Location::Duck(db.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limits_hold_change_live_and_survive_a_restart_on_postgres() {
    let url = pg_schema!("in_flight_limits_hold_change_live_and_survive_a_restart_on_postgres");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.duckdb");
    let env = [
        ("HOOKLEDGER_DATABASE_URL", url.as_str()),
        ("HOOKLEDGER_SECRET_KEY", crate::pg_common::NODE_KEY),
    ];
    limits_hold_change_live_and_survive_a_restart(&db, &env, Location::Postgres(url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_max_in_flight_is_refused_naming_the_field_and_the_document_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.duckdb");
    let server = start(&db, &env_with(&[]), &dir.path().join("log")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/webhooks", server.base);
    for bad in [
        json!(0),
        json!(-1),
        json!(2.5),
        json!("ten"),
        json!(65_537),
        json!(4_294_967_296u64),
    ] {
        let body = json!({ "url": "http://127.0.0.1:9/hook", "max_in_flight": bad });
        let (status, answer) = post_json(&client, &url, &body).await;
        assert!((400..500).contains(&status), "{bad}: {status} {answer}");
        assert_eq!(
            answer["error"]["field"],
            json!("max_in_flight"),
            "{bad}: {answer}"
        );
    }
    let (_, list) = get(&client, &url).await;
    assert_eq!(list["data"], json!([]), "a refused request wrote a webhook");
    let (status, w) = post_json(
        &client,
        &url,
        &json!({ "url": "http://127.0.0.1:9/hook", "max_in_flight": 65_536 }),
    )
    .await;
    assert_eq!((status, &w["max_in_flight"]), (201, &json!(65_536)), "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    for bad in [json!(0), json!(65_537), json!("x")] {
        let (status, v) = patch(&client, &server.base, &id, json!({ "max_in_flight": bad })).await;
        assert!((400..500).contains(&status), "{bad}: {status} {v}");
        assert_eq!(v["error"]["field"], json!("max_in_flight"), "{bad}: {v}");
    }
    let (_, v) = get(&client, &format!("{url}/{id}")).await;
    assert_eq!(
        v["max_in_flight"],
        json!(65_536),
        "a refused PATCH changed it: {v}"
    );
    // A PATCH without the field leaves it.
    let (status, v) = patch(&client, &server.base, &id, json!({ "description": "d" })).await;
    assert_eq!((status, &v["max_in_flight"]), (200, &json!(65_536)), "{v}");

    // The OpenAPI document: the field on the view, the registration and the PATCH.
    let (status, doc) = get(&client, &format!("{}/openapi.json", server.base)).await;
    assert_eq!(status, 200);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let with: Vec<&String> = schemas
        .iter()
        .filter(|(_, s)| !s["properties"]["max_in_flight"].is_null())
        .map(|(name, _)| name)
        .collect();
    for name in ["Webhook", "NewWebhook", "WebhookPatch"] {
        assert!(with.iter().any(|n| *n == name), "{name} not in {with:?}");
    }
    let field = &schemas["NewWebhook"]["properties"]["max_in_flight"];
    assert!(
        field.to_string().contains("65536"),
        "no bound in the document: {field}"
    );
}
