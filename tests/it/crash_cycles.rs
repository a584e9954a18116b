//! Crash cycles: the real `hookledger serve` is SIGKILLed at random moments while publishers
//! publish and three receivers answer (one healthy, one failing 30 % of the time, one slow),
//! restarted on the same file each time, and finally left to drain. Then:
//!
//! - every acknowledged event reached every receiver (a 2xx answer) or is dead-parked with its
//!   failures recorded;
//! - no event is half-present: an event row always has its three `enqueued` records and a
//!   record always has its event row (unacknowledged events are absent or whole);
//! - `hookledger verify` passes after every kill (run on the file while the server is down)
//!   and `GET /v1/verify` after every restart;
//! - a receiver answers 2xx for a delivery more than once only when the ledger shows why: an
//!   attempt cut off by a crash (`failed`/`abandoned`) or one that timed out after the
//!   receiver answered; and no receiver gets more requests for a delivery than it has
//!   `attempted` records.
//!
//! `HOOKLEDGER_CRASH_CYCLES` sets the number of kills (default 5; the long run uses 20) and
//! `HOOKLEDGER_CRASH_SEED` replays the kill timing of an earlier run (the seed is printed).
//! The figures of a run are printed to stderr (`--nocapture` shows them).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookledger::store::duck::{DuckStore, OpenMode};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::serve_child::*;

const CYCLES_VAR: &str = "HOOKLEDGER_CRASH_CYCLES";
const SEED_VAR: &str = "HOOKLEDGER_CRASH_SEED";
const DEFAULT_CYCLES: usize = 5;
const PUBLISHERS: usize = 4;
/// Each publisher's pause between publishes: keeps the slow receiver's backlog (and so the
/// drain) short.
const PUBLISH_PAUSE: Duration = Duration::from_millis(15);
/// How long the server runs before a kill: uniformly random in this range.
const RUN_MS: std::ops::Range<u64> = 100..1500;
const SLOW_RECEIVER: Duration = Duration::from_millis(150);
const FLAKY_FAILURE_RATE: f64 = 0.3;
/// The bound on the final drain; far above what it takes.
const DRAIN_BOUND: Duration = Duration::from_secs(180);

/// The three receivers, by path.
const KINDS: [&str; 3] = ["healthy", "flaky", "slow"];

/// One request a receiver got: which receiver, the `webhook-id` (the event id) and whether it
/// answered 2xx.
#[derive(Clone, Debug)]
struct Reception {
    kind: usize,
    event_id: String,
    ok: bool,
}

type Receptions = Arc<Mutex<Vec<Reception>>>;

async fn receive(kind: usize, log: Receptions, headers: HeaderMap) -> StatusCode {
    let event_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = match KINDS[kind] {
        "flaky" if fastrand::f64() < FLAKY_FAILURE_RATE => StatusCode::INTERNAL_SERVER_ERROR,
        "slow" => {
            tokio::time::sleep(SLOW_RECEIVER).await;
            StatusCode::OK
        }
        _ => StatusCode::OK,
    };
    let ok = status.is_success();
    log.lock().unwrap().push(Reception { kind, event_id, ok });
    status
}

/// Starts the three receivers on one listener; their URLs by kind.
async fn receivers(log: Receptions) -> [String; 3] {
    let mut app = Router::new();
    for (kind, name) in KINDS.iter().enumerate() {
        app = app.route(
            &format!("/{name}"),
            post(move |State(log): State<Receptions>, headers: HeaderMap| {
                receive(kind, log, headers)
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.with_state(log)).await });
    KINDS.map(|name| format!("http://{addr}/{name}"))
}

/// What the publishers learned: acknowledged (2xx) event ids, ids whose publish got no answer
/// (cut off by a kill), and any other answer.
#[derive(Default)]
struct Published {
    acked: HashSet<String>,
    unknown: HashSet<String>,
    refused: Vec<(u16, Value)>,
}

/// Publishes new events against whichever server is up (`None`: wait for the next one).
async fn publisher(
    mut base: watch::Receiver<Option<String>>,
    stop: watch::Receiver<bool>,
    out: Arc<Mutex<Published>>,
) {
    let client = reqwest::Client::new();
    while !*stop.borrow() {
        let Some(url) = base.borrow_and_update().clone() else {
            let _ = base.changed().await;
            continue;
        };
        let id = Uuid::new_v4().to_string();
        let body = json!({
            "event_id": id, "event_type": "order.created", "payload": { "id": id, "total": 12 },
        });
        let answer = call(
            &client,
            reqwest::Method::POST,
            &format!("{url}/v1/events"),
            Some(&body),
        )
        .await;
        {
            let mut out = out.lock().unwrap();
            match answer {
                Ok((202, _)) => out.acked.insert(id),
                Ok((status, body)) => {
                    out.refused.push((status, body));
                    out.unknown.insert(id)
                }
                Err(_) => out.unknown.insert(id),
            };
        }
        tokio::time::sleep(PUBLISH_PAUSE).await;
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}=`{v}` is not a number")),
        Err(_) => default,
    }
}

/// The server's environment: loopback allowed, a short schedule (6 attempts over about 3 s) so
/// that the drain is quick, and an attempt deadline well above the slow receiver's delay.
const SERVE_ENV: [(&str, &str); 3] = [
    ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
    (
        "HOOKLEDGER_RETRY_SCHEDULE",
        "100ms,200ms,400ms,800ms,1500ms",
    ),
    ("HOOKLEDGER_ATTEMPT_TIMEOUT", "5s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_random_sigkills_without_losing_or_tearing_anything() {
    let started = Instant::now();
    let cycles: usize = env_or(CYCLES_VAR, DEFAULT_CYCLES);
    let seed: u64 = env_or(SEED_VAR, fastrand::u64(..));
    eprintln!("crash cycles: {cycles} kills, seed {seed} (set {SEED_VAR} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.duckdb");
    let log = dir.path().join("serve-stderr.log");
    let receptions = Receptions::default();
    let urls = receivers(receptions.clone()).await;
    let client = reqwest::Client::new();

    let server = start_blocking(&db, &log).await;
    let mut webhooks = Vec::new();
    for url in &urls {
        webhooks.push(register(&client, &server.base, url).await);
    }
    let (base_tx, base_rx) = watch::channel(Some(server.base.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let published = Arc::new(Mutex::new(Published::default()));
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            tokio::spawn(publisher(
                base_rx.clone(),
                stop_rx.clone(),
                published.clone(),
            ))
        })
        .collect();

    let mut server = Some(server);
    for cycle in 1..=cycles {
        tokio::time::sleep(Duration::from_millis(rng.u64(RUN_MS))).await;
        base_tx.send_replace(None);
        let status = server.take().unwrap().kill();
        assert!(!status.success(), "cycle {cycle}: killed, yet {status}");
        let db2 = db.clone();
        tokio::task::spawn_blocking(move || {
            assert_cli_verify(&db2, &format!("after kill {cycle}"))
        })
        .await
        .unwrap();
        let up = start_blocking(&db, &log).await;
        assert_api_verify(&client, &up.base, &format!("after restart {cycle}")).await;
        base_tx.send_replace(Some(up.base.clone()));
        server = Some(up);
    }
    stop_tx.send_replace(true);
    for t in tasks {
        t.await.unwrap();
    }
    let server = server.unwrap();
    drain(&client, &server.base).await;
    assert_api_verify(&client, &server.base, "after the drain").await;
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "SIGTERM stops serve cleanly: {status}");
    assert_cli_verify(&db, "after the final stop");

    let published = std::mem::take(&mut *published.lock().unwrap());
    let receptions = receptions.lock().unwrap().clone();
    let ledger = read_ledger(&db);
    let figures = check(&ledger, &published, &receptions, &webhooks);
    eprintln!(
        "crash cycles: {cycles} kills in {:.1} s; {figures}",
        started.elapsed().as_secs_f64()
    );
}

async fn start_blocking(db: &Path, log: &Path) -> ServeChild {
    let (db, log) = (db.to_owned(), log.to_owned());
    tokio::task::spawn_blocking(move || ServeChild::start(&db, &SERVE_ENV, &log))
        .await
        .unwrap()
}

/// Waits until no delivery is pending or in an attempt.
async fn drain(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + DRAIN_BOUND;
    loop {
        let (status, state) = get(client, &format!("{base}/v1/state")).await;
        assert_eq!(status, 200, "{state}");
        let counts = &state["counts"];
        if counts["pending"] == 0 && counts["in_attempt"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One ledger record, as far as these checks need it.
struct Row {
    webhook: String,
    event: String,
    kind: String,
    error_class: Option<String>,
}

/// The file's events and records, read after the server stopped.
struct LedgerFile {
    events: HashSet<String>,
    records: Vec<Row>,
}

fn read_ledger(db: &Path) -> LedgerFile {
    let store = DuckStore::open(db, OpenMode::ReadOnly).unwrap();
    let conn = store.connection();
    let events = conn
        .prepare("SELECT event_id::VARCHAR FROM events")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let records = conn
        .prepare(
            "SELECT webhook_id::VARCHAR, event_id::VARCHAR, kind, error_class \
             FROM webhook_deliveries ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(Row {
                webhook: r.get(0)?,
                event: r.get(1)?,
                kind: r.get(2)?,
                error_class: r.get(3)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    LedgerFile { events, records }
}

/// What one delivery's records say.
#[derive(Default)]
struct Trail {
    kinds: Vec<String>,
    attempted: usize,
    delivered: usize,
    failed: usize,
    /// `failed` records of attempts that may have reached the receiver without their answer
    /// being recorded: cut off by a crash, or timed out.
    cut_off: usize,
    abandoned: usize,
}

/// Runs every check; returns the run's figures as a line.
fn check(
    ledger: &LedgerFile,
    published: &Published,
    receptions: &[Reception],
    webhooks: &[String],
) -> String {
    let mut trails: HashMap<(&str, &str), Trail> = HashMap::new();
    for r in &ledger.records {
        assert!(
            ledger.events.contains(&r.event),
            "a `{}` record for event {} has no event row",
            r.kind,
            r.event
        );
        let t = trails.entry((&r.webhook, &r.event)).or_default();
        t.kinds.push(r.kind.clone());
        match r.kind.as_str() {
            "attempted" => t.attempted += 1,
            "delivered" => t.delivered += 1,
            "failed" => {
                t.failed += 1;
                match r.error_class.as_deref() {
                    Some("abandoned") => {
                        t.abandoned += 1;
                        t.cut_off += 1;
                    }
                    Some("timeout") => t.cut_off += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // Whole or absent: every stored event has its delivery to each of the three webhooks, each
    // starting with its `enqueued`.
    for e in &ledger.events {
        for w in webhooks {
            let t = trails
                .get(&(w.as_str(), e.as_str()))
                .unwrap_or_else(|| panic!("event {e} is stored without its enqueued for {w}"));
            assert_eq!(t.kinds[0], "enqueued", "{w}/{e}: {:?}", t.kinds);
        }
    }
    assert_eq!(trails.len(), ledger.events.len() * webhooks.len());
    for id in &published.acked {
        assert!(
            ledger.events.contains(id),
            "acknowledged event {id} is not in the file"
        );
    }
    let mut seen: HashMap<(usize, &str), (usize, usize)> = HashMap::new();
    for r in receptions {
        let n = seen.entry((r.kind, &r.event_id)).or_default();
        n.0 += 1;
        n.1 += usize::from(r.ok);
    }
    for (kind, e) in seen.keys() {
        assert!(
            trails.contains_key(&(webhooks[*kind].as_str(), *e)),
            "{} got event {e}, which the ledger never enqueued to it",
            KINDS[*kind]
        );
    }
    let (mut dead, mut duplicates, mut abandoned) = ([0; 3], 0, [0; 3]);
    for ((w, e), t) in &trails {
        let kind = webhooks.iter().position(|x| x == w).unwrap();
        let (requests, oks) = seen.get(&(kind, *e)).copied().unwrap_or_default();
        abandoned[kind] += t.abandoned;
        match t.kinds.last().unwrap().as_str() {
            "delivered" => assert!(
                oks >= 1,
                "{w}/{e} is delivered but {} never answered it 2xx",
                KINDS[kind]
            ),
            "dead_parked" => {
                dead[kind] += 1;
                assert!(
                    t.failed >= 1 && t.failed == t.attempted,
                    "{w}/{e} is dead without its failures: {:?}",
                    t.kinds
                );
            }
            other => panic!("{w}/{e} ended `{other}` after the drain: {:?}", t.kinds),
        }
        assert!(
            requests <= t.attempted,
            "{} got {requests} requests for {e} but the ledger has {} attempts: {:?}",
            KINDS[kind],
            t.attempted,
            t.kinds
        );
        assert!(
            oks <= t.delivered + t.cut_off,
            "{} answered {e} 2xx {oks} times; only {} can be explained: {:?}",
            KINDS[kind],
            t.delivered + t.cut_off,
            t.kinds
        );
        duplicates += oks.saturating_sub(1);
    }
    assert!(
        published.refused.is_empty(),
        "publishes answered neither 2xx nor nothing: {:?}",
        published.refused
    );
    assert!(!published.acked.is_empty(), "nothing was acknowledged");
    let unknown_stored = published
        .unknown
        .iter()
        .filter(|id| ledger.events.contains(*id))
        .count();
    format!(
        "{} events acknowledged, {} cut off ({unknown_stored} of them stored whole, the rest \
         absent); {} records, {} receptions ({} answered 2xx), attempts abandoned by a kill \
         {abandoned:?} (healthy, flaky, slow), {duplicates} duplicate 2xx deliveries (all \
         explained), dead-parked {dead:?}",
        published.acked.len(),
        published.unknown.len(),
        ledger.records.len(),
        receptions.len(),
        receptions.iter().filter(|r| r.ok).count(),
    )
}

/// Regression: `attempted` was recorded for every due delivery, and the attempts then queued
/// for the webhook's concurrency permit (16). A kill abandoned all of them, burning budget for
/// requests that never left (in the long crash run, deliveries to the slow receiver ended
/// dead-parked without one request). Now a delivery that must wait stays `pending`, and a kill
/// abandons exactly the attempts that were on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_abandons_only_attempts_that_were_sent_not_those_waiting_for_a_permit() {
    const EVENTS: usize = 40;
    const PER_WEBHOOK: usize = 16; // EngineConfig::default().per_webhook
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("permits.duckdb");
    let log = dir.path().join("serve-stderr.log");
    let hanging: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = hanging.clone();
    let app = Router::new().route(
        "/hang",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers.get("webhook-id").unwrap().to_str().unwrap();
                seen.lock().unwrap().push(id.to_owned());
                std::future::pending::<StatusCode>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hang", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let env = [
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_ATTEMPT_TIMEOUT", "10m"),
    ];
    let client = reqwest::Client::new();
    let (db2, log2) = (db.clone(), log.clone());
    let server = tokio::task::spawn_blocking(move || ServeChild::start(&db2, &env, &log2))
        .await
        .unwrap();
    let webhook = register(&client, &server.base, &url).await;
    for n in 0..EVENTS {
        let (status, body) = post_json(
            &client,
            &format!("{}/v1/events", server.base),
            &json!({ "event_type": "order.created", "payload": { "n": n } }),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while hanging.lock().unwrap().len() < PER_WEBHOOK {
        assert!(
            Instant::now() < deadline,
            "the first attempts never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, state) = get(&client, &format!("{}/v1/state", server.base)).await;
    assert_eq!(
        state["counts"]["in_attempt"], PER_WEBHOOK,
        "{}",
        state["counts"]
    );
    assert_eq!(
        state["counts"]["pending"],
        EVENTS - PER_WEBHOOK,
        "{}",
        state["counts"]
    );
    // What was on the wire when the server died, read before the kill: after the restart the
    // new server retries the abandoned attempts and starts the waiting ones, and the receiver
    // sees those too.
    let sent: HashSet<String> = hanging.lock().unwrap().iter().cloned().collect();
    assert_eq!(sent.len(), PER_WEBHOOK, "one request per permit: {sent:?}");
    assert!(!server.kill().success());
    assert_cli_verify(&db, "after the kill");

    let (db2, log2) = (db.clone(), log.clone());
    let server = tokio::task::spawn_blocking(move || ServeChild::start(&db2, &env, &log2))
        .await
        .unwrap();
    let (_, failed) = get(
        &client,
        &format!(
            "{}/v1/ledger?kind=failed&webhook_id={webhook}&limit=1000",
            server.base
        ),
    )
    .await;
    let failed = failed["data"].as_array().unwrap();
    assert!(
        failed.iter().all(|r| r["error_class"] == "abandoned"),
        "{failed:?}"
    );
    let abandoned: HashSet<String> = failed
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed.len(), abandoned.len(), "one abandoned per delivery");
    assert_eq!(
        abandoned, sent,
        "exactly the attempts on the wire are abandoned"
    );
    assert_api_verify(&client, &server.base, "after the restart").await;
}
