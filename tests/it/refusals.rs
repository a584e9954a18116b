//! Refusals a client can read: a client that writes its whole request body before it reads
//! (as most SDKs do) must receive the JSON error of every kind of refusal (401, 404, 405, 413,
//! 415, 422) for bodies of 1 and 4 MiB, every time, against the real `hookledger serve`. Before
//! the server drained refused bodies, it answered and closed while the body was still coming,
//! and the client got a broken pipe or a reset instead of the answer.
//!
//! Also the raw-socket client the slow-client tests use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::serve_child::{ServeChild, TOKEN};

const MIB: usize = 1024 * 1024;

/// What a raw client got back: the status, the headers (lower-cased names) and the body.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// `127.0.0.1:PORT` of a `http://127.0.0.1:PORT` base.
pub fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// A connection with read and write timeouts far above what any answer takes.
pub fn connect(base: &str) -> TcpStream {
    let stream = TcpStream::connect(addr(base)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads one answer (headers, then `content-length` bytes). An error is what the client saw
/// instead: a reset, an early end, a timeout.
pub fn read_answer(stream: &mut TcpStream) -> Result<RawAnswer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = response
            .parse(&buf)
            .map_err(|e| format!("bad answer: {e}"))?
        {
            let status = response.code.unwrap_or(0);
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .ok_or("no content-length")?;
            while buf.len() < head_len + length {
                let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("the answer's body was cut".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + length].to_vec();
            return Ok(RawAnswer {
                status,
                headers,
                body,
            });
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before an answer ({} bytes read)",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes the whole request (head, then body) without reading, then reads the answer.
pub fn send_then_read(base: &str, head: &str, body: &[u8]) -> Result<RawAnswer, String> {
    let mut stream = connect(base);
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("writing the head: {e}"))?;
    stream
        .write_all(body)
        .map_err(|e| format!("writing the body: {e}"))?;
    read_answer(&mut stream)
}

/// One kind of refusal: the request's head for a body of `len` bytes, the body, and the
/// status and error code it must get.
struct Refusal {
    name: &'static str,
    head: fn(usize) -> String,
    body: fn(usize) -> Vec<u8>,
    status: u16,
    code: &'static str,
}

fn head(line: &str, content_type: &str, token: bool, len: usize) -> String {
    let auth = if token {
        format!("authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    format!(
        "{line} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: {content_type}\r\ncontent-length: {len}\r\n\r\n"
    )
}

fn junk(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

/// A JSON object of exactly `len` bytes whose `event_type` is invalid (a 422 naming it).
fn invalid_event(len: usize) -> Vec<u8> {
    let prefix = br#"{"event_type":"not a type!","payload":""#;
    let suffix = br#""}"#;
    let mut body = prefix.to_vec();
    body.resize(len - suffix.len(), b'a');
    body.extend_from_slice(suffix);
    body
}

const REFUSALS: [Refusal; 6] = [
    Refusal {
        name: "401 no token",
        head: |n| head("POST /v1/events", "application/json", false, n),
        body: junk,
        status: 401,
        code: "unauthorized",
    },
    Refusal {
        name: "404 unknown route",
        head: |n| head("POST /v1/no-such-route", "application/json", true, n),
        body: junk,
        status: 404,
        code: "not_found",
    },
    Refusal {
        name: "405 wrong method",
        head: |n| head("PUT /v1/events", "application/json", true, n),
        body: junk,
        status: 405,
        code: "method_not_allowed",
    },
    Refusal {
        name: "413 over the payload limit",
        head: |n| head("POST /v1/events", "application/json", true, n),
        body: junk,
        status: 413,
        code: "too_large",
    },
    Refusal {
        name: "415 wrong content type",
        head: |n| head("POST /v1/events", "text/plain", true, n),
        body: junk,
        status: 415,
        code: "unsupported_media_type",
    },
    Refusal {
        name: "422 invalid field",
        head: |n| head("POST /v1/events", "application/json", true, n),
        body: invalid_event,
        status: 422,
        code: "invalid",
    },
];

/// How many times each (refusal, size) is tried: the lost answer was intermittent at 1 MiB
/// (about one in thirty), systematic at 4 MiB.
fn tries(len: usize) -> usize {
    if len <= MIB {
        30
    } else {
        8
    }
}

#[test]
fn every_refusal_is_read_by_a_client_that_writes_its_whole_body_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    // The default payload limit (256 KiB) for the 413; a 5 MiB one for the 422, whose body
    // must be within the limit to be read and refused for its field.
    let small = ServeChild::start(&dir.path().join("small.duckdb"), &[], &log);
    let large = ServeChild::start(
        &dir.path().join("large.duckdb"),
        &[("HOOKLEDGER_MAX_PAYLOAD", "5242880")],
        &log,
    );
    let mut failures = Vec::new();
    for refusal in &REFUSALS {
        let server = if refusal.status == 422 {
            &large
        } else {
            &small
        };
        for len in [MIB, 4 * MIB] {
            let (head, body) = ((refusal.head)(len), (refusal.body)(len));
            let mut read = 0;
            let mut lost = Vec::new();
            for _ in 0..tries(len) {
                match send_then_read(&server.base, &head, &body) {
                    Ok(answer)
                        if answer.status == refusal.status
                            && answer.json()["error"]["code"] == refusal.code =>
                    {
                        read += 1
                    }
                    Ok(answer) => lost.push(format!(
                        "{} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )),
                    Err(e) => lost.push(e),
                }
            }
            eprintln!(
                "{}, {} MiB: {read} of {} answers read",
                refusal.name,
                len / MIB,
                tries(len)
            );
            if !lost.is_empty() {
                failures.push(format!(
                    "{}, {} MiB: {} of {} lost, e.g. {}",
                    refusal.name,
                    len / MIB,
                    lost.len(),
                    tries(len),
                    lost[0]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The drain is what keeps the connection usable: after a refused body that was read in
/// full, the same connection serves the next request.
#[test]
fn a_connection_survives_a_refused_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeChild::start(
        &dir.path().join("db.duckdb"),
        &[],
        &dir.path().join("serve.log"),
    );
    let mut stream = connect(&server.base);
    let body = junk(MIB);
    stream
        .write_all(head("POST /v1/events", "application/json", false, MIB).as_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let refused = read_answer(&mut stream).unwrap();
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.header("connection"), None, "{refused:?}");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let health = read_answer(&mut stream).unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body, b"ok");
}
