//! `operational` through the real router, served in process on 127.0.0.1: the operator sets
//! it (create and PATCH) and the webhook view shows it; an app's token is refused 403 naming
//! the field and nothing is written; a webhook of another app cannot be operational (422); a
//! published event does not reach an operational webhook whose filter matches it.

use std::sync::Arc;

use hookledger::clock::SystemClock;
use hookledger::delivery::engine::{Engine, EngineConfig};
use hookledger::delivery::sender::SenderConfig;
use hookledger::ledger::Ledger;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{loopback_sender, serve_api};

const OPERATOR: &str = "operator-token-ops-9d2e";

struct Api {
    base: String,
    client: reqwest::Client,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("o.duckdb"), Arc::new(SystemClock)).unwrap();
        let (sender, egress) = loopback_sender(SenderConfig::default());
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

    fn changes(&self) -> u64 {
        self.engine.ledger().shared().read_registry().last_seq()
    }
}

fn refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert_eq!(answer.1["error"]["field"], "operational", "{}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_sets_operational_and_published_events_skip_it() {
    let api = Api::start().await;
    let url = "http://127.0.0.1:9/hook";
    let (status, created) = api
        .call(
            Method::POST,
            "/v1/webhooks",
            OPERATOR,
            json!({"url": url, "operational": true}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["operational"], true);
    let op = created["id"].as_str().unwrap().to_owned();
    let (_, plain) = api
        .call(Method::POST, "/v1/webhooks", OPERATOR, json!({"url": url}))
        .await;
    assert_eq!(plain["operational"], false);
    let (_, listed) = api
        .call(Method::GET, "/v1/webhooks", OPERATOR, Value::Null)
        .await;
    let flags: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["operational"])
        .collect();
    assert_eq!(flags.len(), 2);
    assert!(flags.contains(&&json!(true)) && flags.contains(&&json!(false)));

    // A published event matching every filter: the operational webhook gets no delivery.
    let (status, published) = api
        .call(
            Method::POST,
            "/v1/events",
            OPERATOR,
            json!({"event_type": "webhook.created", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let to: Vec<&str> = published["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(to, [plain["id"].as_str().unwrap()], "{published}");

    // An app's token: 403 naming the field, nothing written.
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/apps",
            OPERATOR,
            json!({"uid": "a", "name": "A"}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, issued) = api
        .call(Method::POST, "/v1/apps/a/tokens", OPERATOR, Value::Null)
        .await;
    let token = issued["token_value"].as_str().unwrap().to_owned();
    let (s, own) = api
        .call(Method::POST, "/v1/webhooks", &token, json!({"url": url}))
        .await;
    assert_eq!(s, 201, "{own}");
    let own = own["id"].as_str().unwrap().to_owned();
    let before = api.changes();
    let body = json!({"url": url, "operational": true});
    refused(
        &api.call(Method::POST, "/v1/webhooks", &token, body.clone())
            .await,
        403,
        "forbidden",
    );
    refused(
        &api.call(Method::POST, "/v1/apps/a/webhooks", &token, body)
            .await,
        403,
        "forbidden",
    );
    refused(
        &api.call(
            Method::PATCH,
            &format!("/v1/webhooks/{own}"),
            &token,
            json!({"operational": true}),
        )
        .await,
        403,
        "forbidden",
    );
    // The operator, on another app's webhook: 422.
    refused(
        &api.call(
            Method::POST,
            "/v1/apps/a/webhooks",
            OPERATOR,
            json!({"url": url, "operational": true}),
        )
        .await,
        422,
        "invalid",
    );
    refused(
        &api.call(
            Method::PATCH,
            &format!("/v1/webhooks/{own}"),
            OPERATOR,
            json!({"operational": true}),
        )
        .await,
        422,
        "invalid",
    );
    assert_eq!(
        api.changes(),
        before,
        "nothing written for a refused request"
    );
    // `false` is what every app's webhook is: a scoped token may say so (a client that sends
    // every field is not refused).
    for path in ["/v1/webhooks", "/v1/apps/a/webhooks"] {
        let (s, made) = api
            .call(
                Method::POST,
                path,
                &token,
                json!({"url": url, "operational": false}),
            )
            .await;
        assert_eq!(s, 201, "{path}: {made}");
        assert_eq!(made["operational"], false, "{path}");
    }
    let (s, patched) = api
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{own}"),
            &token,
            json!({"operational": false}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");

    // The operator turns it off by PATCH: it is ordinary again.
    let (s, patched) = api
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{op}"),
            OPERATOR,
            json!({"operational": false}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["operational"], false);
}
