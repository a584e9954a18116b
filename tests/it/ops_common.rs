//! Helpers of the operations tests (`ops_*`): a receiver on 127.0.0.1 that keeps every
//! request with the time it came in, failing the first `n` or a seeded share of them, and a
//! way to run a `hookledger serve` that is expected to refuse to start.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// What the receiver answered.
    pub ok: bool,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    fail_first: usize,
    fail_share: f64,
    rng: fastrand::Rng,
    hits: Vec<Hit>,
}

impl Receiver {
    /// Answers 500 to the first `fail_first` requests, then to a `fail_share` of the rest
    /// (seeded), else 204. Its URL ends in `/hook`.
    pub async fn start(fail_first: usize, fail_share: f64, seed: u64) -> (Self, String) {
        let r = Receiver {
            inner: Arc::new(Mutex::new(Inner {
                fail_first,
                fail_share,
                rng: fastrand::Rng::with_seed(seed),
                hits: Vec::new(),
            })),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().hits.len()
    }

    /// Waits (polling, bounded) until `n` requests came in; false when they did not.
    pub async fn wait_for(&self, n: usize, bound: Duration) -> bool {
        let start = Instant::now();
        while self.count() < n {
            if start.elapsed() > bound {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inner = r.inner.lock().unwrap();
    let fail = if inner.fail_first > 0 {
        inner.fail_first -= 1;
        true
    } else {
        inner.fail_share > 0.0 && inner.rng.f64() < inner.fail_share
    };
    inner.hits.push(Hit {
        headers,
        body,
        at: Instant::now(),
        ok: !fail,
    });
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Runs `hookledger serve` on `db` with `env` (and without the secret-key variables unless
/// `env` sets them), expecting it to exit: its exit success and what it printed. Panics when
/// it is still running after `bound` (it came up instead of refusing).
pub fn serve_expecting_exit(db: &Path, env: &[(&str, &str)], bound: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookledger"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("HOOKLEDGER_API_TOKEN", "ops-test-token-0123456789")
        .env_remove("HOOKLEDGER_SECRET_KEY")
        .env_remove("HOOKLEDGER_SECRET_KEY_FILE")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve did not exit: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    (status.success(), text)
}

/// Whether `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
