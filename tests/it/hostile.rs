//! Hostile input against the real router, served in process on 127.0.0.1 and called with real
//! HTTP requests: arbitrary JSON, wrong types for every field, huge strings, deep nesting,
//! invalid UTF-8 and random bytes in every body, arbitrary query strings and path segments on
//! every route. Whatever arrives, the answer is never a 5xx or a dropped connection; a refusal
//! is a 4xx with the JSON error shape, naming the field when the problem is one field; and a
//! refused request writes nothing (no delivery record, no registry change, no event).
//!
//! Also: decoding arbitrary column values as ledger records or registry changes fails cleanly.
//!
//! Each property runs [`CASES`] generated requests against one server; proptest closures are
//! synchronous, so requests go through `block_on` on a runtime made outside them.

use std::sync::Arc;
use std::time::Duration;

use hookledger::api::{self, AppState};
use hookledger::clock::SystemClock;
use hookledger::delivery::engine::{Engine, EngineConfig};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::WebhookId;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;
use hookledger::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Generated requests per property.
const CASES: u32 = 128;
pub const TOKEN: &str = "hostile-token-5f0c2a9e71d3";
/// A type no generated event ever has, so publishes never start attempts by accident.
const KNOWN_TYPES: &str = "hostile.never-published";

/// The real router on a loopback port, with its engine for inspecting the ledger.
pub struct App {
    pub rt: tokio::runtime::Runtime,
    pub base: String,
    pub engine: Arc<Engine>,
    pub client: reqwest::Client,
    /// A registered webhook, so that id routes reach past the lookup.
    pub known: WebhookId,
    _dir: tempfile::TempDir,
}

/// What a request may have written.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    records: u64,
    changes: u64,
    events: Option<u64>,
}

/// An answer: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: bool,
    pub body: Value,
    pub text: String,
}

impl App {
    /// Served as `hookledger serve` serves it: a ledger on a temp file, the engine (its
    /// re-drive loop not running: no attempt starts except a publish's inline first one) and
    /// `api::router` with the default payload limit.
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger =
            Ledger::open(&dir.path().join("hostile.duckdb"), Arc::new(SystemClock)).expect("open");
        let egress = Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").expect("allowlist"));
        let sender = Sender::new(SenderConfig {
            attempt_timeout: Duration::from_secs(2),
            egress: egress.clone(),
            ..SenderConfig::default()
        })
        .expect("sender");
        let engine = Engine::new(
            Arc::new(ledger),
            sender,
            Arc::new(SystemClock),
            EngineConfig::default(),
        );
        let known = WebhookId(Uuid::new_v4());
        let state = AppState {
            engine: engine.clone(),
            egress,
            token: Arc::new(TOKEN.to_owned()),
            sql_url: None,
        };
        let base = rt.block_on(async {
            let created = Change::Created {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: vec![KNOWN_TYPES.into()],
                description: None,
                secret: Secret::generate(),
                app: hookledger::ids::AppUid::default_app(),
                payload_format: Default::default(),
            };
            engine
                .ledger()
                .commit(Commit {
                    changes: vec![(known, created)],
                    ..Commit::default()
                })
                .await
                .expect("register");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let router = api::router(state, api::DEFAULT_MAX_PAYLOAD);
            tokio::spawn(async move { axum::serve(listener, router).await });
            format!("http://{addr}")
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Self {
            rt,
            base,
            engine,
            client,
            known,
            _dir: dir,
        }
    }

    pub fn written(&self) -> Written {
        let shared = self.engine.ledger().shared();
        let records = shared.read_projection().last_seq();
        let changes = shared.read_registry().last_seq();
        let reader = self.engine.ledger().reader().expect("reader");
        let events = reader.last_event().expect("last event").map(|(seq, _)| seq);
        Written {
            records,
            changes,
            events,
        }
    }

    /// Sends one request with this `Authorization` value; a transport error (a dropped
    /// connection) is a test failure.
    pub fn send(&self, req: &Req, authorization: Option<&[u8]>) -> Result<Answer, TestCaseError> {
        let url = format!("{}{}", self.base, req.path);
        let mut builder = self.client.request(req.method.clone(), &url);
        if let Some(value) = authorization {
            let value = reqwest::header::HeaderValue::from_bytes(value)
                .map_err(|e| TestCaseError::fail(format!("unsendable header: {e}")))?;
            builder = builder.header("authorization", value);
        }
        if let Some(ct) = &req.content_type {
            builder = builder.header("content-type", ct.as_str());
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        self.rt.block_on(async {
            let resp = builder
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("{req}: no answer: {e:?}")))?;
            let status = resp.status().as_u16();
            let json = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let text = resp
                .text()
                .await
                .map_err(|e| TestCaseError::fail(format!("{req}: body cut off: {e:?}")))?;
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok(Answer {
                status,
                json,
                body,
                text,
            })
        })
    }

    /// Sends `req` with the right token and checks the answer against the invariants.
    fn check(&self, req: &Req) -> Result<(), TestCaseError> {
        let before = self.written();
        let answer = self.send(req, Some(format!("Bearer {TOKEN}").as_bytes()))?;
        let shown = || format!("{req}\n  -> {} {}", answer.status, clip(&answer.text));
        prop_assert!(answer.status < 500, "a 5xx: {}", shown());
        if (200..300).contains(&answer.status) {
            prop_assert!(
                req.expect.is_none(),
                "accepted what should be refused: {}",
                shown()
            );
            // Accepted: let any attempt it started record its outcome before the next case.
            self.rt.block_on(self.engine.drain());
            return Ok(());
        }
        prop_assert!(answer.status >= 400, "not a 4xx: {}", shown());
        check_error_shape(&answer).map_err(|e| TestCaseError::fail(format!("{e}: {}", shown())))?;
        if let Some(expect) = &req.expect {
            let field = answer.body["error"]["field"].as_str();
            prop_assert!(
                expect.matches(answer.status, field),
                "expected {expect:?}: {}",
                shown()
            );
        }
        prop_assert_eq!(
            self.written(),
            before,
            "a refused request wrote: {}",
            shown()
        );
        Ok(())
    }

    /// Runs `CASES` requests from `strategy` through [`App::check`].
    fn run(&self, strategy: impl Strategy<Value = Req>) {
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |req| self.check(&req));
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// Every non-2xx answer is `{"error": {"code", "message", "field"}}` as JSON.
pub fn check_error_shape(answer: &Answer) -> Result<(), String> {
    if !answer.json {
        return Err("the error is not JSON".into());
    }
    let error = &answer.body["error"];
    let code_ok = error["code"].as_str().is_some_and(|c| !c.is_empty());
    let message_ok = error["message"].as_str().is_some_and(|m| !m.is_empty());
    let field_ok = error
        .get("field")
        .is_some_and(|f| f.is_null() || f.is_string());
    match (code_ok, message_ok, field_ok) {
        (true, true, true) => Ok(()),
        _ => Err("the error does not have the {code, message, field} shape".into()),
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// One generated request, and what its refusal must say (if the generator knows).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    pub expect: Option<Refusal>,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self
            .body
            .as_deref()
            .map(|b| clip(&String::from_utf8_lossy(b)))
            .unwrap_or_default();
        write!(f, "{} {} {body}", self.method, clip(&self.path))
    }
}

/// A refusal the generator can predict.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// A 4xx naming this field (or a path inside it, like `event_types[0]`).
    Field(String),
    /// This exact status.
    Status(u16),
}

impl Refusal {
    fn matches(&self, status: u16, field: Option<&str>) -> bool {
        match self {
            Refusal::Status(s) => *s == status,
            Refusal::Field(name) => field.is_some_and(|f| {
                f == name
                    || f.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
            }),
        }
    }
}

/// What a body field must hold.
#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    OptStr,
    Strings,
    OptStrings,
    OptBool,
    Any,
}

/// The routes that take a JSON body: method, path (`{known}` is the registered webhook), and
/// a valid body with each field's type.
/// A body field: its name, its type, a valid value.
type Field = (&'static str, Ty, Value);

fn body_routes(known: WebhookId) -> Vec<(Method, String, Vec<Field>)> {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    vec![
        (
            Method::POST,
            "/v1/webhooks".into(),
            vec![
                ("url", Ty::Str, json!("http://127.0.0.1:9/hook")),
                ("event_types", Ty::Strings, json!([KNOWN_TYPES])),
                ("description", Ty::OptStr, json!("d")),
                ("secret", Ty::OptStr, json!(secret)),
            ],
        ),
        (
            Method::PATCH,
            format!("/v1/webhooks/{known}"),
            vec![
                ("url", Ty::OptStr, json!("http://127.0.0.1:9/hook")),
                ("event_types", Ty::OptStrings, json!([KNOWN_TYPES])),
                ("description", Ty::OptStr, json!("d")),
                ("active", Ty::OptBool, json!(true)),
            ],
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{known}/recover"),
            vec![
                ("since", Ty::Str, json!("2020-01-01T00:00:00Z")),
                ("until", Ty::OptStr, json!("2020-01-02T00:00:00Z")),
            ],
        ),
        (
            Method::POST,
            "/v1/events".into(),
            vec![
                ("event_id", Ty::OptStr, json!(Uuid::new_v4().to_string())),
                ("event_type", Ty::Str, json!("hostile.published")),
                ("payload", Ty::Any, json!({"n": 1})),
            ],
        ),
    ]
}

const FIELD_NAMES: &[&str] = &[
    "url",
    "event_types",
    "description",
    "secret",
    "active",
    "since",
    "until",
    "event_id",
    "event_type",
    "payload",
];

/// Object keys: the real field names, plain words, anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        "[a-z_]{1,12}",
        any::<String>(),
    ]
}

/// Arbitrary JSON: every kind of value, nested a few levels.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(FIELD_NAMES).prop_map(|s| Value::String(s.to_owned())),
        Just(json!("2020-01-01T00:00:00Z")),
        Just(json!("00000000-0000-0000-0000-000000000000")),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Whether `v` is a wrong value for a field of type `ty` (null counts as wrong only where
/// the field is required).
fn wrong_for(ty: Ty, v: &Value) -> bool {
    match ty {
        Ty::Str => !v.is_string(),
        Ty::OptStr => !v.is_string() && !v.is_null(),
        Ty::Strings => !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Ty::OptStrings => {
            !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        Ty::OptBool => !v.is_boolean() && !v.is_null(),
        Ty::Any => false,
    }
}

/// `[[[...]]]` or `{"a":{"a":...}}`, `depth` deep.
fn deep(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}null{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

fn json_req(method: &Method, path: &str, body: Vec<u8>, expect: Option<Refusal>) -> Req {
    Req {
        method: method.clone(),
        path: path.to_owned(),
        content_type: Some("application/json".into()),
        body: Some(body),
        expect,
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise")
}

/// Bodies for the JSON routes, each with what its refusal must name.
fn hostile_bodies(known: WebhookId) -> impl Strategy<Value = Req> {
    let routes = body_routes(known);
    (prop::sample::select(routes), 0usize..10).prop_flat_map(|((method, path, fields), pick)| {
        let base: Map<String, Value> = fields
            .iter()
            .map(|(n, _, v)| (n.to_string(), v.clone()))
            .collect();
        // The field to attack: any but `payload`, which takes every JSON value.
        let typed: Vec<_> = fields
            .iter()
            .filter(|(_, t, _)| !matches!(t, Ty::Any))
            .cloned()
            .collect();
        let (name, ty, _) = typed[pick % typed.len()].clone();
        let name = name.to_owned();
        let required: Vec<&'static str> = fields
            .iter()
            .filter(|(_, t, _)| matches!(t, Ty::Str | Ty::Any))
            .map(|(n, _, _)| *n)
            .collect();
        let (m, p) = (method.clone(), path.clone());
        // One field of the wrong type.
        let (b, n) = (base.clone(), name.clone());
        let wrong_type = arb_json()
            .prop_filter("a wrong type", move |v| wrong_for(ty, v))
            .prop_map(move |v| {
                let mut body = b.clone();
                body.insert(n.clone(), v);
                json_req(
                    &m,
                    &p,
                    to_bytes(&Value::Object(body)),
                    Some(Refusal::Field(n.clone())),
                )
            });
        // An unknown field.
        let (b, m, p) = (base.clone(), method.clone(), path.clone());
        let unknown = "[a-z_]{1,12}"
            .prop_filter("not a field", |k| !FIELD_NAMES.contains(&k.as_str()))
            .prop_map(move |k| {
                let mut body = b.clone();
                body.insert(k.clone(), json!(1));
                json_req(
                    &m,
                    &p,
                    to_bytes(&Value::Object(body)),
                    Some(Refusal::Field(k)),
                )
            });
        // A required field missing.
        let (b, m, p) = (base.clone(), method.clone(), path.clone());
        let missing = prop::sample::select(if required.is_empty() {
            vec![""]
        } else {
            required
        })
        .prop_map(move |r| {
            let mut body = b.clone();
            body.remove(r);
            let expect = (!r.is_empty()).then(|| Refusal::Field(r.to_owned()));
            json_req(&m, &p, to_bytes(&Value::Object(body)), expect)
        });
        // Any string in a string field: refused naming the field, or accepted.
        let (b, n, m, p) = (base.clone(), name.clone(), method.clone(), path.clone());
        let any_string =
            prop_oneof![any::<String>(), "\\PC{0,40}", ".{0,3}\u{0}.{0,3}"].prop_map(move |s| {
                let mut body = b.clone();
                let value = match ty {
                    Ty::Strings | Ty::OptStrings => json!([s]),
                    Ty::OptBool => json!(s.len() % 2 == 0),
                    _ => json!(s),
                };
                body.insert(n.clone(), value);
                json_req(&m, &p, to_bytes(&Value::Object(body)), None)
            });
        // Arbitrary JSON as the whole body.
        let (m, p) = (method.clone(), path.clone());
        let arbitrary = arb_json().prop_map(move |v| json_req(&m, &p, to_bytes(&v), None));
        // Deep nesting, in a field or as the whole body.
        let (b, n, m, p) = (base.clone(), name.clone(), method.clone(), path.clone());
        let depth = prop_oneof![1usize..130, 130usize..20_000];
        let nested =
            (depth, any::<bool>(), any::<bool>()).prop_map(move |(depth, objects, whole)| {
                let nest = deep(depth, objects);
                let body = if whole {
                    nest
                } else {
                    let mut body = b.clone();
                    body.insert(n.clone(), json!("__NEST__"));
                    Value::Object(body)
                        .to_string()
                        .replace("\"__NEST__\"", &nest)
                };
                json_req(&m, &p, body.into_bytes(), None)
            });
        // A huge string in a field: past the limit it is 413.
        let (b, n, m, p) = (base.clone(), name.clone(), method.clone(), path.clone());
        let huge = prop::sample::select(vec![100_000usize, 300_000]).prop_map(move |len| {
            let mut body = b.clone();
            body.insert(n.clone(), json!("h".repeat(len)));
            let expect = (len > api::DEFAULT_MAX_PAYLOAD).then_some(Refusal::Status(413));
            json_req(&m, &p, to_bytes(&Value::Object(body)), expect)
        });
        // Invalid UTF-8 or a lone surrogate inside a string.
        let (b, n, m, p) = (base.clone(), name.clone(), method.clone(), path.clone());
        let bad_utf8 = prop::sample::select(vec![
            &b"\xff"[..],
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\\ud800",
            b"\\udc00x",
            b"\x00",
        ])
        .prop_map(move |bad| {
            let mut body = b.clone();
            body.insert(n.clone(), json!("__BAD__"));
            let text = Value::Object(body).to_string();
            let (head, tail) = text.split_once("__BAD__").expect("marker");
            let bytes = [head.as_bytes(), bad, tail.as_bytes()].concat();
            json_req(&m, &p, bytes, Some(Refusal::Status(400)))
        });
        // A field given twice.
        let (b, n, m, p) = (base.clone(), name.clone(), method.clone(), path.clone());
        let twice = Just(()).prop_map(move |()| {
            let body = Value::Object(b.clone()).to_string();
            let value = b[&n].to_string();
            let body = format!("{{\"{n}\":{value},{}", &body[1..]);
            json_req(&m, &p, body.into_bytes(), Some(Refusal::Field(n.clone())))
        });
        // Random bytes, with or without a JSON content type.
        let (m, p) = (method.clone(), path.clone());
        let random = (
            prop::collection::vec(any::<u8>(), 0..512),
            prop::option::of(prop_oneof![
                Just("application/json".to_owned()),
                Just("text/plain".to_owned()),
                "[ -~]{0,30}",
            ]),
        )
            .prop_map(move |(bytes, ct)| Req {
                method: m.clone(),
                path: p.clone(),
                content_type: ct,
                body: Some(bytes),
                expect: None,
            });
        prop_oneof![
            3 => wrong_type,
            1 => unknown,
            1 => missing,
            2 => any_string,
            2 => arbitrary,
            1 => nested,
            1 => huge,
            1 => bad_utf8,
            1 => twice,
            2 => random,
        ]
    })
}

#[test]
fn hostile_bodies_get_a_4xx_naming_the_problem_and_write_nothing() {
    let app = App::start();
    let known = app.known;
    app.run(hostile_bodies(known));
}

/// Percent-encodes every byte outside the unreserved set.
pub fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether a segment [`encode`]d decodes to a producer's id: 1 to 256 of `[A-Za-z0-9._:~-]`.
fn is_producer_segment(encoded: &str) -> bool {
    let decoded = encoded.replace("%3A", ":");
    !decoded.is_empty()
        && decoded.len() <= 256
        && decoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// What a generated path segment decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    Known,
    Uuid,
    Text,
    NotUtf8,
}

/// Path segments: the known id, an unknown UUID, any string, any bytes (invalid UTF-8
/// included), and a few odd ones.
fn segment(known: WebhookId) -> impl Strategy<Value = (String, Seg)> {
    prop_oneof![
        Just((known.to_string(), Seg::Known)),
        any::<u128>().prop_map(|n| (Uuid::from_u128(n).to_string(), Seg::Uuid)),
        any::<String>().prop_map(|s| (encode(s.as_bytes()), Seg::Text)),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(|b| {
            let seg = match std::str::from_utf8(&b) {
                Ok(_) => Seg::Text,
                Err(_) => Seg::NotUtf8,
            };
            (encode(&b), seg)
        }),
        prop::sample::select(vec![
            ("%2F", Seg::Text),
            ("..", Seg::Text),
            ("%00", Seg::Text),
            ("+", Seg::Text),
            ("%20", Seg::Text),
            ("%FF", Seg::NotUtf8),
            ("%C0%AF", Seg::NotUtf8),
        ])
        .prop_map(|(s, seg)| (s.to_owned(), seg)),
    ]
}

/// Every route with an id in its path, with arbitrary segments in place of the ids.
fn hostile_paths(known: WebhookId) -> impl Strategy<Value = Req> {
    let templates: Vec<(Method, &'static str, &'static [&'static str])> = vec![
        (Method::GET, "/v1/webhooks/{}", &["id"]),
        (Method::PATCH, "/v1/webhooks/{}", &["id"]),
        (Method::DELETE, "/v1/webhooks/{}", &["id"]),
        (Method::POST, "/v1/webhooks/{}/rotate-secret", &["id"]),
        (Method::POST, "/v1/webhooks/{}/recover", &["id"]),
        (
            Method::GET,
            "/v1/deliveries/{}/{}",
            &["webhook_id", "event_id"],
        ),
        (
            Method::POST,
            "/v1/deliveries/{}/{}/redeliver",
            &["webhook_id", "event_id"],
        ),
    ];
    (
        prop::sample::select(templates),
        segment(known),
        segment(known),
    )
        .prop_map(|((method, template, names), first, second)| {
            let path = template
                .replacen("{}", &first.0, 1)
                .replacen("{}", &second.0, 1);
            // A segment that is not a UUID is refused naming its parameter (the first bad
            // one); a segment that decodes to a slash or dots may not reach the route at all.
            let plain = |s: &str| !s.is_empty() && s != ".." && s != ".";
            // Invalid UTF-8 is refused while the path is extracted, before the handler parses
            // ids, so the first such segment is named; otherwise the first one not a UUID.
            let mut segs = [first.clone(), second.clone()];
            // An event id is the producer's: any 1-256 of [A-Za-z0-9._:~-] parses (and names
            // nothing, as an unknown UUID does).
            for (seg, name) in segs.iter_mut().zip(names.iter()) {
                if *name == "event_id" && seg.1 == Seg::Text && is_producer_segment(&seg.0) {
                    seg.1 = Seg::Uuid;
                }
            }
            let segs = &segs[..names.len()];
            let routed = segs.iter().all(|(s, _)| plain(s));
            let named = |kind: Seg| {
                segs.iter()
                    .position(|(_, k)| *k == kind)
                    .map(|i| Refusal::Field(names[i].into()))
            };
            // Ids that parse but name nothing are 404: no webhook, or no delivery (there are
            // none).
            let found = segs.iter().all(|(_, k)| *k == Seg::Known) && names.len() == 1;
            let expect = if !routed {
                None
            } else if let Some(named) = named(Seg::NotUtf8).or_else(|| named(Seg::Text)) {
                Some(named)
            } else if found {
                None
            } else {
                Some(Refusal::Status(404))
            };
            let body = match template {
                "/v1/webhooks/{}" if method == Method::PATCH => Some(b"{}".to_vec()),
                "/v1/webhooks/{}/recover" => Some(br#"{"since":"2020-01-01T00:00:00Z"}"#.to_vec()),
                _ => None,
            };
            Req {
                method,
                path,
                content_type: body.as_ref().map(|_| "application/json".into()),
                body,
                expect,
            }
        })
}

#[test]
fn hostile_path_segments_get_a_4xx_naming_the_parameter() {
    let app = App::start();
    let known = app.known;
    app.run(hostile_paths(known));
}

/// Query keys: the real parameters, other words, anything.
fn query_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "at",
            "seq",
            "after_seq",
            "limit",
            "webhook_id",
            "kind"
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
        any::<String>(),
    ]
}

fn query_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        Just(b"18446744073709551616".to_vec()),
        prop::sample::select(vec![
            "2020-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00+14:00",
            "delivered",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..30),
        (1usize..5000).prop_map(|n| vec![b'9'; n]),
    ]
}

/// Arbitrary query strings on every route (most ignore them; state and ledger parse them).
fn hostile_queries(known: WebhookId) -> impl Strategy<Value = Req> {
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, "/v1/state".into()),
        (Method::GET, "/v1/state".into()),
        (Method::GET, "/v1/ledger".into()),
        (Method::GET, "/v1/ledger".into()),
        (Method::GET, "/v1/ledger".into()),
        (Method::GET, "/v1/verify".into()),
        (Method::GET, "/v1/deliveries".into()),
        (Method::GET, "/v1/deliveries".into()),
        (Method::GET, "/metrics".into()),
        (Method::GET, "/v1/webhooks".into()),
        (Method::GET, format!("/v1/webhooks/{known}")),
        (
            Method::GET,
            format!("/v1/deliveries/{known}/{}", Uuid::nil()),
        ),
    ];
    let raw = prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| encode(&b));
    let pairs = prop::collection::vec((query_key(), query_value()), 0..4).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{}={}", encode(k.as_bytes()), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    let literal = "[ -~]{0,60}".prop_map(|s| s.replace(['#', ' '], "%20"));
    (
        prop::sample::select(routes),
        prop_oneof![1 => raw, 3 => pairs, 1 => literal],
    )
        .prop_map(|((method, path), query)| Req {
            method,
            path: format!("{path}?{query}"),
            content_type: None,
            body: None,
            expect: None,
        })
}

#[test]
fn hostile_query_strings_never_get_a_5xx() {
    let app = App::start();
    let known = app.known;
    app.run(hostile_queries(known));
}

/// A query parameter with a value of the wrong type is refused naming it.
#[test]
fn a_bad_query_parameter_is_named() {
    let app = App::start();
    let cases = (
        prop::sample::select(vec![
            ("/v1/state", "seq"),
            ("/v1/state", "at"),
            ("/v1/ledger", "after_seq"),
            ("/v1/ledger", "limit"),
            ("/v1/ledger", "webhook_id"),
            ("/v1/ledger", "kind"),
            ("/v1/deliveries", "webhook_id"),
            ("/v1/deliveries", "event_id"),
            ("/v1/deliveries", "state"),
            ("/v1/deliveries", "limit"),
            ("/v1/deliveries", "cursor"),
        ]),
        "[a-zA-Z ._:-]{1,20}",
    )
        .prop_map(|((path, key), value)| Req {
            method: Method::GET,
            // An event id is the producer's, so only a character outside its set is wrong.
            path: match key {
                "event_id" => format!("{path}?{key}={}", encode(format!("{value} /").as_bytes())),
                _ => format!("{path}?{key}={}", encode(value.as_bytes())),
            },
            content_type: None,
            body: None,
            expect: Some(Refusal::Field(key.into())),
        });
    app.run(cases);
}

/// Methods a route does not have, and paths no route has.
#[test]
fn unknown_routes_and_methods_get_the_json_error() {
    let app = App::start();
    let known = app.known;
    let cases = (
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::from_bytes(b"BREW").expect("method"),
        ]),
        prop::sample::select(vec![
            "/v1/webhooks".to_owned(),
            format!("/v1/webhooks/{known}"),
            format!("/v1/webhooks/{known}/rotate-secret"),
            "/v1/events".to_owned(),
            "/v1/state".to_owned(),
            "/v1/ledger".to_owned(),
            "/v1/verify".to_owned(),
            "/v1/deliveries".to_owned(),
            "/metrics".to_owned(),
            "/v1/nothing-here".to_owned(),
            "/v1/webhooks/a/b/c/d".to_owned(),
            "/v2/webhooks".to_owned(),
            "/v1".to_owned(),
            "/v1/".to_owned(),
        ]),
    )
        .prop_map(|(method, path)| Req {
            method,
            path,
            content_type: Some("application/json".into()),
            body: Some(b"{}".to_vec()),
            expect: None,
        });
    app.run(cases);
}

mod decoding {
    //! Arbitrary column values decoded as ledger records and registry changes: `Ok` or a typed
    //! error, never a panic.

    use hookledger::ledger::record::{ErrorClass, RecordKind};
    use hookledger::ledger::stored::StoredRecord;
    use hookledger::registry::StoredChange;
    use hookledger::LedgerError;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn text(known: Vec<&'static str>) -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            prop::sample::select(known).prop_map(str::to_owned),
            any::<String>(),
        ])
    }

    /// A row as this build writes it for a record of any of the seven kinds (uniformly), with
    /// at most one column then replaced by an arbitrary value: most rows reach a kind's own
    /// decoding checks (a `failed` needs its attempt, class and due time; a `requeued` its
    /// prior state), where fully random columns would almost never get past the first one.
    fn written_row() -> impl Strategy<Value = StoredRecord> {
        use hookledger::ids::{DeliveryKey, EventId, WebhookId};
        use hookledger::ledger::record::{Failure, Record, RecordBody, Terminal};
        let t = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
        let body = prop_oneof![
            any::<i64>().prop_map(move |us| RecordBody::Enqueued { due_at: t(us) }),
            any::<u16>().prop_map(|attempt| RecordBody::Attempted { attempt }),
            any::<(u16, u16, u32)>().prop_map(|(attempt, status, duration_ms)| {
                RecordBody::Delivered {
                    attempt,
                    status,
                    duration_ms,
                }
            }),
            (
                any::<(u16, Option<u16>, u32, i64)>(),
                prop::sample::select(ErrorClass::ALL.to_vec()),
                any::<String>(),
                any::<Option<String>>()
            )
                .prop_map(
                    move |(
                        (attempt, status, duration_ms, due),
                        error_class,
                        error,
                        response_body,
                    )| {
                        RecordBody::Failed(Failure {
                            attempt,
                            status,
                            error_class,
                            error,
                            duration_ms,
                            next_due_at: t(due),
                            response_body,
                        })
                    }
                ),
            any::<String>().prop_map(|reason| RecordBody::DeadParked { reason }),
            any::<String>().prop_map(|reason| RecordBody::Parked { reason }),
            (
                prop::sample::select(vec![Terminal::Delivered, Terminal::Dead, Terminal::Parked]),
                any::<i64>(),
                any::<String>()
            )
                .prop_map(move |(from, due, reason)| RecordBody::Requeued {
                    from,
                    due_at: t(due),
                    reason
                }),
        ];
        (
            any::<u64>(),
            any::<i64>(),
            any::<(u128, u128)>(),
            body,
            stored_record(),
            0usize..16,
        )
            .prop_map(move |(seq, at, ids, body, noise, column)| {
                let mut row = StoredRecord::from_record(&Record {
                    seq,
                    recorded_at: t(at),
                    key: DeliveryKey::new(
                        WebhookId(Uuid::from_u128(ids.0)),
                        EventId(Uuid::from_u128(ids.1)),
                    ),
                    body,
                });
                match column {
                    0 => row.format_version = noise.format_version,
                    1 => row.kind = noise.kind,
                    2 => row.attempt = noise.attempt,
                    3 => row.status_code = noise.status_code,
                    4 => row.error_class = noise.error_class,
                    5 => row.duration_ms = noise.duration_ms,
                    6 => row.due_at_us = noise.due_at_us,
                    7 => row.prior_state = noise.prior_state,
                    8 => row.reason = noise.reason,
                    _ => {}
                }
                row
            })
    }

    /// Rows for the decoding properties: mostly as written (every kind alike), some random.
    fn any_row() -> impl Strategy<Value = StoredRecord> {
        prop_oneof![3 => written_row(), 1 => stored_record()]
    }

    /// The generator reaches every kind's decoding: each kind decodes often, and `failed` and
    /// `requeued` rows are refused as well as accepted.
    #[test]
    fn the_row_generator_reaches_every_kinds_decoding() {
        use proptest::strategy::ValueTree;
        use std::collections::HashMap;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = any_row();
        let mut decoded: HashMap<RecordKind, usize> = HashMap::new();
        let mut refused: HashMap<String, usize> = HashMap::new();
        for _ in 0..2000 {
            let row = strategy.new_tree(&mut runner).unwrap().current();
            let kind = row.kind.clone();
            match row.into_record() {
                Ok(r) => *decoded.entry(r.kind()).or_default() += 1,
                Err(_) => *refused.entry(kind).or_default() += 1,
            }
        }
        for kind in RecordKind::ALL {
            let n = decoded.get(&kind).copied().unwrap_or(0);
            assert!(n >= 100, "{kind}: decoded {n} times of 2000: {decoded:?}");
        }
        for kind in ["failed", "requeued"] {
            let n = refused.get(kind).copied().unwrap_or(0);
            assert!(n >= 10, "{kind}: refused {n} times of 2000: {refused:?}");
        }
    }

    prop_compose! {
        fn stored_record()(
            seq in any::<u64>(),
            recorded_at_us in any::<i64>(),
            format_version in prop_oneof![Just(1u8), any::<u8>()],
            kind in prop_oneof![
                prop::sample::select(RecordKind::ALL.map(|k| k.as_str()).to_vec())
                    .prop_map(str::to_owned),
                any::<String>(),
            ],
            ids in any::<(u128, u128)>(),
            attempt in any::<Option<u16>>(),
            status_code in any::<Option<u16>>(),
            error_class in text(ErrorClass::ALL.map(|c| c.as_str()).to_vec()),
            error in text(vec![""]),
            duration_ms in any::<Option<u32>>(),
            due_at_us in any::<Option<i64>>(),
            reason in text(vec![""]),
            response_body in text(vec![""]),
            prior_state in text(vec!["delivered", "dead", "parked"]),
        ) -> StoredRecord {
            StoredRecord {
                seq, recorded_at_us, format_version, kind,
                webhook_id: Uuid::from_u128(ids.0), event_id: Uuid::from_u128(ids.1),
                attempt, status_code, error_class, error, duration_ms, due_at_us, reason,
                response_body, prior_state,
            }
        }
    }

    prop_compose! {
        fn stored_change()(
            seq in any::<u64>(),
            recorded_at_us in any::<i64>(),
            format_version in any::<u8>(),
            kind in text(vec!["created", "updated", "deactivated", "secret_rotated", "app_created", "app_updated", "app_deleted", "token_issued", "token_revoked"]),
            id in any::<u128>(),
            url in text(vec!["http://x/"]),
            event_types in text(vec!["", ",", "a,b"]),
            description in text(vec![""]),
            active in any::<Option<bool>>(),
            secret in text(vec![
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!", "whsec_AAAA",
            ]),
            previous_until_us in any::<Option<i64>>(),
            reason in text(vec![""]),
            app in text(vec!["default", "shop", "", "a b"]),
            name in text(vec![""]),
            metadata in text(vec!["{}", "[", "{\"a\":1}"]),
            token_id in any::<Option<u128>>(),
            token_digest in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            payload_format in text(vec!["standard", "raw", "bare"]),
            hash in any::<[u8; 32]>(),
        ) -> StoredChange {
            StoredChange {
                seq, recorded_at_us, format_version, kind: kind.unwrap_or_default(),
                webhook_id: Uuid::from_u128(id), url, event_types, description, active,
                secret, previous_until_us, reason, app, name, metadata,
                token_id: token_id.map(Uuid::from_u128), token_digest, payload_format, hash,
                actor: None,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512, failure_persistence: None, ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_rows_decode_to_a_record_or_a_typed_error(row in any_row()) {
            let seq = row.seq;
            let version = row.format_version;
            // The canonical encoding (the hash chain's input) takes any row.
            row.encode_canonical(&mut Vec::new());
            match row.clone().into_record() {
                Ok(record) => {
                    prop_assert_eq!(version, 1);
                    prop_assert_eq!(record.seq, seq);
                    prop_assert_eq!(record.kind().as_str(), row.kind.as_str());
                }
                Err(LedgerError::UnknownRecordFormat { seq: s, found, .. }) => {
                    prop_assert_eq!((s, found), (seq, version));
                    prop_assert_ne!(version, 1);
                }
                Err(LedgerError::Corrupt { seq: s, reason }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(!reason.is_empty());
                }
                Err(other) => prop_assert!(false, "untyped failure: {other:?}"),
            }
        }

        #[test]
        fn a_decoded_record_survives_a_second_round_trip(row in any_row()) {
            // What decodes is a record this build can write and read back unchanged.
            if let Ok(record) = row.into_record() {
                let again = StoredRecord::from_record(&record).into_record();
                prop_assert_eq!(again.ok(), Some(record));
            }
        }

        #[test]
        fn arbitrary_change_rows_decode_to_a_change_or_a_typed_error(row in stored_change()) {
            let seq = row.seq;
            match row.into_change() {
                Ok(change) => prop_assert_eq!(change.seq, seq),
                Err(LedgerError::InvalidChange { seq: s, reason }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(!reason.is_empty());
                }
                Err(other) => prop_assert!(false, "untyped failure: {other:?}"),
            }
        }
    }
}
