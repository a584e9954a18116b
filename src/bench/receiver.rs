//! The bench's receiver and the plain POST loop it is measured against.
//!
//! The receiver is an in-process axum server on 127.0.0.1:0. `POST /hook/{w}` (webhook number
//! `w`) reads the body and answers 200, after a chosen latency, or 500 for a chosen share of
//! first attempts. It notes on its [`Tape`] when each delivery's first attempt arrived: the
//! bench publishes event number `i` with the id `Uuid::from_u64_pair(tag, i)`, and the signed
//! `webhook-id` header carries the event id, so the receiver finds the delivery's slot without a
//! lock or a map. The time is taken when the handler runs: the request head and its small body
//! have arrived (they travel in one packet).
//!
//! [`baseline`] is the machine's limit: the same POST, same body, same concurrency, from one
//! pooled reqwest client, with nothing recorded anywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::error::{LedgerError, Result};
use crate::ids::EventId;

/// The body the bench publishes and the baseline posts.
pub const BODY: &str = r#"{"order":{"id":12345,"total":"99.90","currency":"EUR"}}"#;

/// What the receiver saw, per delivery slot (`event index × webhooks + webhook number`).
pub struct Tape {
    /// The time origin of every instant below.
    pub origin: Instant,
    tag: u64,
    webhooks: usize,
    /// Nanoseconds after `origin` (plus one; 0 = not yet) when each event's publish started.
    published: Vec<AtomicU64>,
    /// The same for each delivery's first attempt at the receiver.
    arrived: Vec<AtomicU64>,
    pub attempts: AtomicU64,
    pub refused: AtomicU64,
    /// Share of first attempts answered 500.
    fail_first: f64,
    latency: Duration,
}

impl Tape {
    pub fn new(events: usize, webhooks: usize, fail_first: f64, latency: Duration) -> Self {
        let slots = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            origin: Instant::now(),
            tag: fastrand::u64(..),
            webhooks,
            published: slots(events),
            arrived: slots(events * webhooks),
            attempts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            fail_first,
            latency,
        }
    }

    /// The id of event number `i`.
    pub fn event_id(&self, i: usize) -> EventId {
        EventId(uuid::Uuid::from_u64_pair(self.tag, i as u64))
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    pub fn mark_published(&self, i: usize) {
        self.published[i].store(self.now(), Ordering::Relaxed);
    }

    /// Notes an attempt; answers whether to fail it.
    fn arrive(&self, webhook: usize, msg_id: Option<&str>) -> bool {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let Some(id) = msg_id.and_then(|s| uuid::Uuid::parse_str(s).ok()) else {
            return false;
        };
        let (tag, i) = id.as_u64_pair();
        let slot = i as usize * self.webhooks + webhook;
        if tag != self.tag || webhook >= self.webhooks || slot >= self.arrived.len() {
            return false;
        }
        let first = self.arrived[slot]
            .compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        let fail = first && self.fail_first > 0.0 && fastrand::f64() < self.fail_first;
        if fail {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    /// Publish → first attempt at the receiver, in nanoseconds, sorted, over the first `events`
    /// events (every slot must have arrived).
    pub fn latencies(&self, events: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(events * self.webhooks);
        for (slot, arrived) in self.arrived[..events * self.webhooks].iter().enumerate() {
            let published = self.published[slot / self.webhooks].load(Ordering::Relaxed);
            let arrived = arrived.load(Ordering::Relaxed);
            if published > 0 && arrived > 0 {
                out.push(arrived.saturating_sub(published));
            }
        }
        out.sort_unstable();
        out
    }
}

/// Starts a receiver; answers its base URL (`http://127.0.0.1:port`).
pub async fn start(tape: Arc<Tape>) -> Result<String> {
    let app = Router::new()
        .route("/hook/{w}", post(hook))
        .with_state(tape);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LedgerError::Invalid(format!("cannot bind the receiver: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

async fn hook(
    State(tape): State<Arc<Tape>>,
    Path(webhook): Path<usize>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let msg_id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    let fail = tape.arrive(webhook, msg_id);
    std::hint::black_box(body);
    if !tape.latency.is_zero() {
        tokio::time::sleep(tape.latency).await;
    }
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// `total` POSTs of [`BODY`] to `url` from `concurrency` workers sharing one pooled client.
pub async fn baseline(url: &str, concurrency: usize, total: usize) -> Result<Duration> {
    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .build()
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, url) = (client.clone(), url.to_owned());
            let share = total / concurrency + usize::from(w < total % concurrency);
            tokio::spawn(async move {
                let mut ok = 0usize;
                for _ in 0..share {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(BODY)
                        .send()
                        .await;
                    ok += usize::from(sent.is_ok_and(|r| r.status().is_success()));
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for w in workers {
        ok += w.await.map_err(|e| LedgerError::Invalid(e.to_string()))?;
    }
    if ok != total {
        return Err(LedgerError::Invalid(format!(
            "baseline: {ok} of {total} POSTs answered 2xx"
        )));
    }
    Ok(started.elapsed())
}
