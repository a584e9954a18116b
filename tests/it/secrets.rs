//! Auth and secrets: every `/v1` route refuses a missing or wrong token (a table of routes by
//! a table of near-misses), and a whole scenario through the real binary with `RUST_LOG=trace`
//! never shows the API token or a webhook secret in its output, in listings, in delivery
//! trails or in error answers.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hookledger::delivery::signing::Secret;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::hostile::{check_error_shape, App, Req, TOKEN};

/// Every `/v1` route, with a body it would accept: a route that skipped the token check would
/// answer 2xx and write.
fn every_route(app: &App) -> Vec<(Method, String, Option<Value>)> {
    let known = app.known;
    let nil = Uuid::nil();
    vec![
        (
            Method::POST,
            "/v1/webhooks".into(),
            Some(json!({ "url": "http://127.0.0.1:9/hook" })),
        ),
        (Method::GET, "/v1/webhooks".into(), None),
        (Method::GET, format!("/v1/webhooks/{known}"), None),
        (
            Method::PATCH,
            format!("/v1/webhooks/{known}"),
            Some(json!({ "description": "changed" })),
        ),
        (Method::DELETE, format!("/v1/webhooks/{known}"), None),
        (
            Method::POST,
            format!("/v1/webhooks/{known}/rotate-secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{known}/recover"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some(json!({ "event_type": "auth.probe", "payload": {} })),
        ),
        (Method::GET, format!("/v1/deliveries/{known}/{nil}"), None),
        (
            Method::POST,
            format!("/v1/deliveries/{known}/{nil}/redeliver"),
            None,
        ),
        (Method::GET, "/v1/state".into(), None),
        (Method::GET, "/v1/ledger".into(), None),
        (Method::GET, "/v1/verify".into(), None),
        (Method::GET, "/v1/deliveries".into(), None),
        (Method::POST, format!("/v1/webhooks/{known}/test"), None),
        (
            Method::POST,
            "/v1/whatif".into(),
            Some(json!({ "schedule": "5s,1m" })),
        ),
    ]
}

fn request(method: &Method, path: &str, body: &Option<Value>) -> Req {
    Req {
        method: method.clone(),
        path: path.to_owned(),
        content_type: body.as_ref().map(|_| "application/json".into()),
        body: body.as_ref().map(|b| b.to_string().into_bytes()),
        expect: None,
    }
}

/// `Authorization` values that must be refused.
fn near_misses() -> Vec<(&'static str, Option<Vec<u8>>)> {
    let token = TOKEN.as_bytes();
    let mut last_byte = token.to_vec();
    *last_byte.last_mut().expect("token") ^= 0x01;
    let bearer = |t: &[u8]| [b"Bearer ".as_slice(), t].concat();
    vec![
        ("missing", None),
        ("wrong", Some(bearer(b"wrong"))),
        ("last byte differs", Some(bearer(&last_byte))),
        ("prefix", Some(bearer(&token[..token.len() - 1]))),
        ("first byte only", Some(bearer(&token[..1]))),
        ("one byte longer", Some(bearer(&[token, b"x"].concat()))),
        (
            "upper-cased token",
            Some(bearer(TOKEN.to_uppercase().as_bytes())),
        ),
        ("empty", Some(b"Bearer ".to_vec())),
        ("scheme alone", Some(b"Bearer".to_vec())),
        ("no scheme", Some(token.to_vec())),
        ("no space", Some([b"Bearer".as_slice(), token].concat())),
        ("tab", Some([b"Bearer\t".as_slice(), token].concat())),
        ("basic", Some([b"Basic ".as_slice(), token].concat())),
        ("not UTF-8", Some(bearer(&[token, b"\x80"].concat()))),
        ("two tokens", Some(bearer(&[token, b" ", token].concat()))),
    ]
}

#[test]
fn every_v1_route_refuses_a_missing_or_wrong_token() {
    let app = App::start();
    for (method, path, body) in every_route(&app) {
        let req = request(&method, &path, &body);
        for (name, authorization) in near_misses() {
            let before = app.written();
            let answer = app
                .send(&req, authorization.as_deref())
                .unwrap_or_else(|e| panic!("{method} {path} ({name}): {e}"));
            let at = format!(
                "{method} {path} with {name}: {} {}",
                answer.status, answer.text
            );
            assert_eq!(answer.status, 401, "{at}");
            check_error_shape(&answer).unwrap_or_else(|e| panic!("{e}: {at}"));
            assert_eq!(answer.body["error"]["code"], "unauthorized", "{at}");
            assert!(!answer.text.contains(TOKEN), "{at}");
            assert_eq!(app.written(), before, "a refused request wrote: {at}");
        }
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_may_be_followed_by_several_spaces() {
    let app = App::start();
    let req = request(&Method::GET, "/v1/webhooks", &None);
    for scheme in ["Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer   "] {
        let value = format!("{scheme}{TOKEN}");
        let answer = app.send(&req, Some(value.as_bytes())).expect("answer");
        assert_eq!(answer.status, 200, "{value:?}: {}", answer.text);
    }
}

/// `hookledger serve` as a child process with every line of its stdout and stderr captured.
struct Server {
    child: Child,
    base: String,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// Appends every line of `stream` to `output`, passing stdout lines to `lines` as well.
fn capture(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut out = output.lock().expect("output");
            out.push_str(&line);
            out.push('\n');
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    })
}

impl Server {
    /// Starts serve on `db` with `RUST_LOG=trace`; `token` is `HOOKLEDGER_API_TOKEN` (unset
    /// when `None`).
    fn start(db: &Path, token: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookledger"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "trace")
            .env("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1")
            .env("HOOKLEDGER_RETRY_SCHEDULE", "100ms,100ms,100ms")
            .env("HOOKLEDGER_ATTEMPT_TIMEOUT", "10s")
            .env_remove("HOOKLEDGER_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            command.env("HOOKLEDGER_API_TOKEN", t);
        }
        let mut child = command.spawn().expect("spawn serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            capture(
                child.stdout.take().expect("stdout"),
                output.clone(),
                Some(tx),
            ),
            capture(child.stderr.take().expect("stderr"), output.clone(), None),
        ];
        let base = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("serve printed where it listens");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        Self {
            child,
            base,
            output,
            readers,
        }
    }

    /// SIGTERM, the exit status, and everything the process printed.
    fn stop(mut self) -> (ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        for r in std::mem::take(&mut self.readers) {
            r.join().expect("reader");
        }
        let output = self.output.lock().expect("output").clone();
        (status, output)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that keeps every answer's body, to search them afterwards.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    answers: Vec<String>,
}

impl Client {
    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.token.clone();
        self.call_as(&token, method, path, body).await
    }

    async fn call_as(
        &mut self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        self.answers.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A receiver that answers 500 to its first request and 200 after.
async fn flaky_receiver() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let count = count.clone();
            async move {
                match count.fetch_add(1, Ordering::SeqCst) {
                    0 => (StatusCode::INTERNAL_SERVER_ERROR, "try again"),
                    _ => (StatusCode::OK, "ok"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// The secret and its base64 key part, both of which must never show.
fn forms(secret: &str) -> [String; 2] {
    let key = secret.strip_prefix("whsec_").expect("whsec_ form");
    [secret.to_owned(), key.to_owned()]
}

const API_TOKEN: &str = "hl-secret-api-token-7d1e93b2c4a8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_listings_trails_or_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("secrets.duckdb"), Some(API_TOKEN));
    let (hook_url, hits) = flaky_receiver().await;
    let mut c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        token: API_TOKEN.into(),
        answers: Vec::new(),
    };
    let chosen = Secret::generate().expose();
    let mut secrets = vec![chosen.clone()];

    // Create with a chosen secret and with a generated one; the creator is told the secret
    // once, in the create answer, which is the only answer allowed to hold it.
    let (status, created) = c
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": hook_url, "secret": chosen, "description": "shop" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    c.answers.pop();
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, other) = c
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": "http://127.0.0.1:9/other", "event_types": ["none"] })),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    c.answers.pop();
    secrets.push(other["secret"].as_str().expect("generated").to_owned());
    let (status, rotated) = c
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    c.answers.pop();
    secrets.push(rotated["secret"].as_str().expect("rotated").to_owned());

    // A delivery that fails once (signed with both keys of the rotation) and then succeeds.
    let event_id = Uuid::new_v4();
    let (status, published) = c
        .call(
            Method::POST,
            "/v1/events",
            Some(json!({ "event_id": event_id, "event_type": "order.paid", "payload": {"n": 1} })),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let trail = format!("/v1/deliveries/{id}/{event_id}");
    let mut state = Value::Null;
    for _ in 0..400 {
        state = c.call(Method::GET, &trail, None).await.1;
        if state["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "delivered", "{state}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "failed once, then delivered"
    );

    // Reads, a change, and refusals of every sort.
    for path in [
        "/v1/webhooks".to_owned(),
        format!("/v1/webhooks/{id}"),
        "/v1/ledger?limit=1000".to_owned(),
        "/v1/state".to_owned(),
        "/v1/verify".to_owned(),
        "/v1/deliveries".to_owned(),
        "/metrics".to_owned(),
    ] {
        assert_eq!(c.call(Method::GET, &path, None).await.0, 200, "{path}");
    }
    let patch = json!({ "description": "renamed" });
    let (status, _) = c
        .call(Method::PATCH, &format!("/v1/webhooks/{id}"), Some(patch))
        .await;
    assert_eq!(status, 200);
    let mut broken = chosen.clone();
    broken.insert(10, '!');
    let refusals = [
        json!({ "url": hook_url, "secret": broken }),
        json!({ "url": hook_url, "secret": chosen.trim_start_matches("whsec_") }),
        json!({ "url": hook_url, "secret": format!("{chosen}A") }),
        json!({ "url": hook_url, "secret": 7 }),
        json!({ "url": "ftp://nope", "secret": chosen }),
        // A secret in the wrong field: serde quotes the value it refuses.
        json!({ "url": hook_url, "event_types": chosen }),
        json!({ "url": chosen }),
    ];
    for body in refusals {
        let (status, answer) = c.call(Method::POST, "/v1/webhooks", Some(body)).await;
        assert!((400..500).contains(&status), "{answer}");
    }
    let wrong_token = format!("{API_TOKEN}x");
    let (status, _) = c
        .call_as(
            &wrong_token,
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": hook_url, "secret": chosen })),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = c.call_as("", Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 401);

    let answers = std::mem::take(&mut c.answers);
    let (exit, output) = server.stop();
    assert!(exit.success(), "{exit:?}");
    assert!(
        output.contains("TRACE"),
        "RUST_LOG=trace produced no trace lines; the check below would be vacuous:\n{output}"
    );
    let hidden: Vec<String> = secrets
        .iter()
        .flat_map(|s| forms(s))
        .chain([API_TOKEN.to_owned()])
        .collect();
    for h in &hidden {
        assert!(!output.contains(h.as_str()), "{h} is in the output");
        for answer in &answers {
            assert!(
                !answer.contains(h.as_str()),
                "{h} is in an answer: {answer}"
            );
        }
    }
}

#[test]
fn a_generated_token_is_printed_on_the_first_start_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("token.duckdb");
    let first = Server::start(&db, None);
    let (exit, output) = first.stop();
    assert!(exit.success(), "{exit:?}:\n{output}");
    let token = output
        .lines()
        .find_map(|l| l.split_once("API token (shown once").map(|(_, rest)| rest))
        .and_then(|rest| rest.rsplit(' ').next())
        .expect("the first start prints the token")
        .to_owned();
    assert!(token.starts_with("hl_"), "{token}");
    assert_eq!(output.matches(&token).count(), 1, "printed once:\n{output}");

    let second = Server::start(&db, None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/webhooks", second.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answer")
            .status()
    });
    assert_eq!(status, 200, "the stored token still opens the API");
    let (exit, output) = second.stop();
    assert!(exit.success());
    assert!(
        !output.contains(&token),
        "the token was printed again:\n{output}"
    );
}
