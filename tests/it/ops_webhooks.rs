//! Operational webhooks (issue 16, point 2), with real receivers on 127.0.0.1 and a manual
//! clock near real time (the standardwebhooks crate checks the signature's age): each kind of
//! hookledger's own events reaches the operational webhook once, verifies, and is in the
//! ledger; an operational webhook that fails causes nothing about itself; an ordinary webhook
//! whose filter matches everything gets none of them; replaying the facts from an old cursor
//! (a crash before the cursor was stored) writes nothing new.

use std::collections::BTreeMap;
use std::sync::Arc;

use hookledger::clock::ManualClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::operational::{Watcher, CURSOR_SETTING};
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::WebhookId;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::{Change, OptionsChange};
use hookledger::store::Store;

use crate::ops_common::{Hit, Receiver};

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub engine: Arc<Engine>,
}

impl Setup {
    pub fn new(schedule: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let ledger =
            Arc::new(Ledger::open(&dir.path().join("o.duckdb"), Arc::new(clock.clone())).unwrap());
        let sender = Sender::new(SenderConfig {
            egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
            ..SenderConfig::default()
        })
        .unwrap();
        let config = EngineConfig {
            schedule: RetrySchedule::parse(schedule).unwrap(),
            ..EngineConfig::default()
        };
        let engine = Engine::new(ledger, sender, Arc::new(clock.clone()), config);
        Self {
            _dir: dir,
            clock,
            engine,
        }
    }

    pub async fn change(&self, id: WebhookId, changes: Vec<Change>) {
        self.engine
            .ledger()
            .commit(Commit {
                changes: changes.into_iter().map(|c| (id, c)).collect(),
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    /// A webhook to `url` with `filter`, operational or not.
    pub async fn webhook(
        &self,
        url: &str,
        filter: &[&str],
        operational: bool,
    ) -> (WebhookId, Secret) {
        let id = WebhookId::new();
        let secret = Secret::generate();
        let types = filter.iter().map(|s| s.to_string()).collect();
        let mut changes = vec![Change::created(url, types, None, secret.clone())];
        if operational {
            changes.push(Change::Configured(OptionsChange {
                operational: Some(true),
                ..OptionsChange::default()
            }));
        }
        self.change(id, changes).await;
        (id, secret)
    }

    /// Moves the clock, runs a re-drive pass, then the watcher, and waits for the attempts.
    pub async fn step(&self, watcher: &Watcher, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
        self.engine.redrive_once().await.unwrap();
        self.engine.drain().await;
        watcher.catch_up().await.unwrap();
        self.engine.drain().await;
    }
}

/// `(type, webhook_id)` of every operational event a receiver got, each checked against the
/// secret with the standardwebhooks crate.
pub fn received(hits: &[Hit], secret: &Secret) -> Vec<(String, String)> {
    let verifier = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
    hits.iter()
        .map(|h| {
            verifier.verify(&h.body, &h.headers).expect("verifies");
            let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
            assert_eq!(v["type"], v["data"]["type"], "{v}");
            (
                v["type"].as_str().unwrap().to_owned(),
                v["data"]["webhook_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn is_operational_type(t: &str) -> bool {
    t.starts_with("webhook.") || t.starts_with("delivery.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_reaches_the_operational_webhook_once_and_nothing_loops() {
    // Three attempts: the first, then two retries 10 s (±20 %) apart.
    let s = Setup::new("10s,10s");
    let watcher = Watcher::new(s.engine.clone(), 2);
    assert_eq!(
        watcher.catch_up().await.unwrap(),
        0,
        "an empty ledger: nothing"
    );
    let (op_rx, op_url) = Receiver::start(0, 0.0, 1).await;
    let (bad_rx, bad_url) = Receiver::start(usize::MAX, 0.0, 2).await;
    let (all_rx, all_url) = Receiver::start(0, 0.0, 3).await;
    let (flaky_rx, flaky_url) = Receiver::start(2, 0.0, 4).await;
    let (_dead_rx, dead_url) = Receiver::start(usize::MAX, 0.0, 5).await;
    let (op, op_secret) = s.webhook(&op_url, &[], true).await;
    // Operational too, and always failing: its deliveries fail, are dead-parked, and it is
    // auto-disabled below, none of which may make an event.
    let (bad, _) = s.webhook(&bad_url, &[], true).await;
    let (all, _) = s.webhook(&all_url, &[], false).await;
    let (flaky, _) = s.webhook(&flaky_url, &["order"], false).await;
    let (dead, _) = s.webhook(&dead_url, &["order"], false).await;
    s.engine
        .publish(Publish::new(
            None,
            "order.created".into(),
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap();
    s.engine.drain().await;
    watcher.catch_up().await.unwrap();
    s.engine.drain().await;
    // flaky: fails twice (delivery.failing at the 2nd), then is delivered (recovered); dead:
    // fails three times (failing at the 2nd), then is dead-parked.
    for _ in 0..4 {
        s.step(&watcher, 15).await;
    }
    assert_eq!(flaky_rx.count(), 3);
    s.change(
        all,
        vec![Change::Updated {
            url: None,
            event_types: None,
            description: Some("every event".into()),
            active: None,
            payload_format: None,
        }],
    )
    .await;
    s.change(
        dead,
        vec![Change::Deactivated {
            reason: "gone".into(),
        }],
    )
    .await;
    let auto = |failures| Change::AutoDisabled {
        first_failure: hookledger::clock::Clock::now(&s.clock),
        failures,
        last_error: "HTTP 500".into(),
    };
    s.change(flaky, vec![auto(2)]).await;
    s.change(bad, vec![auto(9)]).await;
    for _ in 0..4 {
        s.step(&watcher, 15).await;
    }

    let got = received(&op_rx.hits(), &op_secret);
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for g in &got {
        *counts.entry(g.clone()).or_default() += 1;
    }
    let id = |w: WebhookId| w.to_string();
    let expected: BTreeMap<(String, String), usize> = [
        ("webhook.created", all),
        ("webhook.created", flaky),
        ("webhook.created", dead),
        ("delivery.failing", flaky),
        ("delivery.failing", dead),
        ("delivery.recovered", flaky),
        ("delivery.dead_parked", dead),
        ("webhook.updated", all),
        ("webhook.deactivated", dead),
        ("webhook.auto_disabled", flaky),
    ]
    .into_iter()
    .map(|(t, w)| ((t.to_owned(), id(w)), 1))
    .collect();
    assert_eq!(
        counts, expected,
        "each kind once, nothing about {op} or {bad}"
    );
    assert!(
        bad_rx.count() >= expected.len(),
        "the failing one was tried too"
    );
    assert!(
        all_rx.hits().iter().all(|h| {
            let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
            !is_operational_type(v["type"].as_str().unwrap())
        }),
        "an ordinary webhook matching everything gets no operational event"
    );
    assert_eq!(all_rx.count(), 1, "only the published event");

    // In the ledger: each as an event delivered to the operational webhooks only, with the
    // `webhook-id` the receiver saw.
    let reader = s.engine.ledger().reader().unwrap();
    let mut ops_events = Vec::new();
    reader
        .scan_events(&mut |e| {
            if is_operational_type(&e.event_type) {
                ops_events.push(e);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(ops_events.len(), expected.len());
    let mut ids: Vec<String> = op_rx
        .hits()
        .iter()
        .map(|h| h.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut stored: Vec<String> = ops_events.iter().map(|e| e.producer_event_id()).collect();
    stored.sort();
    assert_eq!(ids, stored);
    for e in &ops_events {
        // To the active operational webhooks at publish time: `bad` was auto-disabled before
        // the last events were published.
        let to = reader.enqueued_webhooks(e.event_id).unwrap();
        assert!(to.contains(&op), "{}", e.event_type);
        assert!(to.iter().all(|w| *w == op || *w == bad), "{}", e.event_type);
    }

    // A crash before the cursor was stored: the facts are read again, and every event is a
    // duplicate publish that writes nothing and sends nothing.
    s.engine
        .ledger()
        .commit(Commit {
            settings: vec![(CURSOR_SETTING.into(), "0:0".into())],
            ..Commit::default()
        })
        .await
        .unwrap();
    let again = Watcher::new(s.engine.clone(), 2);
    assert_eq!(again.catch_up().await.unwrap(), expected.len());
    s.engine.drain().await;
    let mut n = 0;
    reader
        .scan_events(&mut |e| {
            n += usize::from(is_operational_type(&e.event_type));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, expected.len(), "no second event");
    assert_eq!(op_rx.count(), got.len(), "no second request");
    assert!(s.engine.ledger().verify().unwrap().ok());
}
