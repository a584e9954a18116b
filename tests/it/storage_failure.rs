//! Storage failures: the disk fills up (or the file stops growing) under a running
//! `hookledger serve`, and DuckDB gives up on a database after a commit it could not roll back.
//!
//! - Disk full: the database lives on a small tmpfs, which needs `mount` (root). The test is
//!   `#[ignore]`d unless the build ran under `CI=true` (see `build.rs`), so elsewhere the
//!   runner's summary lists it as ignored (run it as root with `--ignored`); wherever it runs, a
//!   tmpfs that cannot be mounted fails it. The same scenario also runs for any user with
//!   another fault: a file-size limit (`RLIMIT_FSIZE`, lowered on the running server with
//!   `prlimit`). Either way: publishes answer 503 `storage_unavailable` while the disk fails,
//!   the outcomes of attempts answered meanwhile wait (the server logs each refused outcome
//!   commit, and nothing is recorded `delivered` until space is back), nothing answered 2xx is
//!   lost, the same process accepts publishes again once space is back and delivers what was
//!   stuck, and `verify` passes before and after the stop.
//! - Why every outcome is refused, not only most: a full tmpfs still takes writes into the
//!   unused rest of a file's last page, so a commit smaller than that rest goes in. The
//!   scenario stops publishing once publishes are refused, so the rest is smaller than one
//!   publish commit (about 1.3 KB of WAL here); the receiver answers each first attempt 500
//!   with a kilobyte body, which the attempt's record keeps, so that every outcome commit
//!   (about 1.8 KB) is larger than a publish and cannot fit. With 200s and empty bodies an
//!   outcome (about 0.7 KB) fitted, and whether it did depended on how earlier rows fell
//!   on pages.
//! - Invalidated database: DuckDB's own debug switches make a commit fail and its rollback
//!   fail too, which invalidates the database instance; the writer reopens the file and
//!   continues without a restart.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookledger::clock::SystemClock;
use hookledger::ledger::Ledger;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::LedgerError;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::*;
use crate::serve_child::*;

/// The bound on waiting for the server to take publishes again, or to drain.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

#[test]
fn an_invalidated_database_is_reopened_and_folded_again_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("invalidated.duckdb");
    let ledger = Ledger::open(&db, Arc::new(SystemClock)).unwrap();
    let now = || chrono::Utc::now();
    ledger
        .commit_blocking(publish_commit(1, &[webhook(1)], now()))
        .unwrap();
    // Database-wide switches: the next commit fails after writing, and its rollback fails.
    ledger
        .reader()
        .unwrap()
        .connection()
        .unwrap()
        .execute_batch(
            "SET debug_force_commit_failure = true; SET debug_force_commit_revert_failure = true",
        )
        .unwrap();
    let err = ledger
        .commit_blocking(publish_commit(2, &[webhook(1)], now()))
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::StorageUnavailable { .. }),
        "{err}"
    );
    assert!(ledger.shared().storage_error().is_some());
    // The next commit reopens the file (a fresh instance, without the switches) and goes in.
    let receipt = ledger
        .commit_blocking(publish_commit(3, &[webhook(1)], now()))
        .unwrap();
    assert!(ledger.shared().storage_error().is_none());
    let verdict = ledger.verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(verdict.records, *receipt.seqs.last().unwrap());
    ledger.close();
    let store = DuckStore::open(&db, OpenMode::ReadOnly).unwrap();
    let verdict = hookledger::ledger::verify::verify(&store, None).unwrap();
    assert!(verdict.ok(), "{verdict}");
}

/// How the disk is made to fail under the running server.
enum Fault {
    /// Fill the tmpfs the database lives on with a filler file; delete it to recover.
    FillTmpfs { filler: PathBuf },
    /// Lower the server's file-size limit to the WAL's current size; raise it to recover.
    FileSizeLimit { pid: i32 },
}

impl Fault {
    fn inject(&self, db: &Path) {
        match self {
            Fault::FillTmpfs { filler } => {
                let mut f = std::fs::File::create(filler).unwrap();
                for chunk in [64 * 1024, 4096, 512] {
                    let buf = vec![0u8; chunk];
                    while f.write_all(&buf).is_ok() {}
                }
                let _ = f.sync_all();
            }
            Fault::FileSizeLimit { pid } => {
                let wal = db.with_extension("duckdb.wal");
                let size = std::fs::metadata(wal).map_or(0, |m| m.len());
                set_file_size_limit(*pid, size.max(1));
            }
        }
    }

    fn clear(&self) {
        match self {
            Fault::FillTmpfs { filler } => std::fs::remove_file(filler).unwrap(),
            Fault::FileSizeLimit { pid } => set_file_size_limit(*pid, libc::RLIM_INFINITY),
        }
    }
}

/// `prlimit(pid, RLIMIT_FSIZE)`: the soft limit only, so that it can be raised again.
fn set_file_size_limit(pid: i32, bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A receiver that holds every request until `open` turns true, then records its
/// `webhook-id`. It answers an id's first attempt 500 with a kilobyte body (see the module doc
/// for why) and later ones 200. The test opens it once the disk fails, so that the first
/// attempts are in flight across the fault and their outcomes must wait for the disk.
async fn held_receiver() -> (String, Seen, watch::Sender<bool>) {
    let seen = Seen::default();
    let log = seen.clone();
    let (open, opened) = watch::channel(false);
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let (log, mut opened) = (log.clone(), opened.clone());
            async move {
                let _ = opened.wait_for(|open| *open).await;
                let id = headers.get("webhook-id").unwrap().to_str().unwrap();
                let mut log = log.lock().unwrap();
                let first = !log.iter().any(|seen| seen == id);
                log.push(id.to_owned());
                if first {
                    // Random, so that no layer can make it smaller than it is.
                    let body: String = (0..40)
                        .map(|_| uuid::Uuid::new_v4().simple().to_string())
                        .collect();
                    (StatusCode::INTERNAL_SERVER_ERROR, body)
                } else {
                    (StatusCode::OK, String::new())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen, open)
}

async fn publish(client: &reqwest::Client, base: &str) -> (String, u16, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({ "event_id": id, "event_type": "order.created", "payload": { "id": id } });
    let (status, answer) = post_json(client, &format!("{base}/v1/events"), &body).await;
    (id, status, answer)
}

/// `RUST_LOG` is set so that the engine's warning about a refused outcome commit, which the
/// scenario waits for, is logged whatever the runner's environment says.
const SERVE_ENV: [(&str, &str); 4] = [
    ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
    ("HOOKLEDGER_RETRY_SCHEDULE", "100ms,200ms,400ms"),
    // Far above how long the first attempts are held (the receiver opens once the disk fails).
    ("HOOKLEDGER_ATTEMPT_TIMEOUT", "120s"),
    ("RUST_LOG", "info"),
];

/// What the engine logs (to serve's stderr) each time the disk refuses an attempt's outcome.
const OUTCOME_REFUSED: &str = "could not record an attempt's outcome; retrying";

/// Waits until serve's log has an [`OUTCOME_REFUSED`] line for every one of `events`: each of
/// their attempts was answered and its outcome commit refused.
async fn until_outcomes_refused(log: &Path, events: &[String]) {
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let refused = |id: &String| {
            text.lines()
                .any(|l| l.contains(OUTCOME_REFUSED) && l.contains(id.as_str()))
        };
        if events.iter().all(refused) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every outcome commit was refused: {:?}\nserve log:\n{text}",
            events.iter().filter(|id| !refused(id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scenario both faults run: see the module doc.
async fn disk_fails_under_serve(db: &Path, log: &Path, make_fault: impl FnOnce(i32) -> Fault) {
    let client = reqwest::Client::new();
    let (url, seen, open) = held_receiver().await;
    let (db2, log2) = (db.to_owned(), log.to_owned());
    let server = tokio::task::spawn_blocking(move || ServeChild::start(&db2, &SERVE_ENV, &log2))
        .await
        .unwrap();
    let base = server.base.clone();
    register(&client, &base, &url).await;
    let mut first = Vec::new();
    for _ in 0..5 {
        let (id, status, answer) = publish(&client, &base).await;
        assert_eq!(status, 202, "{answer}");
        first.push(id);
    }
    let mut acked: HashSet<String> = first.iter().cloned().collect();

    // The disk fails while those five are in flight (the receiver holds them).
    let fault = make_fault(server.pid());
    fault.inject(db);
    let mut refused = HashSet::new();
    let mut unhealthy = false;
    for _ in 0..200 {
        let (id, status, answer) = publish(&client, &base).await;
        match status {
            // Small commits may still fit in the last page the file already has.
            202 => assert!(acked.insert(id)),
            503 => {
                assert_eq!(answer["error"]["code"], "storage_unavailable", "{answer}");
                let message = answer["error"]["message"].as_str().unwrap();
                assert!(message.starts_with("storage unavailable"), "{message}");
                refused.insert(id);
                let health = call(
                    &client,
                    reqwest::Method::GET,
                    &format!("{base}/healthz"),
                    None,
                )
                .await
                .unwrap();
                unhealthy |= health.0 == 503;
                if refused.len() >= 5 {
                    break;
                }
            }
            other => panic!("publish answered {other} while the disk failed: {answer}"),
        }
    }
    assert!(refused.len() >= 5, "the full disk never refused a publish");
    assert!(unhealthy, "/healthz never reported the storage failure");

    // Keep the disk failing until the first five were answered and the engine tried, and
    // failed, to record each outcome: only then does `delivered == 0` say that the outcomes
    // wait for the disk (rather than that they were not committed yet).
    open.send_replace(true);
    let deadline = Instant::now() + RECOVERY_BOUND;
    while seen.lock().unwrap().iter().collect::<HashSet<_>>().len() < 5 {
        assert!(Instant::now() < deadline, "the first five never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_outcomes_refused(log, &first).await;
    let (_, state) = get(&client, &format!("{base}/v1/state")).await;
    // Still in their first attempt: no outcome of theirs, failure or success, is recorded.
    let counts = &state["counts"];
    assert_eq!(counts["delivered"], 0, "{counts}");
    assert!(counts["in_attempt"].as_u64().unwrap() >= 5, "{counts}");

    // Space is back: the same process takes publishes again and delivers what waited.
    fault.clear();
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let (id, status, answer) = publish(&client, &base).await;
        if status == 202 {
            acked.insert(id);
            break;
        }
        assert_eq!(status, 503, "{answer}");
        refused.insert(id);
        assert!(
            Instant::now() < deadline,
            "publishes never recovered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let (id, status, answer) = publish(&client, &base).await;
        assert_eq!(status, 202, "{answer}");
        acked.insert(id);
    }
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let (_, state) = get(&client, &format!("{base}/v1/state")).await;
        let counts = &state["counts"];
        if counts["pending"] == 0 && counts["in_attempt"] == 0 {
            assert_eq!(counts["delivered"], acked.len(), "{counts}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = call(
        &client,
        reqwest::Method::GET,
        &format!("{base}/healthz"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(health.0, 200, "{:?}", health.1);
    assert_api_verify(&client, &base, "after the disk came back").await;
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert_cli_verify(db, "after the stop");

    let store = DuckStore::open(db, OpenMode::ReadOnly).unwrap();
    let stored: HashSet<String> = store
        .connection()
        .prepare("SELECT event_id::VARCHAR FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, acked, "exactly the acknowledged events are stored");
    let delivered: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        delivered, acked,
        "every acknowledged event reached the receiver"
    );
    eprintln!(
        "storage failure: {} publishes acknowledged, {} refused with 503 while the disk failed",
        acked.len(),
        refused.len()
    );
}

/// Root only (tmpfs): ignored unless built under `CI=true`; see the module doc.
#[cfg_attr(
    not(hookledger_ci),
    ignore = "mounts a tmpfs, which needs root: runs under CI=true; elsewhere run it as root with --ignored"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_503_and_the_process_recovers_when_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "8m").unwrap_or_else(|why| {
        panic!("cannot mount a tmpfs ({why}): this test needs root (CAP_SYS_ADMIN)")
    });
    let db = mnt.join("full.duckdb");
    let log = dir.path().join("serve-stderr.log");
    let filler = mnt.join("filler");
    disk_fails_under_serve(&db, &log, |_| Fault::FillTmpfs { filler }).await;
}

/// The same scenario for any user: the server's file-size limit stands in for the full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_grow_refuses_publishes_with_503_and_recovers_when_it_can() {
    // Writes past the limit then fail with EFBIG instead of killing the server with SIGXFSZ
    // (an ignored signal stays ignored in the child across exec).
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("limited.duckdb");
    let log = dir.path().join("serve-stderr.log");
    disk_fails_under_serve(&db, &log, |pid| Fault::FileSizeLimit { pid }).await;
}
