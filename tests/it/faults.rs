//! The receiver fault matrix at engine level: one engine (a real ledger in a temp dir, the real
//! sender admitting 127.0.0.1) with one webhook per misbehaving peer and one healthy webhook.
//! Every faulty delivery must end its first attempt as a `failed` record with the class the
//! fault deserves, the 100 MiB peer must be cut off near the response cap, and the healthy
//! webhook's deliveries must all be `delivered` while the hanging peers still hold their
//! attempts.
//!
//! The attempt deadline is derived from this machine's speed at the time: a dry run first
//! delivers the same events to as many healthy webhooks and measures how long that takes; the
//! deadline is ten times that (at least 3 s), so that "the hanging attempts outlast the healthy
//! deliveries" holds on a loaded machine as on an idle one. Durations are only checked from
//! below (a deadline cannot pass early); that the deadline ends the hanging attempts at all is
//! what the bounded wait for the drain checks.
//!
//! # Which faults share a class, and why
//! [`ErrorClass`] is a small closed set that audit queries group by, so some faults share one:
//! - `status`: every fault where a response head arrived: 5xx, 4xx, 3xx (redirects are never
//!   followed), a non-2xx whose body hangs or drips past the deadline, a 100 MiB error body,
//!   and an error body with a `content-encoding` it does not honour. The receiver did answer;
//!   what the body did after the head is a note in `error` ("response body incomplete: the
//!   attempt deadline passed ...") and the status code tells them apart.
//! - `timeout`: the deadline passed before a complete response head: silence, or a head that
//!   drips in a byte at a time (the deadline is total, not per read).
//! - `reset`, `connect` (refused), `tls`, `protocol` (not HTTP) and `refused_url` (the egress
//!   guard) each have a class of their own.
//!
//! A 2xx is an acknowledgement as soon as its status line arrives, so a 2xx whose body is
//! 100 MiB, hangs, or claims a `content-encoding` it does not have is `delivered`: the sender
//! never decompresses (reqwest is built without decoders) and never judges a 2xx by its body.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::ManualClock;
use hookledger::delivery::backoff::RetrySchedule;
use hookledger::delivery::engine::{Engine, EngineConfig, Publish};
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Sender, SenderConfig};
use hookledger::delivery::signing::Secret;
use hookledger::ids::{DeliveryKey, EventId, WebhookId};
use hookledger::ledger::record::{ErrorClass, Failure, RecordBody};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{event, webhook};
use crate::sender::try_read_request;

/// The shortest attempt deadline: keeps the test quick on an idle machine.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The attempt deadline is this many times the dry run's healthy deliveries.
const DEADLINE_MARGIN: u32 = 10;
/// A hang guard on any wait (beyond the attempt deadline): far above what a wait takes.
const HANG_GUARD: Duration = Duration::from_secs(120);
/// The 100 MiB a hostile receiver offers.
const HUGE: u64 = 100 << 20;

/// What a scripted peer saw, over all its connections.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Complete HTTP requests read.
    requests: AtomicUsize,
    /// Response body bytes the kernel accepted from the peer.
    written: AtomicU64,
    /// The first byte of a connection was a TLS handshake record (0x16).
    tls_hello: AtomicBool,
}

type Stats = Arc<Seen>;

/// A peer on a fresh loopback port running `script` on every connection it accepts.
async fn peer<F, Fut>(script: F) -> (SocketAddr, Stats)
where
    F: Fn(TcpStream, Stats) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Stats::default();
    let stats = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stats.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script.clone()(stream, stats.clone()));
        }
    });
    (addr, seen)
}

/// Reads one request (head plus `content-length` body) and counts it; false if the client
/// closed first or sent something else. A TLS ClientHello is noted as such.
async fn read_request(stream: &mut TcpStream, seen: &Seen) -> bool {
    let mut first = [0u8; 1];
    if matches!(stream.peek(&mut first).await, Ok(1)) && first[0] == 0x16 {
        seen.tls_hello.store(true, Ordering::SeqCst);
    }
    let whole = try_read_request(stream).await.is_some();
    if whole {
        seen.requests.fetch_add(1, Ordering::SeqCst);
    }
    whole
}

/// Waits until the client closes the connection.
async fn until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// A complete response with `head` (status line and headers, without the blank line).
async fn answer(mut s: TcpStream, seen: Stats, head: String, body: &'static [u8]) {
    if read_request(&mut s, &seen).await {
        let head = format!(
            "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body).await;
        until_closed(&mut s).await;
    }
}

async fn hang_before_head(mut s: TcpStream, seen: Stats) {
    if read_request(&mut s, &seen).await {
        until_closed(&mut s).await;
    }
}

/// The head of a response promising 1000 bytes, ten of them, then silence.
async fn hang_mid_body(mut s: TcpStream, seen: Stats, status_line: &'static str) {
    if read_request(&mut s, &seen).await {
        let head = format!("{status_line}\r\ncontent-length: 1000\r\n\r\n0123456789");
        let _ = s.write_all(head.as_bytes()).await;
        until_closed(&mut s).await;
    }
}

/// Drops the connection with `SO_LINGER` 0 right after the request: the kernel sends RST.
#[allow(deprecated)] // a zero linger does not block on drop
async fn reset(mut s: TcpStream, seen: Stats) {
    if read_request(&mut s, &seen).await {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
}

/// What a plain HTTP server does with bytes it cannot parse (a TLS ClientHello, say).
async fn plain_http(mut s: TcpStream, seen: Stats) {
    let mut first = [0u8; 1];
    if let Ok(1) = s.read(&mut first).await {
        if first[0] == 0x16 {
            seen.tls_hello.store(true, Ordering::SeqCst);
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
    }
}

async fn not_http(mut s: TcpStream, seen: Stats) {
    if read_request(&mut s, &seen).await {
        let _ = s.write_all(b"garbage\r\n\r\n").await;
        until_closed(&mut s).await;
    }
}

/// Offers a 100 MiB body in 16 KiB writes at most every millisecond until the client goes
/// away, counting what the kernel accepted.
async fn huge_body(mut s: TcpStream, seen: Stats, status_line: &'static str) {
    if !read_request(&mut s, &seen).await {
        return;
    }
    let head = format!("{status_line}\r\ncontent-length: {HUGE}\r\n\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 16 * 1024];
    let mut written = 0u64;
    while written < HUGE {
        match s.write(&chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                written += n as u64;
                seen.written.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The head of a 500 promising 100 000 bytes, then one byte every 50 ms: always some
/// progress, never the end.
async fn drip_body(mut s: TcpStream, seen: Stats) {
    if !read_request(&mut s, &seen).await {
        return;
    }
    let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100000\r\n\r\n";
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while s.write_all(b"d").await.is_ok() {
        seen.written.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A status line and then header bytes one every 50 ms: the head never completes.
async fn drip_head(mut s: TcpStream, seen: Stats) {
    if !read_request(&mut s, &seen).await {
        return;
    }
    let mut head = b"HTTP/1.1 200 OK\r\n"
        .iter()
        .chain(b"x-drip: ".iter())
        .cycle();
    loop {
        let byte = [*head.next().expect("cycle")];
        if s.write_all(&byte).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The healthy receiver: 200 to every request, keep-alive.
async fn healthy(mut s: TcpStream, seen: Stats) {
    while read_request(&mut s, &seen).await {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if s.write_all(ok).await.is_err() {
            return;
        }
    }
}

/// What the ledger must show for one webhook's first attempt.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `failed` with this class, this status, and an `error` containing this text.
    Failed(ErrorClass, Option<u16>, &'static str),
    /// `delivered` with this status.
    Delivered(u16),
}

struct Fault {
    name: &'static str,
    url: String,
    stats: Stats,
    expect: Expect,
}

struct Matrix {
    faults: Vec<Fault>,
    /// The `Location` target of the 3xx peer: must never be dialled.
    location_target: Stats,
}

async fn matrix() -> Matrix {
    use ErrorClass::*;
    let mut faults = Vec::new();
    let mut add = |name, addr: SocketAddr, stats, expect| {
        faults.push(Fault {
            name,
            url: format!("http://{addr}/hook"),
            stats,
            expect,
        })
    };
    let (a, s) =
        peer(|st, se| answer(st, se, "HTTP/1.1 503 Service Unavailable".into(), b"busy")).await;
    add("5xx", a, s, Expect::Failed(Status, Some(503), "HTTP 503"));
    let (a, s) = peer(|st, se| answer(st, se, "HTTP/1.1 404 Not Found".into(), b"nope")).await;
    add("4xx", a, s, Expect::Failed(Status, Some(404), "HTTP 404"));
    let (target, location_target) = peer(healthy).await;
    let (a, s) = peer(move |st, se| async move {
        let head = format!("HTTP/1.1 302 Found\r\nlocation: http://{target}/hook");
        answer(st, se, head, b"moved").await
    })
    .await;
    add("3xx", a, s, Expect::Failed(Status, Some(302), "HTTP 302"));
    let (a, s) = peer(hang_before_head).await;
    add(
        "hang before head",
        a,
        s,
        Expect::Failed(Timeout, None, "deadline"),
    );
    let (a, s) = peer(|st, se| hang_mid_body(st, se, "HTTP/1.1 500 Internal Server Error")).await;
    add(
        "hang mid-body (500)",
        a,
        s,
        Expect::Failed(Status, Some(500), "incomplete: the attempt deadline passed"),
    );
    let (a, s) = peer(reset).await;
    add("reset", a, s, Expect::Failed(Reset, None, ""));
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let refused = closed.local_addr().expect("addr");
    drop(closed);
    add(
        "refused",
        refused,
        Stats::default(),
        Expect::Failed(Connect, None, "refused"),
    );
    let (a, s) = peer(plain_http).await;
    faults.push(Fault {
        name: "TLS to a plain port",
        url: format!("https://{a}/hook"),
        stats: s,
        expect: Expect::Failed(Tls, None, ""),
    });
    let mut add = |name, addr: SocketAddr, stats, expect| {
        faults.push(Fault {
            name,
            url: format!("http://{addr}/hook"),
            stats,
            expect,
        })
    };
    let (a, s) = peer(not_http).await;
    add(
        "invalid HTTP",
        a,
        s,
        Expect::Failed(Protocol, None, "invalid HTTP"),
    );
    let (a, s) = peer(|st, se| huge_body(st, se, "HTTP/1.1 500 Internal Server Error")).await;
    add(
        "100 MiB error body",
        a,
        s,
        Expect::Failed(Status, Some(500), "HTTP 500"),
    );
    let (a, s) = peer(|st, se| {
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-encoding: gzip";
        answer(st, se, head.into(), b"this is not gzip")
    })
    .await;
    add(
        "bad content-encoding (500)",
        a,
        s,
        Expect::Failed(Status, Some(500), "HTTP 500"),
    );
    let (a, s) = peer(drip_body).await;
    add(
        "slow-drip body (500)",
        a,
        s,
        Expect::Failed(Status, Some(500), "incomplete: the attempt deadline passed"),
    );
    let (a, s) = peer(drip_head).await;
    add(
        "slow-drip head",
        a,
        s,
        Expect::Failed(Timeout, None, "deadline"),
    );
    add(
        "internal address",
        "10.0.0.1:80".parse().expect("addr"),
        Stats::default(),
        Expect::Failed(RefusedUrl, None, ""),
    );
    // Acknowledged: a 2xx is judged by its status line only.
    let (a, s) = peer(|st, se| huge_body(st, se, "HTTP/1.1 200 OK")).await;
    add("100 MiB ok body", a, s, Expect::Delivered(200));
    let (a, s) = peer(|st, se| hang_mid_body(st, se, "HTTP/1.1 200 OK")).await;
    add("hang mid-body (200)", a, s, Expect::Delivered(200));
    let (a, s) = peer(|st, se| {
        answer(
            st,
            se,
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip".into(),
            b"not gzip",
        )
    })
    .await;
    add("bad content-encoding (200)", a, s, Expect::Delivered(200));
    Matrix {
        faults,
        location_target,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

impl Setup {
    /// A ledger on a temp file and a manual clock that never moves, so nothing is re-driven:
    /// every delivery gets exactly its inline first attempt.
    fn new(attempt_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::at_epoch();
        let ledger = Ledger::open(&dir.path().join("faults.duckdb"), Arc::new(clock.clone()))
            .expect("ledger");
        let sender = Sender::new(SenderConfig {
            attempt_timeout,
            egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").expect("allowlist")),
            ..SenderConfig::default()
        })
        .expect("sender");
        let config = EngineConfig {
            schedule: RetrySchedule::parse("1m").expect("schedule"),
            ..EngineConfig::default()
        };
        let engine = Engine::new(Arc::new(ledger), sender, Arc::new(clock), config);
        Self { _dir: dir, engine }
    }

    async fn register(&self, n: u128, url: &str) {
        let change = Change::Created {
            url: url.to_owned(),
            event_types: vec![],
            description: None,
            secret: Secret::generate(),
            app: hookledger::ids::AppUid::default_app(),
            payload_format: Default::default(),
        };
        self.engine
            .ledger()
            .commit(Commit {
                changes: vec![(webhook(n), change)],
                ..Commit::default()
            })
            .await
            .expect("register");
    }

    async fn publish(&self, e: EventId) -> Vec<WebhookId> {
        let published = self
            .engine
            .publish(Publish::new(
                Some(hookledger::ids::ProducerId::of_uuid(e)),
                "fault.matrix".into(),
                serde_json::json!({ "probe": e.to_string() }),
            ))
            .await
            .expect("publish");
        published.deliveries
    }

    /// Waits until the last record of each of `keys` is `delivered`; the highest of their
    /// seqs.
    async fn all_delivered(&self, keys: &[DeliveryKey]) -> u64 {
        let all = async {
            loop {
                let done: Vec<Option<u64>> = keys
                    .iter()
                    .map(|k| match self.last(*k) {
                        Some((seq, RecordBody::Delivered { .. })) => Some(seq),
                        _ => None,
                    })
                    .collect();
                if done.iter().all(Option::is_some) {
                    return done.into_iter().flatten().max().expect("seqs");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, all)
            .await
            .expect("the healthy deliveries all went through")
    }

    /// The body of the last record of `key`, with its seq.
    fn last(&self, key: DeliveryKey) -> Option<(u64, RecordBody)> {
        let history = self.engine.ledger().history(key).expect("history");
        history.last().map(|r| (r.seq, r.body.clone()))
    }
}

const HEALTHY: u128 = 999;
const EVENTS: u128 = 3;

/// The dry run: `webhooks` healthy webhooks, [`EVENTS`] events fanned out to all of them, as the
/// matrix does; how long until every delivery is recorded, times [`DEADLINE_MARGIN`], and at
/// least [`MIN_ATTEMPT_TIMEOUT`].
async fn measured_attempt_timeout(webhooks: usize) -> Duration {
    let s = Setup::new(HANG_GUARD);
    let (addr, _) = peer(healthy).await;
    for w in 0..webhooks {
        s.register(w as u128, &format!("http://{addr}/hook")).await;
    }
    let started = std::time::Instant::now();
    let mut keys = Vec::new();
    for e in 1..=EVENTS {
        for w in s.publish(event(e)).await {
            keys.push(DeliveryKey::new(w, event(e)));
        }
    }
    s.all_delivered(&keys).await;
    (started.elapsed() * DEADLINE_MARGIN).max(MIN_ATTEMPT_TIMEOUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receiver_fault_is_a_classified_failure_and_healthy_deliveries_go_on() {
    let m = matrix().await;
    let timeout = measured_attempt_timeout(m.faults.len() + 1).await;
    eprintln!("fault matrix: attempt deadline {timeout:?}");
    let s = Setup::new(timeout);
    for (i, f) in m.faults.iter().enumerate() {
        s.register(i as u128, &f.url).await;
    }
    let (healthy_addr, healthy_seen) = peer(healthy).await;
    s.register(HEALTHY, &format!("http://{healthy_addr}/hook"))
        .await;

    // Every event fans out to every webhook; the hanging attempts pile up while the healthy
    // ones go through.
    for e in 1..=EVENTS {
        let deliveries = s.publish(event(e)).await;
        assert_eq!(deliveries.len(), m.faults.len() + 1);
    }
    let healthy_keys: Vec<DeliveryKey> = (1..=EVENTS)
        .map(|e| DeliveryKey::new(webhook(HEALTHY), event(e)))
        .collect();
    let healthy_done_at = s.all_delivered(&healthy_keys).await;
    assert_eq!(
        healthy_seen.requests.load(Ordering::SeqCst),
        EVENTS as usize
    );
    tokio::time::timeout(timeout + HANG_GUARD, s.engine.drain())
        .await
        .expect("every attempt ended: the deadline bounds the hanging ones");

    let mut classes = BTreeSet::new();
    for (i, f) in m.faults.iter().enumerate() {
        for e in 1..=EVENTS {
            let key = DeliveryKey::new(webhook(i as u128), event(e));
            let history = s.engine.ledger().history(key).expect("history");
            let kinds: Vec<&str> = history.iter().map(|r| r.kind().as_str()).collect();
            let (seq, body) = s.last(key).expect("records");
            match (f.expect, body) {
                (
                    Expect::Failed(class, status, text),
                    RecordBody::Failed(Failure {
                        attempt: 1,
                        error_class,
                        status: got_status,
                        error,
                        duration_ms,
                        ..
                    }),
                ) => {
                    assert_eq!(kinds, ["enqueued", "attempted", "failed"], "{}", f.name);
                    assert_eq!(
                        (error_class, got_status),
                        (class, status),
                        "{}: {error}",
                        f.name
                    );
                    assert!(error.contains(text), "{}: {error}", f.name);
                    if class == ErrorClass::Timeout || text.contains("deadline") {
                        assert!(
                            u128::from(duration_ms) >= timeout.as_millis(),
                            "{}: ended after {duration_ms} ms, before the deadline",
                            f.name
                        );
                        assert!(
                            seq > healthy_done_at,
                            "{}: the hung attempt ended before the healthy deliveries",
                            f.name
                        );
                    }
                    classes.insert(class);
                }
                (Expect::Delivered(status), RecordBody::Delivered { status: got, .. }) => {
                    assert_eq!(got, status, "{}", f.name);
                    assert_eq!(kinds, ["enqueued", "attempted", "delivered"], "{}", f.name);
                }
                (expect, body) => panic!("{}: expected {expect:?}, got {body:?}", f.name),
            }
        }
    }
    use ErrorClass::*;
    assert_eq!(
        classes,
        BTreeSet::from([Status, Timeout, Connect, Reset, Tls, Protocol, RefusedUrl]),
        "the distinct classes the faults map to"
    );

    let by_name = |name: &str| {
        &m.faults
            .iter()
            .find(|f| f.name == name)
            .expect("fault")
            .stats
    };
    for name in ["100 MiB error body", "100 MiB ok body"] {
        let written = by_name(name).written.load(Ordering::SeqCst);
        assert!(
            written < EVENTS as u64 * (1 << 20),
            "{name}: the peer got {written} bytes out, more than 1 MiB a connection"
        );
    }
    assert!(
        by_name("TLS to a plain port")
            .tls_hello
            .load(Ordering::SeqCst),
        "the TLS peer saw a ClientHello"
    );
    assert_eq!(
        m.location_target.connections.load(Ordering::SeqCst),
        0,
        "the 3xx's Location was dialled"
    );
    let dripped = by_name("slow-drip body (500)")
        .written
        .load(Ordering::SeqCst);
    assert!(dripped > 0, "the drip peer made progress");
}

/// The response body a failed attempt keeps is the raw bytes (never decompressed), cut at the
/// cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_keep_the_raw_error_body_cut_at_the_cap() {
    let s = Setup::new(MIN_ATTEMPT_TIMEOUT);
    let (gzip, _) = peer(|st, se| {
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-encoding: gzip";
        answer(st, se, head.into(), b"this is not gzip")
    })
    .await;
    let (huge, huge_seen) =
        peer(|st, se| huge_body(st, se, "HTTP/1.1 500 Internal Server Error")).await;
    s.register(1, &format!("http://{gzip}/hook")).await;
    s.register(2, &format!("http://{huge}/hook")).await;
    s.publish(event(1)).await;
    tokio::time::timeout(HANG_GUARD, s.engine.drain())
        .await
        .expect("bounded");
    let body_of = |w| match s.last(DeliveryKey::new(webhook(w), event(1))) {
        Some((_, RecordBody::Failed(f))) => f.response_body.expect("body kept"),
        other => panic!("{other:?}"),
    };
    assert_eq!(body_of(1), "this is not gzip");
    let cut = body_of(2);
    assert_eq!(cut.len(), 1024);
    assert!(cut.bytes().all(|b| b == b'x'));
    assert!(huge_seen.written.load(Ordering::SeqCst) < 1 << 20);
}
