//! Crash semantics with the engine in a child process: SIGKILLed mid-attempt and restarted,
//! every acknowledged event reaches the receiver at least once, duplicates happen only for
//! attempts that were cut off (and show as `failed`/`abandoned`), and a poison-pill delivery,
//! one whose attempt kills the process every time, ends dead-parked after its budget.
//!
//! The child is this test binary re-executed with `--ignored` and a filter that runs only
//! [`engine_child`]: a helper, not a test, so it is `#[ignore]`d (the runner lists it as ignored
//! instead of counting it as a pass) and fails if run without the environment the parent sets.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookledger::clock::SystemClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::DeliveryKey;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;

use crate::common::{event, webhook};

const DB_VAR: &str = "HOOKLEDGER_TEST_ENGINE_DB";
const URL_VAR: &str = "HOOKLEDGER_TEST_ENGINE_URL";
const PUBLISH_VAR: &str = "HOOKLEDGER_TEST_ENGINE_PUBLISH";

/// The child: registers the webhook on first start, publishes the requested events (printing
/// `acked N` for each), recovers abandoned attempts, re-drives until nothing is live, then
/// prints `idle` and exits.
#[test]
#[ignore = "child-process helper of the other engine_restart tests, which run it"]
fn engine_child() {
    let db = std::env::var(DB_VAR).unwrap_or_else(|_| {
        panic!("a child-process helper, not a test: {DB_VAR} is set by the test that spawns it")
    });
    let url = std::env::var(URL_VAR).unwrap();
    let publish: u128 = std::env::var(PUBLISH_VAR).map_or(0, |v| v.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let clock = Arc::new(SystemClock);
        let ledger = Arc::new(Ledger::open(Path::new(&db), clock.clone()).unwrap());
        if ledger.shared().read_registry().get(&webhook(1)).is_none() {
            let change = Change::Created {
                url,
                event_types: vec![],
                description: None,
                secret: Secret::generate(),
                app: hookledger::ids::AppUid::default_app(),
                payload_format: Default::default(),
            };
            let commit = Commit {
                changes: vec![(webhook(1), change)],
                ..Commit::default()
            };
            ledger.commit(commit).await.unwrap();
        }
        let sender = Sender::new(SenderConfig {
            egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
            ..SenderConfig::default()
        })
        .unwrap();
        let config = EngineConfig {
            schedule: RetrySchedule::parse("10ms,10ms").unwrap(),
            ..EngineConfig::default()
        };
        let engine = Engine::new(ledger.clone(), sender, clock, config);
        engine.recover_abandoned().await.unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(engine.clone().run(shutdown));
        for n in 1..=publish {
            let req = Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(n))),
                "order.created".into(),
                serde_json::json!({ "n": n }),
            );
            engine.publish(req).await.unwrap();
            println!("acked {n}");
        }
        let mut committed = ledger.shared().subscribe();
        while ledger.state().live_len() > 0 {
            let _ = committed.changed().await;
        }
        engine.drain().await;
        println!("idle");
    });
}

/// Runs the child until it prints `idle` (returns true) or until `kill_after` requests reached
/// the receiver (kills it, returns false). Returns the acked event numbers too.
fn run_child(
    db: &Path,
    url: &str,
    publish: u128,
    hits: &mpsc::Receiver<()>,
    kill_after: usize,
) -> (bool, Vec<u128>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "engine_restart::engine_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_VAR, db)
        .env(URL_VAR, url)
        .env(PUBLISH_VAR, publish.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let mut acked = Vec::new();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the child made no progress"
        );
        while let Ok(line) = lines.try_recv() {
            // The test harness prints `test <name> ... ` before the child's first line.
            let line = line.rsplit(" ... ").next().unwrap_or_default();
            if line == "idle" {
                child.wait().unwrap();
                return (true, acked);
            }
            if let Some(n) = line.strip_prefix("acked ") {
                acked.push(n.parse().unwrap());
            }
        }
        if hits.recv_timeout(Duration::from_millis(20)).is_ok() {
            seen += 1;
            if seen >= kill_after {
                child.kill().unwrap();
                child.wait().unwrap();
                acked.extend(lines.iter().filter_map(|l| {
                    let l = l.rsplit(" ... ").next()?;
                    l.strip_prefix("acked ")?.parse::<u128>().ok()
                }));
                return (false, acked);
            }
        }
    }
}

fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A receiver that reports each request to the test, then answers 200 after `delay` (or
/// never, for `None`), recording the `webhook-id` of each request.
async fn receiver(
    delay: Option<Duration>,
) -> (String, mpsc::Receiver<()>, Arc<Mutex<Vec<String>>>) {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                seen.lock().unwrap().push(id.to_owned());
                let _ = tx.lock().unwrap().send(());
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_is_dead_parked_after_its_budget_of_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("poison.duckdb");
    let (url, hits, _) = receiver(None).await;
    let mut restarts = 0;
    let (db2, url2) = (db.clone(), url.clone());
    let finished = tokio::task::spawn_blocking(move || {
        let mut publish = 1;
        loop {
            let (idle, _) = run_child(&db2, &url2, publish, &hits, 1);
            publish = 0;
            if idle {
                return restarts;
            }
            restarts += 1;
            assert!(restarts <= 5, "the poison pill kept killing the process");
        }
    })
    .await
    .unwrap();
    assert_eq!(finished, 3, "killed once per attempt of a 3-attempt budget");
    let ledger = Ledger::open(&db, Arc::new(SystemClock)).unwrap();
    let trail: Vec<String> = ledger
        .history(DeliveryKey::new(webhook(1), event(1)))
        .unwrap()
        .iter()
        .map(|r| match &r.body {
            hookledger::ledger::record::RecordBody::Failed(f) => {
                format!("failed {}", f.error_class)
            }
            other => other.kind().to_string(),
        })
        .collect();
    assert_eq!(
        trail,
        [
            "enqueued",
            "attempted",
            "failed abandoned",
            "attempted",
            "failed abandoned",
            "attempted",
            "failed abandoned",
            "dead_parked"
        ]
    );
    assert!(ledger.verify().unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_attempt_every_acknowledged_event_arrives_and_duplicates_are_the_cut_off_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.duckdb");
    let (url, hits, ids) = receiver(Some(Duration::from_millis(300))).await;
    let (db2, url2) = (db.clone(), url.clone());
    let acked = tokio::task::spawn_blocking(move || {
        let (idle, mut acked) = run_child(&db2, &url2, 40, &hits, 10);
        assert!(!idle, "killed while attempts were in flight");
        let (idle, more) = run_child(&db2, &url2, 0, &hits, usize::MAX);
        assert!(idle);
        acked.extend(more);
        acked
    })
    .await
    .unwrap();
    assert!(!acked.is_empty());
    let received: Vec<String> = ids.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &received {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let ledger = Ledger::open(&db, Arc::new(SystemClock)).unwrap();
    for n in &acked {
        let id = event(*n).to_string();
        assert!(
            counts.contains_key(id.as_str()),
            "acknowledged event {n} never arrived"
        );
    }
    let cut_off: HashSet<String> = counts
        .keys()
        .filter(|id| {
            let e = hookledger::ids::EventId(id.parse().unwrap());
            ledger
                .history(DeliveryKey::new(webhook(1), e))
                .unwrap()
                .iter()
                .any(|r| matches!(&r.body, hookledger::ledger::record::RecordBody::Failed(f) if f.error_class == hookledger::ledger::record::ErrorClass::Abandoned))
        })
        .map(|s| s.to_string())
        .collect();
    for (id, n) in &counts {
        if *n > 1 {
            assert!(
                cut_off.contains(*id),
                "{id} arrived {n} times without being cut off"
            );
        }
    }
    assert!(!cut_off.is_empty(), "the kill cut off attempts in flight");
    assert_eq!(ledger.state().live_len(), 0);
    assert!(ledger.verify().unwrap().ok());
}
