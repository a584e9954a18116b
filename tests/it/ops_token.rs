//! The generated API token is stored as a SHA-256 digest only: printed once at first start,
//! it authenticates after a restart, and the raw database file never holds it; a database
//! whose setting holds a token in plaintext (written before digests) has it replaced by its
//! digest at the next start, and that token keeps working.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::SystemClock;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::store::Store;

use crate::ops_common::contains_bytes;

/// `serve` without `HOOKLEDGER_API_TOKEN`: the child, its address and what it printed before
/// listening.
fn serve(db: &Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("HOOKLEDGER_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let status = child.wait();
            panic!("serve exited before listening: {status:?}, printed {seen:?}");
        };
        if let Some(addr) = line.strip_prefix("listening on ") {
            // Keep draining stdout so the child never blocks on it.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, addr.to_owned(), seen);
        }
        seen.push(line);
    }
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

async fn status_with(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/webhooks"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn setting(db: &Path) -> Option<String> {
    let ledger = Ledger::open(db, Arc::new(SystemClock)).unwrap();
    ledger.reader().unwrap().setting("api_token").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_printed_once_and_stored_as_a_digest_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.duckdb");
    let (child, base, printed) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || serve(&db)
    })
    .await
    .unwrap();
    let line = printed
        .iter()
        .find(|l| l.contains("shown once"))
        .unwrap_or_else(|| panic!("no token printed: {printed:?}"));
    let token = line.rsplit(' ').next().unwrap().to_owned();
    assert!(token.starts_with("hl_"), "{line}");
    assert_eq!(status_with(&base, &token).await, 200);
    assert_eq!(status_with(&base, "hl_wrong").await, 401);
    stop(child);

    let stored = setting(&db).unwrap();
    assert!(
        stored.starts_with("sha256:") && !stored.contains(&token),
        "{stored}"
    );
    let bytes = std::fs::read(&db).unwrap();
    assert!(
        !contains_bytes(&bytes, token.as_bytes()),
        "the token is in the file"
    );
    let wal = db.with_extension("duckdb.wal");
    if let Ok(wal) = std::fs::read(wal) {
        assert!(
            !contains_bytes(&wal, token.as_bytes()),
            "the token is in the WAL"
        );
    }

    // After a restart: not printed again, and it still authenticates.
    let (child, base, printed) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || serve(&db)
    })
    .await
    .unwrap();
    assert!(!printed.iter().any(|l| l.contains(&token)), "{printed:?}");
    assert_eq!(status_with(&base, &token).await, 200);
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_token_of_an_older_database_is_replaced_by_its_digest_and_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.duckdb");
    let token = "hl_an0lder0token0stored0in0plaintext0000000000000000";
    {
        let ledger = Ledger::open(&db, Arc::new(SystemClock)).unwrap();
        ledger
            .commit(Commit {
                settings: vec![("api_token".into(), token.into())],
                ..Commit::default()
            })
            .await
            .unwrap();
    }
    let (child, base, printed) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || serve(&db)
    })
    .await
    .unwrap();
    assert!(
        printed.iter().any(|l| l.contains("replaced by its digest")),
        "{printed:?}"
    );
    assert_eq!(status_with(&base, token).await, 200);
    stop(child);
    let stored = setting(&db).unwrap();
    assert!(stored.starts_with("sha256:") && stored != token, "{stored}");
}
