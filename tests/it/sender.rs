//! The sender against real receivers on 127.0.0.1: axum servers for well-behaved HTTP, raw TCP
//! tasks for broken peers. Every wait has a hang guard far above what it takes, and no test
//! bounds a duration from above: a deadline is checked from below (it cannot pass early), that
//! reading stops at the cap by what the peer managed to write and by the attempt ending without
//! a deadline note while the deadline is far away.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use hookledger::delivery::guard::EgressPolicy;
use hookledger::delivery::sender::{Attempt, Outcome, Sender, SenderConfig};
use hookledger::delivery::signing::{Secret, USER_AGENT};
use hookledger::ledger::record::ErrorClass;
use standardwebhooks::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const BODY: &[u8] = br#"{"type":"invoice.paid","id":42}"#;
const MSG_ID: &str = "msg_2f8c1b7e-sender";
/// A hang guard on any single wait in these tests: far above what a wait takes.
const BOUND: Duration = Duration::from_secs(120);
/// An attempt deadline no test comes near: an outcome that is not a timeout then shows that
/// the sender stopped on its own.
const FAR_DEADLINE: Duration = Duration::from_secs(600);

/// One request as a receiver saw it.
#[derive(Clone, Debug)]
struct Hit {
    remote: SocketAddr,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Hits = Arc<Mutex<Vec<Hit>>>;

fn loopback_sender(attempt_timeout: Duration) -> Sender {
    Sender::new(SenderConfig {
        attempt_timeout,
        egress: Arc::new(EgressPolicy::parse_allowlist("127.0.0.1").expect("allowlist")),
        ..SenderConfig::default()
    })
    .expect("sender")
}

fn sender() -> Sender {
    loopback_sender(Duration::from_secs(5))
}

async fn send(sender: &Sender, url: &str, secrets: &[&Secret]) -> Outcome {
    let now = Utc::now();
    let attempt = Attempt {
        url,
        msg_id: MSG_ID,
        body: BODY,
        secrets,
        timestamp: now.timestamp(),
    };
    tokio::time::timeout(BOUND, sender.send(&attempt, now))
        .await
        .expect("send returns within the bound")
}

/// Serves `respond` on a fresh loopback port; every request is recorded in the returned hits.
async fn receiver<F, R>(respond: F) -> (SocketAddr, Hits)
where
    F: Fn(&Hit) -> R + Clone + Send + Sync + 'static,
    R: IntoResponse,
{
    let hits: Hits = Arc::default();
    let handler = move |State(hits): State<Hits>,
                        ConnectInfo(remote): ConnectInfo<SocketAddr>,
                        headers: HeaderMap,
                        body: axum::body::Bytes| {
        let respond = respond.clone();
        async move {
            let hit = Hit {
                remote,
                headers,
                body: body.to_vec(),
            };
            let response = respond(&hit).into_response();
            hits.lock().expect("hits").push(hit);
            response
        }
    };
    let app = Router::new()
        .route("/hook", post(handler))
        .with_state(hits.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.expect("serve");
    });
    (addr, hits)
}

fn hit_count(hits: &Hits) -> usize {
    hits.lock().expect("hits").len()
}

/// A raw TCP peer: accepts one connection and runs `script` on it.
async fn raw_peer<F, Fut, T>(script: F) -> (SocketAddr, JoinHandle<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        script(stream).await
    });
    (addr, task)
}

/// Reads one request (head plus `content-length` body); `None` if the client closed first.
pub(crate) async fn try_read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().expect("content-length"));
            if buf.len() >= end + 4 + length {
                return Some(buf);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    try_read_request(stream)
        .await
        .expect("client closed before sending a whole request")
}

/// Drops `stream` with `SO_LINGER` 0, so the kernel sends RST instead of FIN.
#[allow(deprecated)] // tokio deprecates set_linger because a non-zero linger blocks on drop; zero does not.
fn reset(stream: TcpStream) {
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(stream);
}

/// Waits until the client closes the connection (EOF or error).
async fn until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn join<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(BOUND, task)
        .await
        .expect("peer finishes within the bound")
        .expect("peer task")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/hook")
}

/// Unpacks a failure: (status, class, error, retry_after, response_body).
fn failed(
    outcome: Outcome,
) -> (
    Option<u16>,
    ErrorClass,
    String,
    Option<Duration>,
    Option<String>,
) {
    match outcome {
        Outcome::Failed {
            status,
            class,
            error,
            retry_after,
            response_body,
            ..
        } => (status, class, error, retry_after, response_body),
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn class_of(outcome: Outcome) -> (ErrorClass, String) {
    let (status, class, error, _, body) = failed(outcome);
    assert_eq!(status, None, "no response head: {error}");
    assert_eq!(body, None);
    (class, error)
}

fn verify(secret: &Secret, hit: &Hit) -> Result<(), String> {
    Webhook::new(&secret.expose())
        .map_err(|e| e.to_string())?
        .verify(&hit.body, &hit.headers)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn ok_is_delivered_with_signed_standard_headers() {
    let secret = Secret::generate();
    let checker = secret.clone();
    let (addr, hits) = receiver(move |hit: &Hit| match verify(&checker, hit) {
        Ok(()) => (StatusCode::OK, "thanks".to_owned()),
        Err(e) => (StatusCode::UNAUTHORIZED, e),
    })
    .await;
    let before = Utc::now().timestamp();
    let outcome = send(&sender(), &url(addr), &[&secret]).await;
    assert!(
        matches!(outcome, Outcome::Delivered { status: 200, .. }),
        "{outcome:?}"
    );
    let hits = hits.lock().expect("hits");
    let [hit] = hits.as_slice() else {
        panic!("one request expected, got {}", hits.len())
    };
    let header = |name: &str| {
        hit.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .to_str()
            .expect("ascii header")
            .to_owned()
    };
    assert_eq!(hit.body, BODY);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("user-agent"), USER_AGENT);
    assert_eq!(header("webhook-id"), MSG_ID);
    let ts: i64 = header("webhook-timestamp").parse().expect("unix seconds");
    assert!((before..=Utc::now().timestamp()).contains(&ts), "{ts}");
    let signature = header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 1, "{signature}");
    assert!(signature.starts_with("v1,"), "{signature}");
    let stranger = Secret::generate();
    assert!(verify(&stranger, hit).is_err());
}

#[tokio::test]
async fn rotation_sends_one_signature_per_secret() {
    let (new, old) = (Secret::generate(), Secret::generate());
    let (addr, hits) = receiver(|_: &Hit| StatusCode::NO_CONTENT).await;
    let outcome = send(&sender(), &url(addr), &[&new, &old]).await;
    assert!(
        matches!(outcome, Outcome::Delivered { status: 204, .. }),
        "{outcome:?}"
    );
    let hit = hits.lock().expect("hits")[0].clone();
    let signature = hit.headers["webhook-signature"].to_str().expect("ascii");
    let parts: Vec<&str> = signature.split(' ').collect();
    assert_eq!(parts.len(), 2, "{signature}");
    assert!(parts.iter().all(|p| p.starts_with("v1,")), "{signature}");
    verify(&new, &hit).expect("new secret alone verifies");
    verify(&old, &hit).expect("old secret alone verifies");
    assert!(verify(&Secret::generate(), &hit).is_err());
}

#[tokio::test]
async fn unavailable_keeps_status_retry_after_and_body() {
    let (addr, _) = receiver(|_: &Hit| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "120")],
            "down for maintenance",
        )
    })
    .await;
    let (status, class, error, retry_after, body) =
        failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(status, Some(503));
    assert_eq!(class, ErrorClass::Status);
    assert_eq!(error, "HTTP 503 Service Unavailable");
    assert_eq!(retry_after, Some(Duration::from_secs(120)));
    assert_eq!(body.as_deref(), Some("down for maintenance"));

    let (addr, _) =
        receiver(|_: &Hit| (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")])).await;
    let (status, _, _, retry_after, _) =
        failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(status, Some(429));
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn server_error_without_retry_after_has_none() {
    let (addr, _) = receiver(|_: &Hit| (StatusCode::INTERNAL_SERVER_ERROR, "boom")).await;
    let (status, class, error, retry_after, body) =
        failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!((status, class), (Some(500), ErrorClass::Status));
    assert_eq!(error, "HTTP 500 Internal Server Error");
    assert_eq!(retry_after, None);
    assert_eq!(body.as_deref(), Some("boom"));

    // Retry-After on a status other than 429/503 is ignored.
    let (addr, _) = receiver(|_: &Hit| (StatusCode::BAD_GATEWAY, [("retry-after", "60")])).await;
    let (status, _, _, retry_after, _) =
        failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!((status, retry_after), (Some(502), None));
}

#[tokio::test]
async fn redirect_is_a_failure_and_not_followed() {
    let (target, target_hits) = receiver(|_: &Hit| StatusCode::OK).await;
    let location = url(target);
    let (addr, hits) =
        receiver(move |_: &Hit| (StatusCode::FOUND, [("location", location.clone())], "moved"))
            .await;
    let (status, class, error, retry_after, _) =
        failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!((status, class), (Some(302), ErrorClass::Status));
    assert_eq!(error, "HTTP 302 Found");
    assert_eq!(retry_after, None);
    assert_eq!(hit_count(&hits), 1);
    assert_eq!(
        hit_count(&target_hits),
        0,
        "the Location target got a request"
    );
}

#[tokio::test]
async fn client_error_is_a_status_failure() {
    for code in [
        StatusCode::BAD_REQUEST,
        StatusCode::GONE,
        StatusCode::UNAUTHORIZED,
    ] {
        let (addr, _) = receiver(move |_: &Hit| (code, "nope")).await;
        let (status, class, _, retry_after, body) =
            failed(send(&sender(), &url(addr), &[&Secret::generate()]).await);
        assert_eq!((status, class), (Some(code.as_u16()), ErrorClass::Status));
        assert_eq!(retry_after, None);
        assert_eq!(body.as_deref(), Some("nope"));
    }
}

/// Sends a 100 MiB body in 16 KiB writes with a pause between them, until the client goes
/// away; returns how many body bytes the kernel accepted.
async fn endless_body(mut stream: TcpStream, status_line: &'static str) -> u64 {
    read_request(&mut stream).await;
    let head = format!("{status_line}\r\ncontent-length: {}\r\n\r\n", 100u64 << 20);
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 16 * 1024];
    let mut written = 0u64;
    while written < 100 << 20 {
        match stream.write(&chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    written
}

/// The deadline is far away, so an error without a deadline note says reading stopped at the
/// cap, and the peer, which would write 100 MiB to a reader that kept reading, got out only
/// what the socket buffers hold.
#[tokio::test]
async fn huge_error_body_is_cut_at_the_cap_and_reading_stops() {
    let (addr, peer) = raw_peer(|s| endless_body(s, "HTTP/1.1 500 Internal Server Error")).await;
    let sender = loopback_sender(FAR_DEADLINE);
    let (status, class, error, _, body) =
        failed(send(&sender, &url(addr), &[&Secret::generate()]).await);
    assert_eq!((status, class), (Some(500), ErrorClass::Status), "{error}");
    assert_eq!(error, "HTTP 500 Internal Server Error");
    let body = body.expect("body kept");
    assert_eq!(body.len(), 1024);
    assert!(body.bytes().all(|b| b == b'x'));
    let written = join(peer).await;
    assert!(written < 8 << 20, "peer wrote {written} bytes");
}

#[tokio::test]
async fn huge_ok_body_is_delivered_without_reading_it_all() {
    let (addr, peer) = raw_peer(|s| endless_body(s, "HTTP/1.1 200 OK")).await;
    let sender = loopback_sender(FAR_DEADLINE);
    let outcome = send(&sender, &url(addr), &[&Secret::generate()]).await;
    assert!(
        matches!(outcome, Outcome::Delivered { status: 200, .. }),
        "{outcome:?}"
    );
    let written = join(peer).await;
    assert!(written < 8 << 20, "peer wrote {written} bytes");
}

#[tokio::test]
async fn connection_refused_is_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (class, error) = class_of(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Connect, "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(
        !error.contains(&addr.port().to_string()),
        "no URL in: {error}"
    );
}

#[tokio::test]
async fn reset_after_the_request_is_reset() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        reset(s);
    })
    .await;
    let (class, error) = class_of(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Reset, "{error}");
    join(peer).await;
}

#[tokio::test]
async fn reset_on_accept_is_reset() {
    let (addr, peer) = raw_peer(|s| async move { reset(s) }).await;
    let (class, error) = class_of(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Reset, "{error}");
    join(peer).await;
}

#[tokio::test]
async fn close_without_a_response_is_reset() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        s.shutdown().await.expect("shutdown");
        drop(s);
    })
    .await;
    let (class, error) = class_of(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Reset, "{error}");
    assert!(error.contains("connection closed"), "{error}");
    join(peer).await;
}

#[tokio::test]
async fn garbage_response_is_protocol() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        s.write_all(b"garbage\r\n\r\n").await.expect("write");
        until_closed(&mut s).await;
    })
    .await;
    let (class, error) = class_of(send(&sender(), &url(addr), &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Protocol, "{error}");
    assert!(error.contains("invalid HTTP"), "{error}");
    join(peer).await;
}

#[tokio::test]
async fn tls_to_a_plain_http_port_is_tls() {
    let (addr, hits) = receiver(|_: &Hit| StatusCode::OK).await;
    let https = format!("https://{addr}/hook");
    let (class, error) = class_of(send(&sender(), &https, &[&Secret::generate()]).await);
    assert_eq!(class, ErrorClass::Tls, "{error}");
    assert_eq!(hit_count(&hits), 0);
}

#[tokio::test]
async fn silence_before_the_head_is_timeout() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        until_closed(&mut s).await;
    })
    .await;
    let sender = loopback_sender(Duration::from_millis(300));
    let started = Instant::now();
    let outcome = send(&sender, &url(addr), &[&Secret::generate()]).await;
    let took = started.elapsed();
    let Outcome::Failed { duration_ms, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    // Not before the deadline; that it ends at all is the hang guard's to check.
    assert!(*duration_ms >= 300, "{duration_ms} ms");
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    let (class, error) = class_of(outcome);
    assert_eq!(class, ErrorClass::Timeout, "{error}");
    // The timed-out connection is closed, not left to the peer.
    join(peer).await;
}

#[tokio::test]
async fn silence_mid_body_keeps_status_and_partial_body() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1000\r\n\r\n";
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(b"0123456789").await.expect("ten bytes");
        until_closed(&mut s).await;
    })
    .await;
    let sender = loopback_sender(Duration::from_millis(300));
    let started = Instant::now();
    let (status, class, error, retry_after, body) =
        failed(send(&sender, &url(addr), &[&Secret::generate()]).await);
    let took = started.elapsed();
    assert_eq!((status, class), (Some(500), ErrorClass::Status), "{error}");
    assert_eq!(body.as_deref(), Some("0123456789"));
    assert_eq!(retry_after, None);
    assert!(
        error.starts_with("HTTP 500 Internal Server Error; response body incomplete"),
        "{error}"
    );
    assert!(error.contains("deadline"), "{error}");
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    join(peer).await;
}

#[tokio::test]
async fn broken_ok_body_is_still_delivered() {
    let (addr, peer) = raw_peer(|mut s| async move {
        read_request(&mut s).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789";
        s.write_all(head.as_bytes()).await.expect("head");
        s.shutdown().await.expect("shutdown");
    })
    .await;
    let outcome = send(&sender(), &url(addr), &[&Secret::generate()]).await;
    assert!(
        matches!(outcome, Outcome::Delivered { status: 200, .. }),
        "{outcome:?}"
    );
    join(peer).await;
}

#[tokio::test]
async fn internal_addresses_are_refused_by_default() {
    let (addr, hits) = receiver(|_: &Hit| StatusCode::OK).await;
    let strict = Sender::new(SenderConfig::default()).expect("sender");
    let secret = Secret::generate();

    let (class, error) = class_of(send(&strict, &url(addr), &[&secret]).await);
    assert_eq!(class, ErrorClass::RefusedUrl, "{error}");
    assert!(error.contains("loopback"), "{error}");

    // A name resolving to loopback is caught by the resolver, before any connection.
    let by_name = format!("http://localhost:{}/hook", addr.port());
    let (class, error) = class_of(send(&strict, &by_name, &[&secret]).await);
    assert_eq!(class, ErrorClass::RefusedUrl, "{error}");
    assert!(error.contains("refused host localhost"), "{error}");

    for bad in ["ftp://x", "not a url", "http://"] {
        let (class, error) = class_of(send(&strict, bad, &[&secret]).await);
        assert_eq!(class, ErrorClass::RefusedUrl, "{bad}: {error}");
    }
    assert_eq!(hit_count(&hits), 0, "a refused URL reached the receiver");

    // The same receiver is reachable once allowlisted, so the refusals above were the guard.
    let outcome = send(&sender(), &url(addr), &[&secret]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    assert_eq!(hit_count(&hits), 1);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let (addr, hits) = receiver(|_: &Hit| (StatusCode::OK, "ok")).await;
    let sender = sender();
    let secret = Secret::generate();
    for _ in 0..3 {
        let outcome = send(&sender, &url(addr), &[&secret]).await;
        assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    }
    let remotes: Vec<SocketAddr> = hits
        .lock()
        .expect("hits")
        .iter()
        .map(|h| h.remote)
        .collect();
    assert_eq!(remotes.len(), 3);
    assert!(
        remotes.iter().all(|r| *r == remotes[0]),
        "new connections: {remotes:?}"
    );
}

#[tokio::test]
async fn keep_alive_survives_an_ok_body_that_arrives_late() {
    // A peer that sends the head of a 200, pauses, then the body: the connection is reused
    // only if the sender reads the body to its end before returning.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(Mutex::new(0usize));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            *counter.lock().expect("count") += 1;
            tokio::spawn(async move {
                while try_read_request(&mut stream).await.is_some() {
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
                    stream.write_all(head.as_bytes()).await.expect("head");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if stream.write_all(b"hello").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let sender = sender();
    let secret = Secret::generate();
    for _ in 0..2 {
        let outcome = send(&sender, &url(addr), &[&secret]).await;
        assert!(
            matches!(outcome, Outcome::Delivered { status: 200, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(
        *accepted.lock().expect("count"),
        1,
        "the connection was not reused"
    );
}

#[tokio::test]
async fn unsendable_header_is_other_and_sends_nothing() {
    let (addr, hits) = receiver(|_: &Hit| StatusCode::OK).await;
    let now = Utc::now();
    let secret = Secret::generate();
    let target = url(addr);
    let attempt = Attempt {
        url: &target,
        msg_id: "bad\nid",
        body: BODY,
        secrets: &[&secret],
        timestamp: now.timestamp(),
    };
    let outcome = tokio::time::timeout(BOUND, sender().send(&attempt, now))
        .await
        .expect("bounded");
    let (class, error) = class_of(outcome);
    assert_eq!(class, ErrorClass::Other, "{error}");
    assert_eq!(hit_count(&hits), 0);
}
