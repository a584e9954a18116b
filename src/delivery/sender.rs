//! The sender: one signed `POST` to a receiver, and its outcome classified.
//!
//! This module owns the HTTP client that talks to receivers and the mapping from everything
//! that can happen on the wire to an [`Outcome`] with an [`ErrorClass`]. It decides nothing
//! about retries: the caller turns the outcome into ledger records.
//!
//! Invariants:
//! - **Every failure is an [`Outcome`].** [`Sender::send`] never returns an error and never
//!   panics: a bad URL, a refused address, a dead peer, garbage on the wire and a missed
//!   deadline all become [`Outcome::Failed`] with a class.
//! - **At most `max_response_bytes` of a response body are kept, and reading stops at the
//!   cap.** The body is read chunk by chunk and the response is dropped (closing the
//!   connection) as soon as more than the cap has arrived, so a 100 MiB answer costs about one
//!   read buffer, not 100 MiB.
//! - **The connected address is the checked one.** Literal-IP URLs are checked by
//!   [`EgressPolicy::check_url`] before sending; names are resolved once, by the
//!   [`GuardedResolver`] installed as the client's only resolver, which checks every address
//!   it returns. Redirects are never followed (a 3xx is a failed attempt) and proxies are
//!   disabled, so no other address is ever dialled.
//! - **One deadline per attempt.** `attempt_timeout` bounds connect, send, the response head
//!   and the body read together.
//!
//! Decisions pinned by the integration tests:
//! - A 2xx is [`Outcome::Delivered`] as soon as its status line arrives. Its body is drained
//!   (up to the cap) only so the connection can go back to the keep-alive pool; a body that
//!   fails or stalls until the deadline does not turn an acknowledged delivery into a failure.
//!   A 2xx body longer than the cap is not read to its end: that connection is closed rather
//!   than reused.
//! - A non-2xx is class `status` whatever happens to its body: if reading the body fails or
//!   the deadline passes mid-body, the outcome keeps the status, the body read so far and a
//!   note in `error` (class `timeout` is only for a deadline that passes before the status
//!   line).
//! - A peer that closes or resets the connection before a complete response is class `reset`;
//!   a response that is not HTTP is class `protocol`; a TLS handshake with something that does
//!   not speak TLS is class `tls`.
//!
//! Error messages carry the client error and its root cause, never the URL (it may hold
//! credentials) and never a signing secret.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};

use super::backoff::parse_retry_after;
use super::guard::{EgressPolicy, GuardError, GuardedResolver};
use super::signing::{
    signed_headers, Secret, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, USER_AGENT,
};
use super::url_cache::UrlCache;
use crate::ledger::record::ErrorClass;

/// Default total deadline of one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default number of response-body bytes kept for a failed attempt.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024;

/// Stands in for a deadline too far away to represent (an absurd `attempt_timeout`).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Total deadline of one attempt: connect + send + response head + body read.
    pub attempt_timeout: Duration,
    /// Which addresses may be connected to.
    pub egress: Arc<EgressPolicy>,
    /// How many bytes of a response body are kept (and read, give or take one chunk).
    pub max_response_bytes: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            egress: Arc::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Why a [`Sender`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The HTTP client (TLS backend included) failed to initialise.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One delivery attempt's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The receiver's URL.
    pub url: &'a str,
    /// The delivery's stable `webhook-id`.
    pub msg_id: &'a str,
    /// The event payload, sent as-is.
    pub body: &'a [u8],
    /// Every current signing secret; each adds one `v1,` signature.
    pub secrets: &'a [&'a Secret],
    /// The `webhook-timestamp`, Unix seconds from the injected clock.
    pub timestamp: i64,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered {
        /// The HTTP status code.
        status: u16,
        /// Wall time of the attempt.
        duration_ms: u32,
    },
    /// Anything else.
    Failed {
        /// The HTTP status code, when a response head arrived.
        status: Option<u16>,
        /// Why it failed.
        class: ErrorClass,
        /// A readable message (no URL, no secret).
        error: String,
        /// Wall time of the attempt.
        duration_ms: u32,
        /// The receiver's `Retry-After`, for 429 and 503 only.
        retry_after: Option<Duration>,
        /// The first `max_response_bytes` of a non-2xx body, lossily UTF-8.
        response_body: Option<String>,
    },
}

/// Sends signed webhook requests through one pooled HTTP/1.1 client.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    config: SenderConfig,
    urls: UrlCache,
}

impl Sender {
    /// Builds the client: no redirects, no proxies, the guarded resolver, keep-alive pooling.
    pub fn new(config: SenderConfig) -> Result<Self, SenderError> {
        let resolver = GuardedResolver::new(Arc::clone(&config.egress));
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .http1_only()
            .user_agent(USER_AGENT)
            .build()
            .map_err(SenderError::Client)?;
        Ok(Self {
            client,
            config,
            urls: UrlCache::default(),
        })
    }

    /// The configuration this sender was built with.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Makes one attempt. `now` is the injected clock's time, used only to read an HTTP-date
    /// `Retry-After`. Never fails: see the module invariants.
    pub async fn send(&self, a: &Attempt<'_>, now: DateTime<Utc>) -> Outcome {
        let started = Instant::now();
        let start = tokio::time::Instant::from_std(started);
        let deadline = start
            .checked_add(self.config.attempt_timeout)
            .unwrap_or_else(|| start + FAR_FUTURE);
        let result = self.exchange(a, now, deadline).await;
        let duration_ms = elapsed_ms(started);
        match result {
            Exchange::Delivered { status } => Outcome::Delivered {
                status,
                duration_ms,
            },
            Exchange::Failed {
                status,
                class,
                error,
                retry_after,
                response_body,
            } => Outcome::Failed {
                status,
                class,
                error,
                duration_ms,
                retry_after,
                response_body,
            },
        }
    }

    async fn exchange(
        &self,
        a: &Attempt<'_>,
        now: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> Exchange {
        let url = match self.urls.parse(a.url) {
            Ok(url) => url,
            Err(e) => return Exchange::error(ErrorClass::RefusedUrl, format!("invalid URL: {e}")),
        };
        if let Err(e) = self.config.egress.check_url(&url) {
            return Exchange::error(ErrorClass::RefusedUrl, e.to_string());
        }
        let signed = signed_headers(a.msg_id, a.timestamp, a.body, a.secrets);
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_ID, signed.id)
            .header(HEADER_TIMESTAMP, signed.timestamp)
            .header(HEADER_SIGNATURE, signed.signature)
            .body(a.body.to_vec())
            .send();
        let mut response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => {
                let error = format!(
                    "no response within the attempt deadline of {:?}",
                    self.config.attempt_timeout
                );
                return Exchange::error(ErrorClass::Timeout, error);
            }
            Ok(Err(e)) => return Exchange::error(classify(&e), describe(e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let cap = self.config.max_response_bytes;
        let body = read_capped(&mut response, cap, deadline).await;
        if status.is_success() {
            return Exchange::Delivered {
                status: status.as_u16(),
            };
        }
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(response.headers(), now)
            }
            _ => None,
        };
        let mut error = status_error(status);
        if let Some(problem) = &body.problem {
            error.push_str("; response body incomplete: ");
            error.push_str(problem);
        }
        Exchange::Failed {
            status: Some(status.as_u16()),
            class: ErrorClass::Status,
            error,
            retry_after,
            response_body: Some(body_text(&body.kept, body.truncated)),
        }
    }
}

/// [`Outcome`] without the duration, which [`Sender::send`] adds.
enum Exchange {
    Delivered {
        status: u16,
    },
    Failed {
        status: Option<u16>,
        class: ErrorClass,
        error: String,
        retry_after: Option<Duration>,
        response_body: Option<String>,
    },
}

impl Exchange {
    fn error(class: ErrorClass, error: String) -> Self {
        Self::Failed {
            status: None,
            class,
            error,
            retry_after: None,
            response_body: None,
        }
    }
}

/// The start of a response body.
struct CappedBody {
    /// At most `cap` bytes.
    kept: Vec<u8>,
    /// More than `cap` bytes arrived; reading stopped there.
    truncated: bool,
    /// Why reading ended before the end of the body, if it did.
    problem: Option<String>,
}

/// Reads `response` chunk by chunk until its end, `deadline`, an error, or until more than
/// `cap` bytes have arrived (so a body of exactly `cap` bytes is still read to its end and
/// the connection can be reused).
async fn read_capped(
    response: &mut Response,
    cap: usize,
    deadline: tokio::time::Instant,
) -> CappedBody {
    let mut body = CappedBody {
        kept: Vec::new(),
        truncated: false,
        problem: None,
    };
    let mut seen = 0usize;
    while seen <= cap {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => {
                body.problem = Some(format!("the attempt deadline passed after {seen} bytes"));
                return body;
            }
            Ok(Err(e)) => {
                body.problem = Some(format!("after {seen} bytes: {}", describe(e)));
                return body;
            }
            Ok(Ok(None)) => return body,
            Ok(Ok(Some(chunk))) => {
                seen = seen.saturating_add(chunk.len());
                let room = cap - body.kept.len();
                body.kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
        }
    }
    body.truncated = true;
    body
}

/// Lossy UTF-8 of the kept bytes; when the body was cut at the cap, a multi-byte character
/// split by the cut is dropped rather than shown as a replacement character.
fn body_text(kept: &[u8], truncated: bool) -> String {
    let end = if truncated {
        kept.len() - incomplete_tail(kept)
    } else {
        kept.len()
    };
    String::from_utf8_lossy(&kept[..end]).into_owned()
}

/// How many trailing bytes of `b` are the unfinished start of a UTF-8 sequence.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// `HTTP 503 Service Unavailable` (or `HTTP 599` for a code without a reason phrase).
fn status_error(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// `err` and every error below it.
fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// The guard's refusal, if the resolver refused the name.
fn guard_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a GuardError> {
    chain(err).find_map(|e| e.downcast_ref::<GuardError>())
}

/// Kinds of the `io::Error`s in the chain (also looking inside custom io errors).
fn io_kinds(err: &(dyn StdError + 'static)) -> Vec<io::ErrorKind> {
    chain(err)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .flat_map(|io| {
            let inner = io
                .get_ref()
                .and_then(|i| i.downcast_ref::<io::Error>())
                .map(io::Error::kind);
            std::iter::once(io.kind()).chain(inner)
        })
        .collect()
}

/// Lower-cased messages of the errors below `err` (the top one is the client's generic text).
fn cause_messages(err: &(dyn StdError + 'static)) -> Vec<String> {
    chain(err)
        .skip(1)
        .map(|e| e.to_string().to_ascii_lowercase())
        .collect()
}

const TLS_MARKERS: &[&str] = &[
    "tls",
    "certificate",
    "invalidcontenttype",
    "handshake",
    "corrupt message",
    "fatal alert",
    "peer is incompatible",
    "peer misbehaved",
];
const RESET_MARKERS: &[&str] = &[
    "connection closed",
    "incompletemessage",
    "connection reset",
    "broken pipe",
];
const PROTOCOL_MARKERS: &[&str] = &[
    "invalid http",
    "invalid uri",
    "invalid content-length",
    "transfer-encoding",
    "message head is too large",
    "unexpected message",
    "internal error inside hyper",
    "parsed",
];

/// Maps a client error to its class. Checked in this order: resolver refusal, a request that
/// could not be built (other), timeout, TLS, connection refused, reset/closed, unparseable
/// response, other connect failures, body errors, anything else.
pub fn classify(err: &reqwest::Error) -> ErrorClass {
    if err.is_builder() && guard_error(err).is_none() {
        return ErrorClass::Other;
    }
    classify_chain(
        err,
        err.is_timeout(),
        err.is_connect(),
        err.is_body() || err.is_decode(),
    )
}

fn classify_chain(
    err: &(dyn StdError + 'static),
    timeout: bool,
    connect: bool,
    body: bool,
) -> ErrorClass {
    if guard_error(err).is_some() {
        return ErrorClass::RefusedUrl;
    }
    if timeout {
        return ErrorClass::Timeout;
    }
    let kinds = io_kinds(err);
    let messages = cause_messages(err);
    let mentions = |markers: &[&str]| {
        messages
            .iter()
            .any(|m| markers.iter().any(|marker| m.contains(marker)))
    };
    if mentions(TLS_MARKERS) || (connect && kinds.contains(&io::ErrorKind::InvalidData)) {
        return ErrorClass::Tls;
    }
    if kinds.contains(&io::ErrorKind::ConnectionRefused) {
        return ErrorClass::Connect;
    }
    let reset_kinds = [
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionAborted,
        io::ErrorKind::BrokenPipe,
        io::ErrorKind::UnexpectedEof,
    ];
    if kinds.iter().any(|k| reset_kinds.contains(k)) || mentions(RESET_MARKERS) {
        return ErrorClass::Reset;
    }
    if mentions(PROTOCOL_MARKERS) {
        return ErrorClass::Protocol;
    }
    if connect {
        return ErrorClass::Connect;
    }
    if body {
        return ErrorClass::Body;
    }
    ErrorClass::Other
}

/// The client error without its URL, plus its root cause (or the guard's own message).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    if let Some(guard) = guard_error(&err) {
        return guard.to_string();
    }
    describe_chain(&err)
}

fn describe_chain(err: &(dyn StdError + 'static)) -> String {
    let top = err.to_string();
    match chain(err).last().map(|root| root.to_string()) {
        Some(root) if root != top && !top.contains(&root) => format!("{top}: {root}"),
        _ => top,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// A test error with a message and an optional cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn StdError + Send + Sync>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_ref().map(|e| &**e as _)
        }
    }

    fn over(msg: &'static str, cause: impl StdError + Send + Sync + 'static) -> Layer {
        Layer(
            "error sending request",
            Some(Box::new(Layer(msg, Some(Box::new(cause))))),
        )
    }

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    fn class(err: &Layer, connect: bool) -> ErrorClass {
        classify_chain(err, false, connect, false)
    }

    #[test]
    fn classification_table() {
        let refused = GuardError::NoHost;
        assert_eq!(
            class(&over("dns error", refused), true),
            ErrorClass::RefusedUrl
        );
        let conn_refused = io(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            class(&over("tcp connect error", conn_refused), true),
            ErrorClass::Connect
        );
        let corrupt = io::Error::new(
            io::ErrorKind::InvalidData,
            "received corrupt message of type InvalidContentType",
        );
        assert_eq!(
            class(&over("client error (Connect)", corrupt), true),
            ErrorClass::Tls
        );
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(
            class(&over("client error (Connect)", eof), true),
            ErrorClass::Tls
        );
        let reset = io(io::ErrorKind::ConnectionReset);
        assert_eq!(
            class(&over("connection error", reset), false),
            ErrorClass::Reset
        );
        let closed = Layer("connection closed before message completed", None);
        assert_eq!(
            class(&over("client error (SendRequest)", closed), false),
            ErrorClass::Reset
        );
        let parse = Layer("invalid HTTP version parsed", None);
        assert_eq!(
            class(&over("client error (SendRequest)", parse), false),
            ErrorClass::Protocol
        );
        let unknown = Layer("something odd", None);
        assert_eq!(
            class(&over("client error", unknown), true),
            ErrorClass::Connect
        );
        let unknown = Layer("something odd", None);
        assert_eq!(
            class(&over("client error", unknown), false),
            ErrorClass::Other
        );
        let unknown = Layer("something odd", None);
        assert_eq!(
            classify_chain(&over("x", unknown), false, false, true),
            ErrorClass::Body
        );
        let unknown = Layer("something odd", None);
        assert_eq!(
            classify_chain(&over("x", unknown), true, true, false),
            ErrorClass::Timeout
        );
    }

    #[test]
    fn the_top_message_is_not_searched_for_markers() {
        // The client's own text (which could name a host like "tls.example") is ignored.
        let err = Layer("error sending request for tls.example", None);
        assert_eq!(class(&err, false), ErrorClass::Other);
    }

    #[test]
    fn description_is_top_plus_root_cause() {
        let err = over("tcp connect error", io(io::ErrorKind::ConnectionRefused));
        let text = describe_chain(&err);
        assert!(text.starts_with("error sending request: "), "{text}");
        assert!(
            text.contains(&io(io::ErrorKind::ConnectionRefused).to_string()),
            "{text}"
        );
        assert_eq!(describe_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn status_error_names_code_and_reason() {
        assert_eq!(
            status_error(StatusCode::SERVICE_UNAVAILABLE),
            "HTTP 503 Service Unavailable"
        );
        assert_eq!(status_error(StatusCode::FOUND), "HTTP 302 Found");
        let odd = StatusCode::from_u16(599).expect("valid code");
        assert_eq!(status_error(odd), "HTTP 599");
    }

    #[test]
    fn retry_after_reads_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, Utc::now()), None);
        headers.insert(RETRY_AFTER, "120".parse().expect("value"));
        assert_eq!(
            retry_after(&headers, Utc::now()),
            Some(Duration::from_secs(120))
        );
        headers.insert(RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&headers, Utc::now()), None);
    }

    #[test]
    fn body_text_drops_a_character_split_by_the_cap() {
        let euro = "€".as_bytes(); // three bytes
        let mut kept = b"ab".to_vec();
        kept.extend_from_slice(&euro[..2]);
        assert_eq!(body_text(&kept, true), "ab");
        assert_eq!(body_text(&kept, false), "ab\u{FFFD}");
        let mut whole = b"ab".to_vec();
        whole.extend_from_slice(euro);
        assert_eq!(body_text(&whole, true), "ab€");
        assert_eq!(body_text(b"\xffab", true), "\u{FFFD}ab");
        assert_eq!(body_text(b"", true), "");
    }

    #[test]
    fn incomplete_tail_counts_unfinished_sequences_only() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&[b'a', 0xF0, 0x9F, 0x98]), 3);
        assert_eq!(incomplete_tail(&[0xF0, 0x9F, 0x98, 0x80]), 0);
        assert_eq!(incomplete_tail(&[b'a', 0xC3]), 1);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80]), 0);
    }

    #[test]
    fn default_config() {
        let config = SenderConfig::default();
        assert_eq!(config.attempt_timeout, Duration::from_secs(15));
        assert_eq!(config.max_response_bytes, 1024);
        assert!(config.egress.is_empty());
    }
}
