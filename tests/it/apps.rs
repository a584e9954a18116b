//! Applications, producers' event ids and the Standard Webhooks payload, through the engine
//! against real receivers on 127.0.0.1 (issue 11, points 1, 3 and 4).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookledger::clock::ManualClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::{AppUid, DeliveryKey, ProducerId, WebhookId};
use hookledger::ledger::view::QueueView;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::{Change, PayloadFormat};
use hookledger::LedgerError;
use uuid::Uuid;

/// A receiver that answers 500 to the first `fail` requests, then 204, keeping every request.
#[derive(Clone, Default)]
pub struct Receiver {
    fail: Arc<Mutex<usize>>,
    pub got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Receiver {
    pub async fn start(fail: usize) -> (Self, String) {
        let r = Receiver {
            fail: Arc::new(Mutex::new(fail)),
            ..Receiver::default()
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    pub fn bodies(&self) -> Vec<Bytes> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.got.lock().unwrap().push((headers, body));
    let mut fail = r.fail.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

struct Setup {
    dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Arc<Engine>,
}

fn app(uid: &str) -> AppUid {
    AppUid::parse(uid).unwrap()
}

fn pid(s: &str) -> ProducerId {
    ProducerId::parse(s).unwrap()
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Real time: the standardwebhooks crate refuses a signature more than 5 min old.
        let clock = ManualClock::new(chrono::Utc::now());
        let engine = Self::engine(dir.path(), &clock);
        Self { dir, clock, engine }
    }

    fn engine(dir: &std::path::Path, clock: &ManualClock) -> Arc<Engine> {
        let ledger = Ledger::open(&dir.join("a.duckdb"), Arc::new(clock.clone())).unwrap();
        let sender = Sender::new(SenderConfig {
            egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").unwrap()),
            ..SenderConfig::default()
        })
        .unwrap();
        let config = EngineConfig {
            schedule: RetrySchedule::parse("5s").unwrap(),
            ..EngineConfig::default()
        };
        Engine::new(Arc::new(ledger), sender, Arc::new(clock.clone()), config)
    }

    /// Closes the ledger and opens the file again in a new engine.
    async fn restart(&mut self) {
        self.engine.drain().await;
        let engine =
            std::mem::replace(&mut self.engine, Self::engine(self.dir.path(), &self.clock));
        drop(engine);
    }

    async fn change(&self, webhook: WebhookId, change: Change) -> hookledger::Result<()> {
        self.engine
            .ledger()
            .commit(Commit {
                changes: vec![(webhook, change)],
                ..Commit::default()
            })
            .await
            .map(|_| ())
    }

    async fn create_app(&self, uid: &str) {
        let change = Change::AppCreated {
            app: app(uid),
            name: format!("{uid} inc."),
            metadata: "{}".into(),
        };
        self.change(WebhookId(Uuid::nil()), change).await.unwrap();
    }

    async fn register(
        &self,
        uid: &str,
        url: &str,
        types: &[&str],
        format: PayloadFormat,
    ) -> (WebhookId, Secret) {
        let secret = Secret::generate();
        let id = WebhookId::new();
        let change = Change::Created {
            url: url.to_owned(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            description: None,
            secret: secret.clone(),
            app: app(uid),
            payload_format: format,
        };
        self.change(id, change).await.unwrap();
        (id, secret)
    }

    async fn publish(
        &self,
        uid: &str,
        id: &str,
        payload: serde_json::Value,
    ) -> hookledger::Result<hookledger::delivery::engine::Published> {
        let published = self
            .engine
            .publish(Publish {
                app: app(uid),
                producer_id: Some(pid(id)),
                event_type: "order.created".into(),
                payload,
            })
            .await?;
        self.engine.drain().await;
        Ok(published)
    }

    /// The app's queue view: live rows from the projection, finished counts from the log.
    fn app_view(&self, uid: &str) -> QueueView {
        let ledger = self.engine.ledger();
        let hooks: Vec<WebhookId> = ledger
            .shared()
            .read_registry()
            .of_app(&app(uid))
            .map(|w| w.id)
            .collect();
        let projection = ledger.state();
        let finished = ledger
            .reader()
            .unwrap()
            .finished_counts(&hooks, projection.last_seq())
            .unwrap();
        QueueView::of_app(
            &projection,
            &hooks.into_iter().collect::<HashSet<_>>(),
            finished,
        )
    }
}

#[tokio::test]
async fn an_event_published_to_one_app_reaches_only_that_apps_receivers() {
    let s = Setup::new();
    s.create_app("shop").await;
    s.create_app("blog").await;
    let (shop_rx, shop_url) = Receiver::start(0).await;
    let (blog_rx, blog_url) = Receiver::start(0).await;
    let (shop_hook, _) = s
        .register("shop", &shop_url, &["order"], PayloadFormat::Standard)
        .await;
    let (blog_hook, _) = s
        .register("blog", &blog_url, &[], PayloadFormat::Standard)
        .await;
    let published = s
        .publish("shop", "ord-1", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(published.deliveries, vec![shop_hook]);
    assert_eq!(shop_rx.bodies().len(), 1);
    assert_eq!(
        blog_rx.bodies().len(),
        0,
        "the other app's matching webhook got nothing"
    );
    s.publish("blog", "ord-1", serde_json::json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!((shop_rx.bodies().len(), blog_rx.bodies().len()), (1, 1));
    // A failing receiver leaves one pending delivery in blog; the apps add up to the whole.
    let (_, failing) = Receiver::start(usize::MAX).await;
    s.register("blog", &failing, &[], PayloadFormat::Raw).await;
    s.publish("blog", "ord-2", serde_json::json!({}))
        .await
        .unwrap();
    let whole = QueueView::of(&s.engine.ledger().state());
    let (shop, blog, default) = (
        s.app_view("shop"),
        s.app_view("blog"),
        s.app_view("default"),
    );
    assert_eq!((shop.counts.delivered, blog.counts.delivered), (1, 2));
    assert_eq!(blog.counts.pending, 1);
    let sum = |f: fn(&QueueView) -> u64| f(&shop) + f(&blog) + f(&default);
    assert_eq!(sum(|v| v.counts.delivered), whole.counts.delivered);
    assert_eq!(sum(|v| v.counts.pending), whole.counts.pending);
    assert_eq!(sum(|v| v.live.len() as u64), whole.live.len() as u64);
    assert!(blog
        .live
        .iter()
        .all(|r| r.webhook_id != shop_hook && r.webhook_id != blog_hook));
}

#[tokio::test]
async fn the_same_producer_id_in_two_apps_is_two_events_and_idempotency_survives_a_restart() {
    let mut s = Setup::new();
    s.create_app("shop").await;
    s.create_app("blog").await;
    let (rx, url) = Receiver::start(0).await;
    s.register("shop", &url, &[], PayloadFormat::Standard).await;
    s.register("blog", &url, &[], PayloadFormat::Standard).await;
    let a = s
        .publish("shop", "evt_123", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let b = s
        .publish("blog", "evt_123", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert_ne!(a.key, b.key, "two events");
    assert_eq!(
        (a.event_id.as_str(), b.event_id.as_str()),
        ("evt_123", "evt_123")
    );
    assert_eq!(rx.bodies().len(), 2);
    s.restart().await;
    let again = s
        .publish("shop", "evt_123", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "same body after a restart: the first answer"
    );
    assert_eq!((again.key, again.event_id.as_str()), (a.key, "evt_123"));
    assert_eq!(again.deliveries, a.deliveries);
    let other = s
        .publish("shop", "evt_123", serde_json::json!({"n": 2}))
        .await;
    assert!(
        matches!(
            other,
            Err(LedgerError::EventExists {
                same_body: false,
                ..
            })
        ),
        "another body: a conflict, {other:?}"
    );
    assert_eq!(rx.bodies().len(), 2, "nothing sent again");
    assert!(s.engine.ledger().verify().unwrap().ok());
}

#[tokio::test]
async fn receivers_get_the_envelope_or_the_raw_payload_signed_and_a_retry_resends_the_same_bytes() {
    let s = Setup::new();
    let (std_rx, std_url) = Receiver::start(1).await;
    let (raw_rx, raw_url) = Receiver::start(0).await;
    let (_, std_secret) = s
        .register("default", &std_url, &[], PayloadFormat::Standard)
        .await;
    let (_, raw_secret) = s
        .register("default", &raw_url, &[], PayloadFormat::Raw)
        .await;
    let published_at = s.clock_now();
    s.publish(
        "default",
        "order-42-created",
        serde_json::json!({"id": 42, "b": [1, "x"]}),
    )
    .await
    .unwrap();
    // The standard receiver failed once: the retry sends the same bytes.
    s.clock.advance(chrono::Duration::seconds(10));
    assert_eq!(s.engine.redrive_once().await.unwrap(), 1);
    s.engine.drain().await;
    let got = std_rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].1, got[1].1,
        "the retry re-sends exactly the same bytes"
    );
    assert_eq!(got[0].0["webhook-id"], "order-42-created");
    assert_eq!(got[0].0["webhook-id"], got[1].0["webhook-id"]);
    let body: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "order.created",
            "timestamp": published_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": {"id": 42, "b": [1, "x"]},
        })
    );
    let verifier = standardwebhooks::Webhook::new(&std_secret.expose()).unwrap();
    for (h, b) in &got {
        verifier.verify(b, h).expect("the envelope verifies");
    }
    let raw = raw_rx.got.lock().unwrap().clone();
    assert_eq!(
        &raw[0].1[..],
        br#"{"b":[1,"x"],"id":42}"#,
        "the bare payload"
    );
    standardwebhooks::Webhook::new(&raw_secret.expose())
        .unwrap()
        .verify(&raw[0].1, &raw[0].0)
        .expect("the raw payload verifies");
}

impl Setup {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use hookledger::clock::Clock;
        self.clock.now()
    }
}

#[test]
fn producer_ids_are_accepted_or_refused_as_the_table_says() {
    let upper = Uuid::now_v7().to_string().to_uppercase();
    let cases: Vec<(String, bool)> = vec![
        ("evt_123".into(), true),
        ("order-42.created:v1~x".into(), true),
        ("x".repeat(256), true),
        (upper.clone(), true),
        (String::new(), false),
        ("x".repeat(257), false),
        ("has space".into(), false),
        ("a/b".into(), false),
        ("caf\u{e9}".into(), false),
        ("emoji\u{1f600}".into(), false),
    ];
    for (id, ok) in cases {
        assert_eq!(ProducerId::parse(&id).is_some(), ok, "{id:?}");
    }
    // An upper-case UUID in the default app is that UUID (as before producer ids).
    let key = ProducerId::parse(&upper)
        .unwrap()
        .key(&AppUid::default_app());
    assert_eq!(key.0.to_string(), upper.to_lowercase());
}

#[tokio::test]
async fn an_app_with_active_webhooks_cannot_be_deleted_and_a_deleted_uid_is_not_reused() {
    let s = Setup::new();
    s.create_app("shop").await;
    let (hook, _) = s
        .register("shop", "http://127.0.0.1:9/x", &[], PayloadFormat::Standard)
        .await;
    let delete = || Change::AppDeleted { app: app("shop") };
    assert!(s.change(WebhookId(Uuid::nil()), delete()).await.is_err());
    let gone = Change::Deactivated {
        reason: "test".into(),
    };
    s.change(hook, gone).await.unwrap();
    s.change(WebhookId(Uuid::nil()), delete()).await.unwrap();
    let again = Change::AppCreated {
        app: app("shop"),
        name: "again".into(),
        metadata: "{}".into(),
    };
    assert!(s.change(WebhookId(Uuid::nil()), again).await.is_err());
    let default = Change::AppDeleted {
        app: AppUid::default_app(),
    };
    assert!(s.change(WebhookId(Uuid::nil()), default).await.is_err());
    let _ = DeliveryKey::new(hook, hookledger::ids::EventId::new());
}
