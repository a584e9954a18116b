//! A database written before apps (schema 3, by the binary at main's commit 578f2f4:
//! `tests/fixtures/schema3.duckdb`, two webhooks, three events, one receiver answering 204 and
//! one 500) opens read-only unchanged, migrates at a read-write open, verifies, and its
//! webhooks, events and deliveries are the `default` app's; its events are sent as stored.

use std::sync::Arc;

use hookledger::clock::ManualClock;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::ids::{AppUid, DeliveryKey, EventId, ProducerId};
use hookledger::ledger::view::{DeliveryFilter, DeliveryState};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::Store;

use crate::apps::Receiver;

const FIXTURE: &[u8] = include_bytes!("../fixtures/schema3.duckdb");

fn old_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    std::fs::write(&path, FIXTURE).unwrap();
    (dir, path)
}

fn event(n: u8) -> EventId {
    format!("0190a000-0000-7000-8000-00000000000{n}")
        .parse()
        .unwrap()
}

#[test]
fn an_old_file_reads_unmigrated_and_verifies_read_only() {
    let (_dir, path) = old_file();
    let store = DuckStore::open(&path, OpenMode::ReadOnly).unwrap();
    assert_eq!(store.schema_version().unwrap(), 3);
    let verdict = hookledger::ledger::verify::verify(&store, None).unwrap();
    assert!(verdict.ok(), "{verdict}");
    let events = store.events(&[event(1)]).unwrap();
    assert_eq!(events[0].producer_event_id(), event(1).to_string());
    assert_eq!(events[0].format, None);
}

#[tokio::test]
async fn an_old_file_migrates_verifies_and_is_the_default_apps() {
    let (_dir, path) = old_file();
    let clock = ManualClock::at_epoch();
    let ledger = Arc::new(Ledger::open(&path, Arc::new(clock.clone())).unwrap());
    let reader = ledger.reader().unwrap();
    assert_eq!(reader.schema_version().unwrap(), 8);
    let verdict = ledger.verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    let hooks: Vec<_> = {
        let registry = ledger.shared().read_registry();
        let all: Vec<_> = registry.all().map(|w| w.id).collect();
        assert_eq!(all.len(), 2);
        let default: Vec<_> = registry
            .of_app(&AppUid::default_app())
            .map(|w| w.id)
            .collect();
        assert_eq!(default, all, "every old webhook is the default app's");
        all
    };
    let mut filter = DeliveryFilter {
        webhooks: Some(hooks.clone()),
        ..DeliveryFilter::default()
    };
    assert_eq!(reader.deliveries(filter.clone(), 0, 100).unwrap().len(), 6);
    filter.state = Some(DeliveryState::Delivered);
    assert_eq!(reader.deliveries(filter, 0, 100).unwrap().len(), 3);
    let (delivered, dead, parked) = reader.finished_counts(&hooks, u64::MAX).unwrap();
    assert_eq!((delivered, dead, parked), (3, 0, 0));

    // An old event id is still idempotent in the default app, and its body still sent as
    // stored: redelivered to a receiver, the bare payload arrives.
    let (rx, url) = Receiver::start(0).await;
    let sender = Sender::new(SenderConfig {
        egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
        ..SenderConfig::default()
    })
    .unwrap();
    let engine = Engine::new(
        ledger.clone(),
        sender,
        Arc::new(clock.clone()),
        EngineConfig::default(),
    );
    let again = engine
        .publish(Publish::new(
            Some(ProducerId::of_uuid(event(1))),
            "order.created".into(),
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.key, event(1));
    let ok_hook = *hooks
        .iter()
        .find(|h| {
            ledger
                .shared()
                .read_registry()
                .get(h)
                .unwrap()
                .url
                .ends_with("/ok")
        })
        .unwrap();
    let repoint = Change::Updated {
        url: Some(url),
        event_types: None,
        description: None,
        active: None,
        payload_format: None,
    };
    ledger
        .commit(Commit {
            changes: vec![(ok_hook, repoint)],
            ..Commit::default()
        })
        .await
        .unwrap();
    engine
        .redeliver(DeliveryKey::new(ok_hook, event(2)), "test")
        .await
        .unwrap();
    engine.redrive_once().await.unwrap();
    engine.drain().await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(
        &got[0].1[..],
        br#"{"n":2}"#,
        "an old event is sent as stored"
    );
    assert_eq!(got[0].0["webhook-id"], event(2).to_string().as_str());
    assert!(ledger.verify().unwrap().ok());
}
