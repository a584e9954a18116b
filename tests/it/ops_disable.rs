//! Auto-disable with a manual clock: a webhook whose every attempt fails stays active at 5
//! days minus a minute, is deactivated at 5 days (an `auto_disabled` registry change with its
//! evidence, its pending deliveries parked, and the `webhook.auto_disabled` operational event
//! delivered to an operational webhook), and one success in between starts the span anew.

use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::ManualClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, OpsConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::health::DisablePolicy;
use hookledger::delivery::operational::Watcher;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::WebhookId;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::{Change, OptionsChange};

use crate::ops_common::Receiver;

const DAY: i64 = 86_400;

async fn setup(
    fail_first: usize,
) -> (
    tempfile::TempDir,
    ManualClock,
    Arc<Engine>,
    WebhookId,
    Receiver,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_epoch();
    let ledger =
        Arc::new(Ledger::open(&dir.path().join("d.duckdb"), Arc::new(clock.clone())).unwrap());
    let sender = Sender::new(SenderConfig {
        egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
        ..SenderConfig::default()
    })
    .unwrap();
    let config = EngineConfig {
        schedule: RetrySchedule::parse("1d,1d,1d,1d,1d,1d,1d,1d").unwrap(),
        ..EngineConfig::default()
    };
    let ops = OpsConfig {
        keyring: None,
        disable: DisablePolicy {
            after: Some(Duration::from_secs(5 * DAY as u64)),
            min_failures: 3,
        },
    };
    let engine = Engine::with_ops(ledger, sender, Arc::new(clock.clone()), config, ops);
    let (rx, url) = Receiver::start(fail_first, 0.0, 1).await;
    let id = WebhookId::new();
    engine
        .ledger()
        .commit(Commit {
            changes: vec![(id, Change::created(url, vec![], None, Secret::generate()))],
            ..Commit::default()
        })
        .await
        .unwrap();
    (dir, clock, engine, id, rx)
}

async fn publish(engine: &Arc<Engine>, n: u32) {
    engine
        .publish(Publish::new(
            None,
            "order.created".into(),
            serde_json::json!({ "n": n }),
        ))
        .await
        .unwrap();
    engine.drain().await;
}

/// Moves the clock and runs one re-drive pass (which decides auto-disable first).
async fn at(engine: &Arc<Engine>, clock: &ManualClock, seconds: i64) {
    clock.advance(chrono::Duration::seconds(seconds));
    engine.redrive_once().await.unwrap();
    engine.drain().await;
}

fn active(engine: &Engine, id: WebhookId) -> bool {
    engine
        .ledger()
        .shared()
        .read_registry()
        .get(&id)
        .unwrap()
        .active
}

/// An operational webhook receiving `webhook.auto_disabled` only, and its secret.
async fn operational(engine: &Arc<Engine>) -> (Receiver, Secret) {
    let (rx, url) = Receiver::start(0, 0.0, 9).await;
    let secret = Secret::generate();
    let filter = vec!["webhook.auto_disabled".to_owned()];
    let changes = vec![
        Change::created(url, filter, None, secret.clone()),
        Change::Configured(OptionsChange {
            operational: Some(true),
            ..OptionsChange::default()
        }),
    ];
    let id = WebhookId::new();
    engine
        .ledger()
        .commit(Commit {
            changes: changes.into_iter().map(|c| (id, c)).collect(),
            ..Commit::default()
        })
        .await
        .unwrap();
    (rx, secret)
}

/// The request's `webhook-signature` holds the one the standardwebhooks crate computes for its
/// id, timestamp and body (`verify` itself refuses a manual clock's timestamps as too old).
fn signed_by(hit: &crate::ops_common::Hit, secret: &Secret) -> bool {
    let header = |n: &str| hit.headers[n].to_str().unwrap().to_owned();
    let ts: i64 = header("webhook-timestamp").parse().unwrap();
    let expected = standardwebhooks::Webhook::new(&secret.expose())
        .unwrap()
        .sign(&header("webhook-id"), ts, &hit.body)
        .unwrap();
    header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_for_five_days_is_disabled_and_its_pending_deliveries_parked() {
    let (_dir, clock, engine, id, rx) = setup(usize::MAX).await;
    let watcher = Watcher::new(engine.clone(), 4);
    watcher.catch_up().await.unwrap();
    let (ops_rx, ops_secret) = operational(&engine).await;
    publish(&engine, 1).await;
    publish(&engine, 2).await;
    for _ in 0..4 {
        at(&engine, &clock, DAY).await;
    }
    // Backoff jitter (±20 %) decides which retries were due; every one failed.
    let tried = rx.count();
    assert!(tried >= 3 && rx.hits().iter().all(|h| !h.ok), "{tried}");
    at(&engine, &clock, DAY - 60).await;
    assert!(active(&engine, id), "5 days minus a minute: still active");
    watcher.catch_up().await.unwrap();
    engine.drain().await;
    assert_eq!(ops_rx.count(), 0, "nothing disabled yet");
    at(&engine, &clock, 60).await;
    assert!(!active(&engine, id), "at 5 days: disabled");
    watcher.catch_up().await.unwrap();
    engine.drain().await;
    let hits = ops_rx.hits();
    assert_eq!(hits.len(), 1, "one webhook.auto_disabled");
    assert!(signed_by(&hits[0], &ops_secret));
    let event: serde_json::Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(event["type"], "webhook.auto_disabled", "{event}");
    assert_eq!(event["data"]["webhook_id"], id.to_string(), "{event}");
    let last_error = event["data"]["last_error"].as_str().unwrap();
    assert!(last_error.starts_with("HTTP 500"), "{event}");
    assert_eq!(
        event["data"]["detail"]["first_failure"], "2026-01-01T00:00:00Z",
        "{event}"
    );
    let counts = engine.ledger().state().counts();
    assert_eq!((counts.pending, counts.parked), (0, 2), "{counts:?}");
    let rows = engine.ledger().reader().unwrap();
    let changes = hookledger::store::Store::changes(&rows).unwrap();
    let last = changes.last().unwrap();
    assert_eq!(last.kind, "deactivated");
    assert_eq!(last.reason.as_deref(), Some("auto_disabled"));
    let evidence: serde_json::Value =
        serde_json::from_str(last.metadata.as_deref().unwrap()).unwrap();
    assert!(
        evidence["failures"].as_u64().unwrap() >= tried as u64,
        "{evidence}"
    );
    assert_eq!(
        evidence["first_failure"], "2026-01-01T00:00:00Z",
        "{evidence}"
    );
    assert!(engine.ledger().verify().unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_success_in_between_starts_the_span_anew() {
    // Three failures, then a success: retries are jittered (±20 % of a day), so the clock
    // moves an hour at a time until each has happened, whenever that is.
    let (_dir, clock, engine, id, rx) = setup(3).await;
    publish(&engine, 1).await;
    let mut hours = 0;
    while !rx.hits().iter().any(|h| h.ok) {
        assert!(
            hours < 5 * 24,
            "no success within 5 days: {} hits",
            rx.count()
        );
        at(&engine, &clock, 3600).await;
        hours += 1;
    }
    assert_eq!(rx.count(), 4, "three failures, then the success");
    assert!(active(&engine, id), "a success before 5 days");
    // Day 6 and later: over 5 days since the first failure, with 3 failures (the minimum),
    // but the success came after them.
    at(&engine, &clock, 6 * DAY - hours * 3600).await;
    at(&engine, &clock, DAY).await;
    assert!(active(&engine, id), "the success reset the span");
}
