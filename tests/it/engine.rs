//! The delivery engine against a real HTTP receiver on 127.0.0.1: publish and fan-out, the
//! inline first attempt, retries driven by the due index under a manual clock, dead-parking at
//! the budget, parking on deactivation, redelivery, idempotent publish, abandoned attempts,
//! draining attempts in flight on shutdown. Peers that hang hold their requests until the test
//! releases them, so no attempt deadline races the work a test waits for; the only wall-time
//! bound is a hang guard far above what any wait takes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookledger::clock::{Clock, ManualClock};
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::{DeliveryKey, EventId, WebhookId};
use hookledger::ledger::record::{Record, RecordBody};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;
use hookledger::LedgerError;
use tokio::sync::watch;

use crate::common::{event, webhook};

/// A receiver that answers with scripted statuses (200 once the script runs out) and keeps
/// every request it got.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (Self, String) {
        let receiver = Receiver {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Receiver::default()
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.got.lock().unwrap().push((headers, body));
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Arc<Engine>,
}

impl Setup {
    fn new(schedule: &str) -> Self {
        let config = EngineConfig {
            schedule: RetrySchedule::parse(schedule).unwrap(),
            ..EngineConfig::default()
        };
        Self::with(config, SenderConfig::default())
    }

    /// A ledger on a temp file, a manual clock, and an engine whose sender admits 127.0.0.1.
    fn with(config: EngineConfig, sender: SenderConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_epoch();
        let ledger =
            Arc::new(Ledger::open(&dir.path().join("e.duckdb"), Arc::new(clock.clone())).unwrap());
        let sender = Sender::new(SenderConfig {
            egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
            ..sender
        })
        .unwrap();
        let engine = Engine::new(ledger, sender, Arc::new(clock.clone()), config);
        Self {
            _dir: dir,
            clock,
            engine,
        }
    }

    fn ledger(&self) -> &Arc<Ledger> {
        self.engine.ledger()
    }

    async fn register(&self, n: u128, url: &str, types: &[&str]) -> Secret {
        let secret = Secret::generate();
        let change = Change::Created {
            url: url.to_owned(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            description: None,
            secret: secret.clone(),
            app: hookledger::ids::AppUid::default_app(),
            payload_format: Default::default(),
        };
        self.ledger()
            .commit(Commit {
                changes: vec![(webhook(n), change)],
                ..Commit::default()
            })
            .await
            .unwrap();
        secret
    }

    async fn publish(&self, n: u128, event_type: &str) -> hookledger::Result<Vec<WebhookId>> {
        let published = self
            .engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(n))),
                event_type.into(),
                serde_json::json!({ "n": n }),
            ))
            .await?;
        self.engine.drain().await;
        Ok(published.deliveries)
    }

    /// Moves the clock past the next due time and runs one re-drive pass to completion.
    async fn retry(&self) -> usize {
        let due = self.ledger().shared().read_projection().next_due().unwrap();
        self.clock.set(due);
        let started = self.engine.redrive_once().await.unwrap();
        self.engine.drain().await;
        started
    }

    fn trail(&self, key: DeliveryKey) -> Vec<String> {
        self.ledger()
            .history(key)
            .unwrap()
            .iter()
            .map(describe)
            .collect()
    }
}

/// A record without its measured parts (durations, jittered times), for stable assertions.
fn describe(r: &Record) -> String {
    match &r.body {
        RecordBody::Attempted { attempt } => format!("attempted {attempt}"),
        RecordBody::Delivered {
            attempt, status, ..
        } => format!("delivered {attempt} {status}"),
        RecordBody::Failed(f) => format!(
            "failed {} {} {}",
            f.attempt,
            f.error_class,
            f.status.map_or("-".into(), |s| s.to_string())
        ),
        other => other.kind().to_string(),
    }
}

#[tokio::test]
async fn publish_fans_out_to_matching_active_webhooks_with_verifiable_signatures() {
    let s = Setup::new("1s");
    // Verifiers check the signed timestamp against the wall clock.
    s.clock.set(chrono::Utc::now());
    let (rx, url) = Receiver::start(&[]).await;
    let secret = s.register(1, &url, &["order"]).await;
    s.register(2, &url, &[]).await;
    s.register(3, &url, &["invoice"]).await;
    let deliveries = s.publish(1, "order.created").await.unwrap();
    assert_eq!(deliveries, vec![webhook(1), webhook(2)]);
    assert_eq!(rx.count(), 2);
    for (w, _) in [(1, ()), (2, ())] {
        assert_eq!(
            s.trail(DeliveryKey::new(webhook(w), event(1))),
            vec!["enqueued", "attempted 1", "delivered 1 200"]
        );
    }
    let verifier = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
    let verified = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, b)| verifier.verify(b, h).is_ok())
        .count();
    assert_eq!(
        verified, 1,
        "exactly webhook 1's request verifies with its secret"
    );
}

#[tokio::test]
async fn fail_fail_succeed_posts_three_times_and_records_each_step() {
    let s = Setup::new("5s,5m");
    let (rx, url) = Receiver::start(&[500, 503]).await;
    s.register(1, &url, &[]).await;
    s.publish(1, "order.created").await.unwrap();
    assert_eq!(s.retry().await, 1);
    assert_eq!(s.retry().await, 1);
    assert_eq!(rx.count(), 3);
    let k = DeliveryKey::new(webhook(1), event(1));
    insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("engine_fail_fail_succeed", s.trail(k).join("\n"));
    });
    assert!(s.ledger().verify().unwrap().ok());
}

#[tokio::test]
async fn the_last_failure_within_the_budget_is_followed_by_dead_parked_and_no_more_posts() {
    let s = Setup::new("1s,1s");
    let (rx, url) = Receiver::start(&[500, 500, 500, 500]).await;
    s.register(1, &url, &[]).await;
    s.publish(1, "x").await.unwrap();
    s.retry().await;
    s.retry().await;
    let k = DeliveryKey::new(webhook(1), event(1));
    assert_eq!(
        s.trail(k),
        vec![
            "enqueued",
            "attempted 1",
            "failed 1 status 500",
            "attempted 2",
            "failed 2 status 500",
            "attempted 3",
            "failed 3 status 500",
            "dead_parked"
        ]
    );
    assert_eq!(s.ledger().shared().read_projection().next_due(), None);
    s.clock.advance(chrono::Duration::hours(1));
    assert_eq!(s.engine.redrive_once().await.unwrap(), 0);
    assert_eq!(rx.count(), 3, "no fourth POST");
}

#[tokio::test]
async fn parked_on_deactivation_then_redelivered_and_delivered() {
    let s = Setup::new("1m");
    let (rx, url) = Receiver::start(&[500]).await;
    s.register(1, &url, &[]).await;
    s.publish(1, "x").await.unwrap();
    s.ledger()
        .commit(Commit {
            changes: vec![(
                webhook(1),
                Change::Deactivated {
                    reason: "gone".into(),
                },
            )],
            park: Some((webhook(1), "webhook deactivated".into())),
            ..Commit::default()
        })
        .await
        .unwrap();
    let k = DeliveryKey::new(webhook(1), event(1));
    assert_eq!(s.trail(k).last().unwrap(), "parked");
    let reactivate = Change::Updated {
        url: None,
        event_types: None,
        description: None,
        active: Some(true),
        payload_format: None,
    };
    s.ledger()
        .commit(Commit {
            changes: vec![(webhook(1), reactivate)],
            ..Commit::default()
        })
        .await
        .unwrap();
    s.engine.redeliver(k, "operator").await.unwrap();
    assert_eq!(s.engine.redrive_once().await.unwrap(), 1);
    s.engine.drain().await;
    assert_eq!(rx.count(), 2);
    assert_eq!(
        s.trail(k)[3..],
        ["parked", "requeued", "attempted 1", "delivered 1 200"]
    );
    let unknown = DeliveryKey::new(webhook(1), event(9));
    let err = s.engine.redeliver(unknown, "x").await;
    assert!(
        matches!(err, Err(LedgerError::UnknownDelivery(k)) if k == unknown),
        "no such delivery: {err:?}"
    );
}

#[tokio::test]
async fn publishing_again_returns_the_first_answer_or_a_conflict() {
    let s = Setup::new("1s");
    let (rx, url) = Receiver::start(&[]).await;
    s.register(1, &url, &[]).await;
    let first = s.publish(1, "x").await.unwrap();
    let again = s
        .engine
        .publish(Publish::new(
            Some(hookledger::ids::ProducerId::of_uuid(event(1))),
            "x".into(),
            serde_json::json!({ "n": 1 }),
        ))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.deliveries, first);
    let other = s
        .engine
        .publish(Publish::new(
            Some(hookledger::ids::ProducerId::of_uuid(event(1))),
            "x".into(),
            serde_json::json!({ "n": 2 }),
        ))
        .await;
    assert!(matches!(
        other,
        Err(LedgerError::EventExists {
            same_body: false,
            ..
        })
    ));
    s.engine.drain().await;
    assert_eq!(rx.count(), 1, "nothing sent twice");
}

#[tokio::test]
async fn an_attempt_cut_off_by_a_crash_is_recorded_as_abandoned_and_retried() {
    let s = Setup::new("1s");
    let (rx, url) = Receiver::start(&[]).await;
    s.register(1, &url, &[]).await;
    // What a crash leaves: enqueued and attempted committed, no outcome.
    let k = DeliveryKey::new(webhook(1), EventId(event(5).0));
    let mut commit = crate::common::publish_commit(5, &[webhook(1)], chrono::Utc::now());
    commit
        .records
        .push(hookledger::ledger::record::NewRecord::new(
            k,
            RecordBody::Attempted { attempt: 1 },
        ));
    s.ledger().commit(commit).await.unwrap();
    assert_eq!(s.engine.recover_abandoned().await.unwrap(), 1);
    assert_eq!(s.retry().await, 1);
    assert_eq!(rx.count(), 1);
    assert_eq!(
        s.trail(k),
        vec![
            "enqueued",
            "attempted 1",
            "failed 1 abandoned -",
            "attempted 2",
            "delivered 2 200"
        ]
    );
}

/// A peer that accepts connections and never answers until `release` is sent: then it drops
/// every connection it holds, and every later one, without an answer. Its URL.
async fn hanging_peer() -> (String, watch::Sender<bool>) {
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", hang.local_addr().unwrap());
    let (release, mut released) = watch::channel(false);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                conn = hang.accept() => match conn {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => return,
                },
                // Released (or the test is over).
                _ = released.wait_for(|r| *r) => break,
            }
        }
        drop(held);
        while let Ok((conn, _)) = hang.accept().await {
            drop(conn);
        }
    });
    (url, release)
}

/// Far above how long any condition here takes; a hang guard, not a measure.
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until `done` holds, re-checking whenever a commit lands; panics after [`HANG_GUARD`].
async fn until(s: &Setup, done: impl Fn() -> bool) {
    let mut committed = s.ledger().shared().subscribe();
    tokio::time::timeout(HANG_GUARD, async {
        while !done() {
            let _ = committed.changed().await;
        }
    })
    .await
    .expect("condition reached within the hang guard");
}

/// A receiver that holds every request until `open` turns true, then answers 200; its URL
/// and how many requests it holds or has held.
async fn held_receiver() -> (String, Arc<AtomicUsize>, watch::Sender<bool>) {
    let (open, opened) = watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let count = arrived.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let (count, mut opened) = (count.clone(), opened.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = opened.wait_for(|open| *open).await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, arrived, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redrive_loop_retries_when_due_and_drains_on_shutdown() {
    const IN_FLIGHT: u128 = 3;
    let s = Setup::new("30s");
    let (rx, url) = Receiver::start(&[500]).await;
    s.register(1, &url, &["retry"]).await;
    let (held_url, arrived, open) = held_receiver().await;
    s.register(2, &held_url, &["held"]).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut run = tokio::spawn(s.engine.clone().run(shutdown));
    s.publish(1, "retry").await.unwrap();
    assert_eq!(rx.count(), 1);
    // Not due yet: the loop sleeps. Move the clock past the due time and wake it.
    let due = s.ledger().shared().read_projection().next_due().unwrap();
    s.clock.set(due);
    s.engine.wake();
    let k = DeliveryKey::new(webhook(1), event(1));
    until(&s, || s.ledger().state().counts().delivered == 1).await;
    assert_eq!(rx.count(), 2);
    assert_eq!(s.trail(k).last().unwrap(), "delivered 2 200");

    // Attempts really in flight when the stop comes: the held receiver has their requests.
    for n in 0..IN_FLIGHT {
        s.engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(100 + n))),
                "held".into(),
                serde_json::json!({ "n": n }),
            ))
            .await
            .unwrap();
    }
    tokio::time::timeout(HANG_GUARD, async {
        while arrived.load(Ordering::SeqCst) < IN_FLIGHT as usize {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the held requests arrived");
    stop.send(true).unwrap();
    // The loop cannot end while they are held (this wait only gives a loop that does not
    // drain the time to end; one that drains never ends here, however slow the machine).
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut run).await;
    assert!(early.is_err(), "the loop stopped with attempts in flight");
    open.send_replace(true);
    tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("the loop stops once the attempts in flight are recorded")
        .unwrap();
    // Returned from `run`, so every attempt in flight at the stop is already recorded.
    for n in 0..IN_FLIGHT {
        let held = DeliveryKey::new(webhook(2), event(100 + n));
        assert_eq!(
            s.trail(held),
            ["enqueued", "attempted 1", "delivered 1 200"],
            "{held}"
        );
    }
    assert_eq!(s.ledger().state().counts().in_attempt, 0);
}

/// A receiver that never answers must not hold back the others: a hundred deliveries to a
/// healthy receiver complete while its attempts wait for an answer (the peer holds them until
/// the test releases it, so no deadline races the hundred), and then they are recorded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_a_healthy_one() {
    let config = EngineConfig {
        max_in_flight: 16,
        per_webhook: 4,
        ..EngineConfig::default()
    };
    let sender = SenderConfig {
        attempt_timeout: std::time::Duration::from_secs(600),
        ..SenderConfig::default()
    };
    let s = Setup::with(config, sender);
    let (hang_url, release) = hanging_peer().await;
    let (healthy, url) = Receiver::start(&[]).await;
    s.register(1, &hang_url, &["slow"]).await;
    s.register(2, &url, &["fast"]).await;
    for n in 0..4 {
        s.engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(1000 + n))),
                "slow".into(),
                serde_json::json!({}),
            ))
            .await
            .unwrap();
    }
    for n in 0..100 {
        s.engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(n))),
                "fast".into(),
                serde_json::json!({}),
            ))
            .await
            .unwrap();
    }
    until(&s, || s.ledger().state().counts().delivered == 100).await;
    assert_eq!(healthy.count(), 100);
    // All hundred were delivered while the hanging attempts were still waiting for an answer.
    for n in 0..4 {
        let stuck = DeliveryKey::new(webhook(1), event(1000 + n));
        assert_eq!(
            s.ledger().state().get(&stuck),
            Some(hookledger::ledger::projection::Live::InAttempt { attempt: 1 }),
            "{stuck}"
        );
    }
    release.send_replace(true);
    s.engine.drain().await;
    let hung = s.trail(DeliveryKey::new(webhook(1), event(1000)));
    assert_eq!(hung.last().unwrap(), "failed 1 reset -");
}

#[tokio::test]
async fn recover_requeues_the_dead_and_parked_of_a_webhook_in_a_window_only() {
    let s = Setup::new("1s");
    let (rx, url) = Receiver::start(&[500, 500, 500, 500]).await;
    s.register(1, &url, &[]).await;
    s.publish(1, "x").await.unwrap();
    s.retry().await; // event 1: failed twice, dead after its second attempt
    let dead_at = s.clock.now();
    s.clock.advance(chrono::Duration::hours(2));
    s.publish(2, "x").await.unwrap();
    s.retry().await; // event 2: dead two hours later
    assert_eq!(s.ledger().state().counts().dead, 2);
    let window_start = dead_at - chrono::Duration::minutes(1);
    let window_end = dead_at + chrono::Duration::hours(1);
    let n = s
        .engine
        .recover(
            webhook(1),
            window_start,
            window_end,
            "operator: receiver fixed",
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "only event 1 finished inside the window");
    assert_eq!(s.engine.redrive_once().await.unwrap(), 1);
    s.engine.drain().await;
    assert_eq!(rx.count(), 5);
    let k1 = DeliveryKey::new(webhook(1), event(1));
    assert_eq!(s.trail(k1).last().unwrap(), "delivered 1 200");
    assert_eq!(s.ledger().state().counts().dead, 1);
}

/// The seed's stall bug: one bad exchange must not stop the pass. A receiver that resets the
/// connection and one that answers with a broken `content-encoding` are recorded as failed,
/// and the delivery due after them in the same pass is still attempted and delivered.
#[tokio::test]
async fn broken_receivers_are_recorded_as_failed_and_the_next_due_delivery_still_goes_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::new("1s");
    let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_url = format!("http://{}/hook", reset.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = reset.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            drop(conn); // closed before any response
        }
    });
    let garbled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbled_url = format!("http://{}/hook", garbled.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = garbled.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let reply = "HTTP/1.1 500 Internal Server Error\r\ncontent-encoding: gzip\r\n\
                         content-length: 9\r\n\r\nnot-gzip!";
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    let (healthy, url) = Receiver::start(&[]).await;
    s.register(1, &reset_url, &["a"]).await;
    s.register(2, &garbled_url, &["a"]).await;
    s.register(3, &url, &["b"]).await;
    s.publish(1, "a").await.unwrap(); // both broken receivers fail their first attempt
    s.clock.advance(chrono::Duration::seconds(30));
    s.publish(2, "b").await.unwrap();
    assert_eq!(healthy.count(), 1);
    // Put a due retry of each broken delivery *and* a due healthy delivery in one pass.
    s.engine
        .redeliver(DeliveryKey::new(webhook(3), event(2)), "again")
        .await
        .unwrap();
    assert_eq!(s.engine.redrive_once().await.unwrap(), 3);
    s.engine.drain().await;
    assert_eq!(
        healthy.count(),
        2,
        "the healthy delivery went out in the same pass"
    );
    let reset_trail = s.trail(DeliveryKey::new(webhook(1), event(1)));
    assert_eq!(reset_trail[2], "failed 1 reset -");
    assert_eq!(reset_trail[4], "failed 2 reset -");
    let garbled_trail = s.trail(DeliveryKey::new(webhook(2), event(1)));
    assert_eq!(garbled_trail[2], "failed 1 status 500");
    let body = s
        .ledger()
        .history(DeliveryKey::new(webhook(2), event(1)))
        .unwrap();
    match &body[2].body {
        RecordBody::Failed(f) => assert_eq!(f.response_body.as_deref(), Some("not-gzip!")),
        other => panic!("expected failed, got {other:?}"),
    }
}

/// Regression: a re-drive pass walked one due index from its start, at most 8x the free slots
/// deep, so a webhook that could take nothing (its one slot hung) with more rows due than that
/// hid the due retry of every other webhook until its backlog cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_webhooks_backlog_does_not_hide_another_webhooks_retry() {
    let config = EngineConfig {
        schedule: RetrySchedule::parse("10s").unwrap(),
        max_in_flight: 4,
        per_webhook: 1,
    };
    let sender = SenderConfig {
        attempt_timeout: std::time::Duration::from_secs(600),
        ..SenderConfig::default()
    };
    let s = Setup::with(config, sender);
    let (hang_url, _release) = hanging_peer().await;
    let (flaky, url) = Receiver::start(&[500]).await;
    s.register(1, &hang_url, &["slow"]).await;
    s.register(2, &url, &["fast"]).await;
    // The flaky webhook's first attempt fails: its retry is due about 10 s later.
    s.publish(1, "fast").await.unwrap();
    assert_eq!(s.trail(DeliveryKey::new(webhook(2), event(1))).len(), 3);
    // Then 50 events for the hanging webhook: one takes its only slot, 49 are due now, all
    // before the retry.
    for n in 100..150 {
        s.engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(event(n))),
                "slow".into(),
                serde_json::json!({}),
            ))
            .await
            .unwrap();
    }
    assert_eq!(s.ledger().state().counts().pending, 50);
    s.clock.advance(chrono::Duration::seconds(13));
    let started = s.engine.redrive_once().await.unwrap();
    assert_eq!(
        started, 1,
        "the retry starts; the stalled webhook's rows wait"
    );
    until(&s, || flaky.count() == 2).await;
    until(&s, || s.ledger().state().counts().delivered == 1).await;
    assert_eq!(s.ledger().state().counts().pending, 49);
}
