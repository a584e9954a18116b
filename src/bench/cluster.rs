//! `hookledger bench --scenario cluster --store postgres://...`: the whole service as operators
//! run it, `hookledger serve` child processes, published to over HTTP/1.1 keep-alive, on
//! DuckDB (one node, the reference), on PostgreSQL with one node, and on PostgreSQL with two
//! nodes sharing one schema, in the same run.
//!
//! Each run starts the bench's receiver ([`receiver`]) with [`WEBHOOKS`] webhooks (enough that
//! the 64 partitions of `cluster` spread them over two nodes), registers them on the first node,
//! waits until every node's registry lists them, then [`PUBLISHERS`] concurrent publishers post
//! the events, spread round-robin over the nodes. It ends when every delivery has reached the
//! receiver and the first node's projection counts all of them `delivered` (so a two-node run
//! also pays for each node folding the other's records). Figures: deliveries/s; CPU per delivery
//! of the `hookledger` processes (from /proc, the PostgreSQL server not counted); and on two
//! nodes, the smaller node's share of the attempts, from each node's own `/metrics`.
//!
//! On this 2-core machine two nodes share the cores with PostgreSQL and the receiver, so there
//! is no scale-out target: the two-node figure shows what coordination costs (catch-up of the
//! other node's records, the commit lock), and the share shows the work is spread.
//!
//! Invariant: every child is stopped (SIGTERM, then killed) and every schema dropped, whatever
//! the outcome; a run whose counts do not add up fails instead of printing a figure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::receiver::{self, Tape, BODY};
use super::{figure, rate, Figure, Options};
use crate::error::{LedgerError, Result};

/// Webhooks per run: each event fans out to all of them.
pub const WEBHOOKS: usize = 16;
/// Concurrent HTTP publishers.
pub const PUBLISHERS: usize = 64;
const TOKEN: &str = "bench-cluster-token-0123456789";

/// One `hookledger serve` child and its address.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    /// Starts `serve` with `store` (`--db PATH` or `--store URL`) and waits for its address.
    fn start(exe: &Path, store: &[&str], key: &str, log: &Path) -> Result<Self> {
        let err = |e: std::io::Error| LedgerError::Invalid(format!("cluster bench: {e}"));
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
                        "cluster bench: serve did not come up:\n{log}"
                    )));
                }
            }
        }
    }

    /// User plus system CPU time the process has used (/proc/PID/stat).
    fn cpu(&self) -> Duration {
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

/// What one run measured.
struct Run {
    rate: f64,
    cpu_per: Duration,
    /// The smallest node's share of all attempts (1.0 with one node).
    share: f64,
}

pub fn run(dir: &Path, o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let url = o.store.as_deref().ok_or_else(|| {
        LedgerError::Invalid("--scenario cluster needs --store postgres://...".into())
    })?;
    let exe = serve_exe(o)?;
    let events = (o.events / 40).max(50);
    let key =
        base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
    let mut figures = Vec::new();
    let db = dir.join("cluster.duckdb");
    let db_arg = db.to_string_lossy().into_owned();
    let duck = one_run(
        &exe,
        dir,
        &[&["--db", &db_arg]],
        &key,
        events,
        None,
        progress,
    )?;
    figures.push(figure(
        "cluster",
        "duck_rate",
        &format!(
            "HTTP publish → delivered, DuckDB, 1 node ({events} events × {WEBHOOKS} webhooks)"
        ),
        duck.rate,
        "deliveries/s",
        None,
    ));
    let pg1 = {
        let schema = super::pg::BenchSchema::create(url)?;
        let store = schema.url().to_owned();
        one_run(
            &exe,
            dir,
            &[&["--store", &store]],
            &key,
            events,
            Some(&store),
            progress,
        )?
    };
    figures.push(figure(
        "cluster",
        "pg1_rate",
        "the same on PostgreSQL, 1 node (ratio to DuckDB's; target ≥ 0.5)",
        pg1.rate,
        "deliveries/s",
        Some(pg1.rate / duck.rate.max(1e-9)),
    ));
    let pg2 = {
        let schema = super::pg::BenchSchema::create(url)?;
        let store = schema.url().to_owned();
        let nodes: [&[&str]; 2] = [&["--store", &store], &["--store", &store]];
        one_run(&exe, dir, &nodes, &key, events, Some(&store), progress)?
    };
    figures.push(figure(
        "cluster",
        "pg2_rate",
        "the same on PostgreSQL, 2 nodes on one schema (ratio to 1 node's)",
        pg2.rate,
        "deliveries/s",
        Some(pg2.rate / pg1.rate.max(1e-9)),
    ));
    figures.push(figure(
        "cluster",
        "pg2_share",
        "2 nodes: the smaller node's share of the attempts (even = 0.5)",
        pg2.share,
        "share",
        None,
    ));
    for (id, name, r) in [
        (
            "duck_cpu",
            "CPU per delivery, DuckDB, 1 node (serve processes)",
            &duck,
        ),
        (
            "pg1_cpu",
            "CPU per delivery, PostgreSQL, 1 node (server not counted)",
            &pg1,
        ),
        (
            "pg2_cpu",
            "CPU per delivery, PostgreSQL, 2 nodes (server not counted)",
            &pg2,
        ),
    ] {
        let ratio = (id != "duck_cpu")
            .then(|| r.cpu_per.as_secs_f64() / duck.cpu_per.as_secs_f64().max(1e-9));
        figures.push(figure(
            "cluster",
            id,
            name,
            r.cpu_per.as_secs_f64() * 1e6,
            "µs",
            ratio,
        ));
    }
    Ok(figures)
}

/// The `hookledger` binary to start as `serve` children.
fn serve_exe(o: &Options) -> Result<PathBuf> {
    if let Some(exe) = &o.exe {
        return Ok(exe.clone());
    }
    std::env::current_exe()
        .ok()
        .filter(|e| e.file_stem().is_some_and(|s| s == "hookledger"))
        .ok_or_else(|| {
            LedgerError::Invalid("--scenario cluster starts `hookledger serve` children: run it from the hookledger binary".into())
        })
}

/// Starts one node per entry of `stores`, delivers `events` × [`WEBHOOKS`] through them, and
/// stops them. `pg` is the schema's URL, to wait for every node's leases.
fn one_run(
    exe: &Path,
    dir: &Path,
    stores: &[&[&str]],
    key: &str,
    events: usize,
    pg: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Run> {
    let label = format!(
        "{} node(s) {}",
        stores.len(),
        if pg.is_some() { "PostgreSQL" } else { "DuckDB" }
    );
    let nodes = stores
        .iter()
        .enumerate()
        .map(|(i, s)| Node::start(exe, s, key, &dir.join(format!("cluster-node-{i}.log"))))
        .collect::<Result<Vec<_>>>()?;
    if let (Some(url), true) = (pg, nodes.len() > 1) {
        wait_for_owners(url, nodes.len())?;
    }
    let tape = Arc::new(Tape::new(events, WEBHOOKS, 0.0, Duration::ZERO));
    let cpu_before: Vec<Duration> = nodes.iter().map(Node::cpu).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let (elapsed, attempts) = super::runtime()?.block_on(drive(&bases, tape, events))?;
    let cpu: Duration = nodes
        .iter()
        .zip(&cpu_before)
        .map(|(n, b)| n.cpu().saturating_sub(*b))
        .sum();
    let deliveries = (events * WEBHOOKS) as u64;
    let total: u64 = attempts.iter().sum();
    if total != deliveries {
        return Err(LedgerError::Invalid(format!(
            "cluster bench ({label}): {total} attempts for {deliveries} deliveries"
        )));
    }
    let share = attempts.iter().copied().min().unwrap_or(0) as f64 / total.max(1) as f64;
    let r = rate(deliveries, elapsed);
    progress(&format!(
        "cluster: {label}: {r:.0} deliveries/s, attempts per node {attempts:?}"
    ));
    Ok(Run {
        rate: r,
        cpu_per: cpu / deliveries.max(1) as u32,
        share,
    })
}

/// Waits until each of `n` nodes holds its share of the partitions (a joining node gets it
/// within a few lease rounds), so that the run measures the spread, not the hand-over.
fn wait_for_owners(url: &str, n: usize) -> Result<()> {
    let url = url.to_owned();
    std::thread::spawn(move || -> Result<()> {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = c.query(
                "SELECT count(*) FROM partition_leases WHERE expires_at > now() GROUP BY node_id",
                &[],
            )?;
            let fair = (crate::cluster::PARTITIONS as usize / n) as i64;
            if rows.len() >= n && rows.iter().all(|r| r.get::<_, i64>(0) >= fair) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LedgerError::Invalid(format!(
                    "cluster bench: {n} nodes never all held leases"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .map_err(|_| LedgerError::Invalid("the lease thread panicked".into()))?
}

/// Registers the webhooks, publishes, waits for every delivery; answers the time from the
/// first publish and each node's attempts.
async fn drive(bases: &[String], tape: Arc<Tape>, events: usize) -> Result<(Duration, Vec<u64>)> {
    let hooks = receiver::start(tape.clone()).await?;
    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(PUBLISHERS)
        .build()
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let http = Http {
        client,
        bases: bases.to_vec(),
    };
    for w in 0..WEBHOOKS {
        let body = serde_json::json!({ "url": format!("{hooks}/hook/{w}") });
        http.expect(0, "/v1/webhooks", &body, 201).await?;
    }
    for node in 0..bases.len() {
        http.until(node, "/v1/webhooks", |v| {
            v["data"].as_array().map_or(0, Vec::len) == WEBHOOKS
        })
        .await?;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let payload: serde_json::Value = serde_json::from_str(BODY).unwrap_or_default();
    let workers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (http, tape, next, payload) =
                (http.clone(), tape.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return Ok::<_, LedgerError>(());
                    }
                    tape.mark_published(i);
                    let body = serde_json::json!({
                        "event_id": tape.event_id(i).0.to_string(),
                        "event_type": "order.created",
                        "payload": payload,
                    });
                    http.expect(i % http.bases.len(), "/v1/events", &body, 202)
                        .await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| LedgerError::Invalid(e.to_string()))??;
    }
    let deliveries = (events * WEBHOOKS) as u64;
    http.until(0, "/v1/state", |v| {
        v["counts"]["delivered"].as_u64() == Some(deliveries)
    })
    .await?;
    let elapsed = started.elapsed();
    let mut attempts = Vec::new();
    for node in 0..bases.len() {
        attempts.push(http.attempts(node).await?);
    }
    Ok((elapsed, attempts))
}

/// The bench's HTTP client for its nodes.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    bases: Vec<String>,
}

impl Http {
    async fn expect(
        &self,
        node: usize,
        path: &str,
        body: &serde_json::Value,
        status: u16,
    ) -> Result<()> {
        let r = self
            .client
            .post(format!("{}{path}", self.bases[node]))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
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
    async fn until(
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
                    "cluster bench: GET {path} stalled at {}",
                    last.0
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The attempts `node` made itself, from its `/metrics`.
    async fn attempts(&self, node: usize) -> Result<u64> {
        let text = self
            .get(node, "/metrics")
            .await?
            .text()
            .await
            .unwrap_or_default();
        Ok(text
            .lines()
            .filter(|l| l.starts_with("hookledger_attempts_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}
