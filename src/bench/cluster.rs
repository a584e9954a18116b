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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::receiver::{self, Tape};
use super::serve::{publish, serve_exe, Http, Node, Pace, PUBLISHERS};
use super::{figure, rate, Figure, Options};
use crate::error::{LedgerError, Result};

/// Webhooks per run: each event fans out to all of them.
pub const WEBHOOKS: usize = 16;

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
    let exe = serve_exe(o, "cluster")?;
    let events = (o.events / 40).max(50);
    let key = super::serve::secret_key();
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
    let http = Http::new(bases.to_vec())?;
    http.register(&hooks, WEBHOOKS, None).await?;
    let started = Instant::now();
    publish(&http, &tape, events, Pace::Closed(PUBLISHERS)).await?;
    http.until_delivered((events * WEBHOOKS) as u64).await?;
    let elapsed = started.elapsed();
    let mut attempts = Vec::new();
    for node in 0..bases.len() {
        attempts.push(http.attempts(node).await?);
    }
    Ok((elapsed, attempts))
}
