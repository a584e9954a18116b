//! What the scenarios that run the whole service share (`cluster`, `deliver-http`, `latency`):
//! `hookledger serve` child processes ([`Node`]), the bench's HTTP client for them ([`Http`]),
//! and publishers that send `POST /v1/events` over HTTP/1.1 keep-alive the way producers do
//! ([`publish`]), either as closed loops or paced at a fixed rate.
//!
//! Invariant: a [`Node`] is stopped (SIGTERM, then killed) when it is dropped, whatever the
//! outcome; a publish answered anything but 202 fails the run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::receiver::{Tape, BODY};
use super::Options;
use crate::error::{LedgerError, Result};

/// Concurrent HTTP publishers of a closed-loop run.
pub const PUBLISHERS: usize = 64;
/// The operator token every child is started with.
const TOKEN: &str = "bench-cluster-token-0123456789";

/// One `hookledger serve` child and its address.
pub struct Node {
    child: Child,
    pub base: String,
}

/// A fresh secret key for the children of one run (they must share it on one schema).
pub fn secret_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
}

impl Node {
    /// Starts `serve` with `store` (`--db PATH` or `--store URL`) and waits for its address;
    /// its stderr goes to `log`.
    pub fn start(exe: &Path, store: &[&str], key: &str, log: &Path) -> Result<Self> {
        let err = |e: std::io::Error| LedgerError::Invalid(format!("bench: serve child: {e}"));
        let stderr = std::fs::File::create(log).map_err(err)?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store)
            .env("HOOKLEDGER_API_TOKEN", TOKEN)
            .env("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1")
            .env("HOOKLEDGER_SECRET_KEY", key)
            .env("HOOKLEDGER_RETRY_SCHEDULE", "5s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(err)?;
        let stdout = child.stdout.take().map(BufReader::new);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout
                .into_iter()
                .flat_map(|s| s.lines().map_while(|l| l.ok()))
            {
                let _ = tx.send(line);
            }
        });
        let mut node = Self {
            child,
            base: String::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        node.base = addr.to_owned();
                        return Ok(node);
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(LedgerError::Invalid(format!(
                        "bench: serve did not come up:\n{log}"
                    )));
                }
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time the process has used (/proc/PID/stat).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        let ticks = stat.ok().and_then(|s| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        });
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks.unwrap_or(0) * 1000 / hz)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `hookledger` binary to start as `serve` children (`scenario` names who asks, for the
/// error).
pub fn serve_exe(o: &Options, scenario: &str) -> Result<PathBuf> {
    if let Some(exe) = &o.exe {
        return Ok(exe.clone());
    }
    std::env::current_exe()
        .ok()
        .filter(|e| e.file_stem().is_some_and(|s| s == "hookledger"))
        .ok_or_else(|| {
            LedgerError::Invalid(format!("--scenario {scenario} starts `hookledger serve` children: run it from the hookledger binary"))
        })
}

/// The bench's HTTP client for its nodes: one keep-alive pool, the operator token.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    pub bases: Vec<String>,
}

impl Http {
    pub fn new(bases: Vec<String>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(PUBLISHERS)
            .build()
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        Ok(Self { client, bases })
    }

    /// `POST path` on `node` with a JSON `body`; fails unless it is answered `status`.
    pub async fn expect(&self, node: usize, path: &str, body: String, status: u16) -> Result<()> {
        let r = self
            .client
            .post(format!("{}{path}", self.bases[node]))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| LedgerError::Invalid(format!("POST {path}: {e}")))?;
        if r.status().as_u16() != status {
            let got = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(LedgerError::Invalid(format!(
                "POST {path}: {got} (expected {status}): {text}"
            )));
        }
        Ok(())
    }

    async fn get(&self, node: usize, path: &str) -> Result<reqwest::Response> {
        self.client
            .get(format!("{}{path}", self.bases[node]))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| LedgerError::Invalid(format!("GET {path}: {e}")))
    }

    /// Polls `GET path` on `node` until `done` holds; fails when the answer stops changing for
    /// 30 s.
    pub async fn until(
        &self,
        node: usize,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let mut last = (String::new(), Instant::now());
        loop {
            let text = self.get(node, path).await?.text().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if done(&v) {
                return Ok(());
            }
            let text = v.to_string();
            if text != last.0 {
                last = (text, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(30) {
                return Err(LedgerError::Invalid(format!(
                    "bench: GET {path} stalled at {}",
                    last.0
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of the samples of metric `name` in `node`'s `/metrics` (every label set).
    pub async fn metric(&self, node: usize, name: &str) -> Result<f64> {
        let text = self
            .get(node, "/metrics")
            .await?
            .text()
            .await
            .unwrap_or_default();
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The attempts `node` made itself, from its `/metrics`.
    pub async fn attempts(&self, node: usize) -> Result<u64> {
        Ok(self.metric(node, "hookledger_attempts_total").await? as u64)
    }

    /// Registers `webhooks` webhooks at `hooks/hook/{w}` on the first node and waits until
    /// every node's registry lists them.
    pub async fn register(
        &self,
        hooks: &str,
        webhooks: usize,
        max_in_flight: Option<usize>,
    ) -> Result<()> {
        for w in 0..webhooks {
            let mut body = serde_json::json!({ "url": format!("{hooks}/hook/{w}") });
            if let Some(n) = max_in_flight {
                body["max_in_flight"] = n.into();
            }
            self.expect(0, "/v1/webhooks", body.to_string(), 201)
                .await?;
        }
        for node in 0..self.bases.len() {
            self.until(node, "/v1/webhooks", |v| {
                v["data"].as_array().map_or(0, Vec::len) == webhooks
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until the first node's projection counts `deliveries` delivered.
    pub async fn until_delivered(&self, deliveries: u64) -> Result<()> {
        self.until(0, "/v1/state", |v| {
            v["counts"]["delivered"].as_u64() == Some(deliveries)
        })
        .await
    }
}

/// How publishers send.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// This many closed loops, each sending its next event when the last is answered.
    Closed(usize),
    /// One publish started at each tick of this many events per second, whatever is in flight.
    Rate(f64),
}

/// Publishes events `0..events` of `tape` over HTTP (`POST /v1/events`, spread round-robin
/// over the nodes) and returns when every one is answered 202. Each event's publish time is
/// noted on the tape just before its request is sent.
pub async fn publish(http: &Http, tape: &Arc<Tape>, events: usize, pace: Pace) -> Result<()> {
    let payload: Arc<serde_json::Value> = Arc::new(serde_json::from_str(BODY).unwrap_or_default());
    let one = |http: Http, tape: Arc<Tape>, payload: Arc<serde_json::Value>, i: usize| async move {
        let body = serde_json::json!({
            "event_id": tape.event_id(i).0.to_string(),
            "event_type": "order.created",
            "payload": *payload,
        })
        .to_string();
        tape.mark_published(i);
        http.expect(i % http.bases.len(), "/v1/events", body, 202)
            .await
    };
    let join = |h: tokio::task::JoinHandle<Result<()>>| async move {
        h.await.map_err(|e| LedgerError::Invalid(e.to_string()))?
    };
    match pace {
        Pace::Rate(per_s) => {
            let start = tokio::time::Instant::now();
            let mut running = Vec::with_capacity(events);
            for i in 0..events {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / per_s)).await;
                let job = one(http.clone(), tape.clone(), payload.clone(), i);
                running.push(tokio::spawn(job));
            }
            for r in running {
                join(r).await?;
            }
        }
        Pace::Closed(publishers) => {
            let next = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..publishers.max(1))
                .map(|_| {
                    let (http, tape, next, payload) =
                        (http.clone(), tape.clone(), next.clone(), payload.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= events {
                                return Ok(());
                            }
                            one(http.clone(), tape.clone(), payload.clone(), i).await?;
                        }
                    })
                })
                .collect();
            for w in workers {
                join(w).await?;
            }
        }
    }
    Ok(())
}
