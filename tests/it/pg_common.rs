//! The PostgreSQL tests' database: `HOOKLEDGER_TEST_PG_URL` names a server (`.ci/postgres`
//! starts one), and each test gets a schema of its own on it (through the URL's
//! `options=-csearch_path=...`), so that tests run in parallel. Without the variable a test
//! says so loudly on stderr and passes as skipped, except under `CI=true`, where it fails:
//! CI must not go green by skipping.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that names the test server.
pub const PG_URL: &str = "HOOKLEDGER_TEST_PG_URL";

/// The server's URL, or `None` (after a loud message) when the tests must skip.
pub fn server(test: &str) -> Option<String> {
    match std::env::var(PG_URL).ok().filter(|u| !u.trim().is_empty()) {
        Some(url) => Some(url),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {PG_URL} is not set, and under CI=true a PostgreSQL test may not skip (.ci/run starts one with .ci/postgres)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: set {PG_URL} (e.g. eval \"$(.ci/postgres start)\") to run \
                 the PostgreSQL tests ***\n"
            );
            None
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty schema on the server, and the URL that puts a connection in it. (Made on a
/// plain thread: the sync client cannot run inside an async test's runtime.)
pub fn fresh_schema(server: &str) -> String {
    let server = server.to_owned();
    std::thread::spawn(move || create_schema(&server))
        .join()
        .expect("create the test schema")
}

fn create_schema(server: &str) -> String {
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    );
    let mut admin =
        postgres::Client::connect(server, postgres::NoTls).expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .expect("create the test schema");
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-csearch_path%3D{name}")
}

/// A direct connection to the schema `url` names, for tests that play the attacker.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to the test schema")
}

/// `let url = pg_schema!("test name");` or return (skipped) when no server is set.
macro_rules! pg_schema {
    ($test:expr) => {
        match crate::pg_common::server($test) {
            Some(server) => crate::pg_common::fresh_schema(&server),
            None => return,
        }
    };
}

/// The main key every test node seals with (nodes of one ledger must share one).
pub const NODE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// `hookledger serve` on the PostgreSQL ledger `url` as a child process named `name` (its log
/// in `dir`), with loopback receivers allowed and the retry `schedule`.
pub fn node(
    url: &str,
    dir: &std::path::Path,
    name: &str,
    schedule: &str,
) -> crate::serve_child::ServeChild {
    let env = [
        ("HOOKLEDGER_DATABASE_URL", url),
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_SECRET_KEY", NODE_KEY),
        ("HOOKLEDGER_RETRY_SCHEDULE", schedule),
    ];
    crate::serve_child::ServeChild::start(
        &dir.join(format!("{name}.unused.duckdb")),
        &env,
        &dir.join(format!("{name}.log")),
    )
}

/// [`node`], started from an async test (on a blocking thread).
pub async fn start_node(
    url: &str,
    dir: &std::path::Path,
    name: &str,
    schedule: &str,
) -> crate::serve_child::ServeChild {
    let (url, dir, name, schedule) = (
        url.to_owned(),
        dir.to_owned(),
        name.to_owned(),
        schedule.to_owned(),
    );
    tokio::task::spawn_blocking(move || node(&url, &dir, &name, &schedule))
        .await
        .unwrap()
}
