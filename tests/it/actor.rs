//! Who changed what (issue 17): every registry change records its actor, in its chained row.
//! Through the real router served in process (a manual clock drives auto-disable): the
//! history names `operator`, a scoped token by its id and `system:auto_disable`; editing a
//! stored actor in the DuckDB file makes `verify` fail at that change's seq; a file written
//! by an older build (the schema 3 fixture) opens, verifies and shows no actor for its rows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::ManualClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, OpsConfig, Publish};
use hookledger::delivery::health::DisablePolicy;
use hookledger::delivery::sender::SenderConfig;
use hookledger::delivery::signing::Secret;
use hookledger::ids::{AppUid, WebhookId};
use hookledger::ledger::verify::{verify, Log, Verdict};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::{Actor, Change};
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::Store;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{loopback_sender, serve_api};

use crate::ops_common::Receiver;

const OPERATOR: &str = "operator-token-actor-5c1b";
const DAY: i64 = 86_400;

struct Api {
    base: String,
    client: reqwest::Client,
    engine: Arc<Engine>,
    clock: ManualClock,
}

impl Api {
    /// The router over a ledger at `db` whose webhooks are disabled after 5 failing days.
    async fn start(db: &Path) -> Self {
        let clock = ManualClock::at_epoch();
        let ledger = Arc::new(Ledger::open(db, Arc::new(clock.clone())).unwrap());
        let (sender, egress) = loopback_sender(SenderConfig::default());
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
        let base = serve_api(&engine, egress, OPERATOR).await;
        Self {
            base,
            client: reqwest::Client::new(),
            engine,
            clock,
        }
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `(kind, actor)` of every change in webhook `id`'s history.
    async fn actors(&self, id: &str, token: &str) -> Vec<(String, Value)> {
        let (status, page) = self.get(&format!("/v1/webhooks/{id}/history"), token).await;
        assert_eq!(status, 200, "{page}");
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["kind"].as_str().unwrap().to_owned(), c["actor"].clone()))
            .collect()
    }

    /// Moves the clock and runs one re-drive pass (which decides auto-disable first).
    async fn at(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
        self.engine.redrive_once().await.unwrap();
        self.engine.drain().await;
    }
}

/// The read-only verdict of the DuckDB file at `db`.
fn verdict(db: &Path) -> Verdict {
    let store = DuckStore::open(db, OpenMode::ReadOnly).unwrap();
    verify(&store, None).unwrap()
}

fn assert_fails_at_registry(v: &Verdict, seq: u64, case: &str) {
    let p = v
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: verify passed"));
    assert_eq!((p.log, p.seq), (Log::Registry, seq), "{case}: {v}");
    assert!(
        v.to_string()
            .starts_with(&format!("FAILED: registry seq {seq}")),
        "{case}: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_names_the_operator_a_scoped_token_by_id_and_auto_disable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.duckdb");
    let api = Api::start(&db).await;
    let (status, app) = api
        .call(Method::POST, "/v1/apps", OPERATOR, json!({"uid": "shop"}))
        .await;
    assert_eq!(status, 201, "{app}");
    let (status, issued) = api
        .call(Method::POST, "/v1/apps/shop/tokens", OPERATOR, json!({}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token_value"].as_str().unwrap().to_owned();
    let token_id = issued["id"].as_str().unwrap().to_owned();

    // The scoped token creates the webhook, the operator edits it, hookledger disables it.
    let (rx, url) = Receiver::start(usize::MAX, 0.0, 1).await;
    let (status, hook) = api
        .call(Method::POST, "/v1/webhooks", &token, json!({"url": url}))
        .await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_owned();
    let (status, edited) = api
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            OPERATOR,
            json!({"description": "edited by the operator"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    for n in 1..=2 {
        let mut publish = Publish::new(None, "order.created".into(), json!({ "n": n }));
        publish.app = AppUid::parse("shop").unwrap();
        api.engine.publish(publish).await.unwrap();
    }
    api.engine.drain().await;
    for _ in 0..5 {
        api.at(DAY).await;
    }
    assert!(rx.count() >= 3, "every attempt failed: {}", rx.count());
    let expected = vec![
        ("created".to_owned(), json!(format!("token:{token_id}"))),
        ("updated".to_owned(), json!("operator")),
        ("deactivated".to_owned(), json!("system:auto_disable")),
    ];
    assert_eq!(api.actors(&id, OPERATOR).await, expected);
    assert_eq!(
        api.actors(&id, &token).await,
        expected,
        "the app's own token sees the same history"
    );
    let (_, page) = api
        .get(&format!("/v1/webhooks/{id}/history"), OPERATOR)
        .await;
    assert!(
        !page.to_string().contains(&token),
        "never the token's value"
    );

    // The OpenAPI document describes it.
    let (status, doc) = api.get("/openapi.json", OPERATOR).await;
    assert_eq!(status, 200);
    let entry = &doc["components"]["schemas"]["HistoryEntry"];
    assert!(
        entry["properties"]["actor"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("token:<token id>")),
        "{entry}"
    );

    // App and token changes name their actor too (in the row).
    let rows = api.engine.ledger().reader().unwrap().changes().unwrap();
    let app_rows: Vec<_> = rows
        .iter()
        .filter(|c| c.kind.starts_with("app_") || c.kind.starts_with("token_"))
        .map(|c| (c.kind.as_str(), c.actor.as_deref(), c.format_version))
        .collect();
    assert_eq!(
        app_rows,
        vec![
            ("app_created", Some("operator"), 3),
            ("token_issued", Some("operator"), 3)
        ]
    );
    assert!(api.engine.ledger().verify().unwrap().ok());
}

#[test]
fn editing_a_stored_actor_makes_verify_fail_at_that_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.duckdb");
    let ledger = Ledger::open(&db, Arc::new(ManualClock::at_epoch())).unwrap();
    let id = WebhookId::new();
    let secret = Secret::generate();
    let changes = vec![
        Change::created("http://127.0.0.1:9/h", vec![], None, secret).by(Actor::Operator),
        Change::Deactivated { reason: "r".into() }.by(Actor::Token(uuid::Uuid::from_u128(7))),
    ];
    ledger
        .commit_blocking(Commit {
            changes: changes.into_iter().map(|c| (id, c)).collect(),
            ..Commit::default()
        })
        .unwrap();
    ledger.close();
    let untouched = verdict(&db);
    assert!(untouched.ok(), "{untouched}");
    let stored = DuckStore::open(&db, OpenMode::ReadOnly)
        .unwrap()
        .changes()
        .unwrap();
    let actors: Vec<_> = stored.iter().map(|c| c.actor.as_deref()).collect();
    assert_eq!(
        actors,
        vec![
            Some("operator"),
            Some("token:00000000-0000-0000-0000-000000000007")
        ]
    );
    for (case, attack) in [
        (
            "another actor",
            "UPDATE webhook_changes SET actor = 'system:auto_disable' WHERE seq = 2",
        ),
        (
            "no actor",
            "UPDATE webhook_changes SET actor = NULL WHERE seq = 2",
        ),
    ] {
        let copy = dir.path().join("attacked.duckdb");
        std::fs::copy(&db, &copy).unwrap();
        let conn = duckdb::Connection::open(&copy).unwrap();
        assert_eq!(conn.execute(attack, []).unwrap(), 1, "{case}");
        drop(conn);
        assert_fails_at_registry(&verdict(&copy), 2, case);
        std::fs::remove_file(&copy).unwrap();
    }
}

/// The schema 3 fixture (written by an older build: registry rows of format 1).
fn old_file(dir: &Path, name: &str) -> std::path::PathBuf {
    let db = dir.join(name);
    std::fs::write(&db, include_bytes!("../fixtures/schema3.duckdb")).unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_before_actors_opens_verifies_and_shows_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = old_file(dir.path(), "old.duckdb");
    let old = DuckStore::open(&db, OpenMode::ReadOnly)
        .unwrap()
        .changes()
        .unwrap();
    assert!(!old.is_empty());
    assert!(
        old.iter()
            .all(|c| c.format_version < 3 && c.actor.is_none()),
        "read without migrating: no actor"
    );
    let api = Api::start(&db).await;
    assert_eq!(
        api.engine
            .ledger()
            .reader()
            .unwrap()
            .schema_version()
            .unwrap(),
        hookledger::store::duck::supported_schema()
    );
    let v = api.engine.ledger().verify().unwrap();
    assert!(v.ok(), "{v}");
    let webhook = old.iter().find(|c| c.kind == "created").unwrap();
    let id = webhook.webhook_id.to_string();
    let history = api.actors(&id, OPERATOR).await;
    assert!(!history.is_empty());
    assert!(
        history.iter().all(|(_, actor)| actor.is_null()),
        "{history:?}"
    );
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            OPERATOR,
            json!({"description": "after the upgrade"}),
        )
        .await;
    assert_eq!(status, 200);
    let history = api.actors(&id, OPERATOR).await;
    assert!(history[..history.len() - 1]
        .iter()
        .all(|(_, a)| a.is_null()));
    assert_eq!(history.last().unwrap().1, json!("operator"));
    assert!(api.engine.ledger().verify().unwrap().ok());
}

#[test]
fn an_actor_written_into_an_old_row_makes_verify_fail_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = old_file(dir.path(), "old.duckdb");
    // Migrated (the column exists), untouched: verifies.
    Ledger::open(&db, Arc::new(ManualClock::at_epoch()))
        .unwrap()
        .close();
    let v = verdict(&db);
    assert!(v.ok(), "{v}");
    let conn = duckdb::Connection::open(&db).unwrap();
    let first: i64 = conn
        .query_row("SELECT min(seq) FROM webhook_changes", [], |r| r.get(0))
        .unwrap();
    let sql = format!("UPDATE webhook_changes SET actor = 'operator' WHERE seq = {first}");
    assert_eq!(conn.execute(&sql, []).unwrap(), 1);
    drop(conn);
    let v = verdict(&db);
    assert_fails_at_registry(&v, first as u64, "an actor on an old row");
    assert!(v.to_string().contains("an actor on a row of format"), "{v}");
}
