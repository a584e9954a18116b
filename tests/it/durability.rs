//! Durability under SIGKILL: a child process appends from several threads and prints each
//! commit acknowledgement; the parent kills it without warning, reopens the file, and finds
//! every acknowledged record, every commit whole (both records of an event or neither), the
//! chain intact and `verify` passing. Three kill/reopen cycles run on the same file, each child
//! continuing the ledger the previous one left behind.
//!
//! The child is this test binary re-executed with `--ignored` and a filter that runs only
//! [`child_appender`]: a helper, not a test, so it is `#[ignore]`d (the runner lists it as
//! ignored instead of counting it as a pass) and fails if run without the environment the
//! parent sets.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookledger::clock::{Clock, SystemClock};
use hookledger::ledger::{Ledger, LedgerOptions};
use uuid::Uuid;

use crate::common::*;

const DB_VAR: &str = "HOOKLEDGER_TEST_CHILD_DB";
const CYCLE_VAR: &str = "HOOKLEDGER_TEST_CHILD_CYCLE";
/// Set: the child stores a projection checkpoint every this many records.
const CHECKPOINT_VAR: &str = "HOOKLEDGER_TEST_CHILD_CHECKPOINT_EVERY";
const THREADS: u128 = 4;
const ACKS_BEFORE_KILL: usize = 300;
const CYCLES: u128 = 3;
/// The bound on one cycle (open, then 300 acks); far above what it takes.
const CYCLE_BOUND: Duration = Duration::from_secs(120);

/// The child: publishes new events to two webhooks from [`THREADS`] threads until killed,
/// printing `acked <last seq> event <n>` after each durable receipt.
#[test]
#[ignore = "child-process helper of durability::acknowledged_commits_survive_sigkill_and_the_chain_holds_after_each_restart, which runs it"]
fn child_appender() {
    let db = std::env::var(DB_VAR).unwrap_or_else(|_| {
        panic!("a child-process helper, not a test: {DB_VAR} is set by the test that spawns it")
    });
    let cycle: u128 = std::env::var(CYCLE_VAR).unwrap().parse().unwrap();
    let options = LedgerOptions {
        checkpoint_every: std::env::var(CHECKPOINT_VAR)
            .ok()
            .map(|v| v.parse().unwrap())
            .or(LedgerOptions::default().checkpoint_every),
        ..LedgerOptions::default()
    };
    let clock = Arc::new(SystemClock);
    let ledger = Arc::new(Ledger::open_with(Path::new(&db), clock, &options).unwrap());
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let webhooks = [webhook(1), webhook(2)];
                for i in 0.. {
                    let n = cycle * 10_000_000 + thread * 1_000_000 + i;
                    let commit = publish_commit(n, &webhooks, SystemClock.now());
                    let receipt = ledger.commit_blocking(commit).unwrap();
                    let last = receipt.seqs.last().unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {last} event {n}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Starts the child on `db` and returns it with a channel of its stdout lines.
fn spawn_child(
    db: &Path,
    cycle: u128,
    stderr: &Path,
    checkpoint_every: Option<u64>,
) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(every) = checkpoint_every {
        command.env(CHECKPOINT_VAR, every.to_string());
    }
    let mut child = command
        .args([
            "durability::child_appender",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_VAR, db)
        .env(CYCLE_VAR, cycle.to_string())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Parses `acked <seq> event <n>`; other lines (the test harness's) are `None`.
fn parse_ack(line: &str) -> Option<(u64, u128)> {
    let rest = line.strip_prefix("acked ")?;
    let (seq, n) = rest.split_once(" event ")?;
    Some((seq.parse().unwrap(), n.parse().unwrap()))
}

/// One cycle: run the child until it has acknowledged enough commits, SIGKILL it, and return
/// every acknowledgement it printed (seq -> event), including those still in the pipe.
fn run_and_kill(
    db: &Path,
    cycle: u128,
    stderr: &Path,
    checkpoint_every: Option<u64>,
) -> BTreeMap<u64, u128> {
    let (mut child, lines) = spawn_child(db, cycle, stderr, checkpoint_every);
    let deadline = Instant::now() + CYCLE_BOUND;
    let mut acks = BTreeMap::new();
    let mut other = Vec::new();
    while acks.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => match parse_ack(&line) {
                Some((seq, n)) => assert!(acks.insert(seq, n).is_none(), "seq {seq} acked twice"),
                None => other.push(line),
            },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cycle {cycle}: {} acks before {e:?}\nchild stdout: {other:#?}\nchild stderr: {}",
                    acks.len(),
                    std::fs::read_to_string(stderr).unwrap_or_default()
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no close, no flush runs in the child
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");
    // The pipe may still hold acknowledgements printed just before the kill: they count too.
    for line in lines.iter() {
        if let Some((seq, n)) = parse_ack(&line) {
            assert!(acks.insert(seq, n).is_none(), "seq {seq} acked twice");
        }
    }
    acks
}

#[test]
fn acknowledged_commits_survive_sigkill_and_the_chain_holds_after_each_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.duckdb");
    let stderr = dir.path().join("child-stderr.log");
    let mut all_acks = BTreeMap::new();
    let mut last_seq_before = 0;
    for cycle in 1..=CYCLES {
        let acks = run_and_kill(&db, cycle, &stderr, None);
        assert!(acks.len() >= ACKS_BEFORE_KILL);
        assert!(
            acks.keys().all(|s| *s > last_seq_before),
            "cycle {cycle} continues after seq {last_seq_before}"
        );
        all_acks.extend(acks);

        // The child is gone, so the file lock is free: reopen, which rebuilds from the log.
        let ledger = Ledger::open(&db, Arc::new(SystemClock)).unwrap();
        let last_seq = ledger.state().last_seq();
        let max_acked = *all_acks.keys().last().unwrap();
        assert!(
            max_acked <= last_seq,
            "cycle {cycle}: seq {max_acked} was acknowledged but the log ends at {last_seq}"
        );
        let verdict = ledger.verify().unwrap();
        assert!(verdict.ok(), "cycle {cycle}: {verdict}");
        assert_eq!(verdict.records, last_seq);

        let reader = ledger.reader().unwrap();
        let conn = reader.connection().unwrap();
        let stored: BTreeMap<u64, Uuid> = conn
            .prepare("SELECT seq, event_id::VARCHAR FROM webhook_deliveries")
            .unwrap()
            .query_map([], |r| {
                let id: String = r.get(1)?;
                Ok((r.get::<_, i64>(0)? as u64, Uuid::parse_str(&id).unwrap()))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (seq, n) in &all_acks {
            assert_eq!(
                stored.get(seq),
                Some(&event(*n).0),
                "cycle {cycle}: acknowledged seq {seq} (event {n}) is not in the file"
            );
        }
        // Every commit is whole: each event has both its enqueued records, and its body row.
        let torn: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT event_id FROM webhook_deliveries \
                 GROUP BY event_id HAVING count(*) <> 2)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(torn, 0, "cycle {cycle}: a commit was torn");
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events as u64 * 2, last_seq, "cycle {cycle}");
        drop(reader);
        ledger.close();
        last_seq_before = last_seq;
    }
}

/// SIGKILL while checkpoints are being written (the child stores one every 25 records, so one
/// is nearly always in flight): the next start uses a previous checkpoint or the full fold,
/// its state is exactly the full fold's, and every acknowledged record is there.
#[test]
fn sigkill_while_a_checkpoint_is_written_loses_nothing_and_the_next_start_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.duckdb");
    let stderr = dir.path().join("child-stderr.log");
    let mut all_acks = BTreeMap::new();
    let mut from_checkpoint = 0;
    for cycle in 1..=CYCLES {
        all_acks.extend(run_and_kill(&db, cycle, &stderr, Some(25)));
        let clock = Arc::new(SystemClock);
        let no_writes = LedgerOptions {
            checkpoint_every: None,
            ..LedgerOptions::default()
        };
        let ledger = Ledger::open_with(&db, clock.clone(), &no_writes).unwrap();
        let start = ledger.rebuild_stats().start.clone();
        assert!(
            start.ignored.is_empty(),
            "cycle {cycle}: {:?}",
            start.ignored
        );
        from_checkpoint += u32::from(start.checkpoint.is_some());
        let state = ledger.state();
        let verdict = ledger.verify().unwrap();
        assert!(verdict.ok(), "cycle {cycle}: {verdict}");
        ledger.close();
        let full = LedgerOptions {
            use_checkpoints: false,
            ..no_writes
        };
        let ledger = Ledger::open_with(&db, clock, &full).unwrap();
        assert_eq!(
            ledger.state(),
            state,
            "cycle {cycle}: checkpoint start = full fold"
        );
        let max_acked = *all_acks.keys().last().unwrap();
        assert!(
            max_acked <= state.last_seq(),
            "cycle {cycle}: acked {max_acked} is missing"
        );
        let reader = ledger.reader().unwrap();
        for (seq, n) in &all_acks {
            let id: String = reader
                .connection()
                .unwrap()
                .query_row(
                    "SELECT event_id::VARCHAR FROM webhook_deliveries WHERE seq = ?",
                    [*seq as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(id, event(*n).0.to_string(), "cycle {cycle}: seq {seq}");
        }
        drop(reader);
        ledger.close();
    }
    assert!(from_checkpoint > 0, "no start used a checkpoint");
}
