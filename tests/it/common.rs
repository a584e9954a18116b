//! Shared test helpers: a ledger on a temp-dir DuckDB file with a manual clock, and builders
//! for the commits a scenario needs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use chrono::Duration;
use hookledger::clock::ManualClock;
use hookledger::ids::{DeliveryKey, EventId, WebhookId};
use hookledger::ledger::record::{ErrorClass, Failure, NewRecord, RecordBody, Terminal, Timestamp};
use hookledger::ledger::writer::{Commit, NewEvent, Receipt};
use hookledger::ledger::{Ledger, LedgerOptions};
use hookledger::Result;
use tempfile::TempDir;
use uuid::Uuid;

/// A ledger on a fresh database file, driven by a manual clock.
pub struct TestLedger {
    pub dir: TempDir,
    pub path: PathBuf,
    pub clock: ManualClock,
    pub ledger: Option<Ledger>,
}

impl TestLedger {
    pub fn new() -> Self {
        Self::with_options(&LedgerOptions::default())
    }

    /// A ledger on a fresh file with these options (checkpoints, bucket size).
    pub fn with_options(options: &LedgerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.duckdb");
        let clock = ManualClock::at_epoch();
        let ledger =
            Ledger::open_with(&path, Arc::new(clock.clone()), options).expect("open ledger");
        Self {
            dir,
            path,
            clock,
            ledger: Some(ledger),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        self.ledger.as_ref().expect("ledger is open")
    }

    /// Closes the ledger (the writer finishes) and opens the file again: a full rebuild.
    pub fn reopen(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.close();
        }
        self.ledger = Some(Ledger::open(&self.path, Arc::new(self.clock.clone())).expect("reopen"));
    }

    /// Closes the ledger and opens the file again with `options`.
    pub fn reopen_with(&mut self, options: &LedgerOptions) {
        self.close();
        let clock = Arc::new(self.clock.clone());
        self.ledger = Some(Ledger::open_with(&self.path, clock, options).expect("reopen"));
    }

    pub fn close(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.close();
        }
    }

    pub fn commit(&self, commit: Commit) -> Result<Receipt> {
        self.ledger().commit_blocking(commit)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(Duration::seconds(seconds));
    }

    pub fn now(&self) -> Timestamp {
        use hookledger::clock::Clock;
        self.clock.now()
    }

    /// Publishes event `n` to `webhooks`: the event plus one `enqueued` record each, due now.
    pub fn publish(&self, n: u128, webhooks: &[WebhookId]) -> Result<Receipt> {
        self.commit(publish_commit(n, webhooks, self.now()))
    }

    /// Appends one record for `key`.
    pub fn append(&self, key: DeliveryKey, body: RecordBody) -> Result<Receipt> {
        self.commit(Commit {
            records: vec![NewRecord::new(key, body)],
            ..Commit::default()
        })
    }
}

pub fn webhook(n: u128) -> WebhookId {
    WebhookId(Uuid::from_u128(0xAAAA_0000 + n))
}

pub fn event(n: u128) -> EventId {
    EventId(Uuid::from_u128(0xEEEE_0000 + n))
}

pub fn key(w: u128, e: u128) -> DeliveryKey {
    DeliveryKey::new(webhook(w), event(e))
}

pub fn publish_commit(n: u128, webhooks: &[WebhookId], now: Timestamp) -> Commit {
    Commit {
        events: vec![NewEvent {
            event_id: event(n),
            event_type: "order.created".into(),
            body: format!("{{\"order\":{n}}}").into_bytes(),
            ..Default::default()
        }],
        records: webhooks
            .iter()
            .map(|w| {
                NewRecord::new(
                    DeliveryKey::new(*w, event(n)),
                    RecordBody::Enqueued { due_at: now },
                )
            })
            .collect(),
        ..Commit::default()
    }
}

pub fn attempted(attempt: u16) -> RecordBody {
    RecordBody::Attempted { attempt }
}

pub fn delivered(attempt: u16) -> RecordBody {
    RecordBody::Delivered {
        attempt,
        status: 200,
        duration_ms: 12,
    }
}

pub fn failed(attempt: u16, status: u16, next_due_at: Timestamp) -> RecordBody {
    RecordBody::Failed(Failure {
        attempt,
        status: Some(status),
        error_class: ErrorClass::Status,
        error: format!("HTTP {status}"),
        duration_ms: 20,
        next_due_at,
        response_body: Some("try later".into()),
    })
}

pub fn dead_parked() -> RecordBody {
    RecordBody::DeadParked {
        reason: "attempt budget spent".into(),
    }
}

pub fn requeued(from: Terminal, due_at: Timestamp) -> RecordBody {
    RecordBody::Requeued {
        from,
        due_at,
        reason: "operator: receiver fixed".into(),
    }
}

/// Runs the real `hookledger` binary with `args` on the database at `db`.
pub fn hookledger(args: &[&str], db: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("HOOKLEDGER_DB")
        .output()
        .expect("run hookledger")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Delivery (1,1) delivered and (1,2) dead: every terminal counter a wrong requeue could lean
/// on is non-zero, so only a check against the delivery's own last record refuses it.
pub fn one_delivered_one_dead(t: &TestLedger) {
    t.publish(1, &[webhook(1)]).unwrap();
    t.publish(2, &[webhook(1)]).unwrap();
    t.append(key(1, 1), attempted(1)).unwrap();
    t.append(key(1, 1), delivered(1)).unwrap();
    t.append(key(1, 2), attempted(1)).unwrap();
    t.append(key(1, 2), failed(1, 500, t.now())).unwrap();
    t.append(key(1, 2), dead_parked()).unwrap();
}

/// An insta snapshot kept in the top-level `snapshots/` folder, named `$name` alone.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// A sender that may reach 127.0.0.1 (where tests run their receivers) with `config`'s other
/// settings, and the egress policy the API checks webhook URLs with.
pub fn loopback_sender(
    config: hookledger::delivery::sender::SenderConfig,
) -> (
    hookledger::delivery::sender::Sender,
    Arc<hookledger::delivery::guard::EgressPolicy>,
) {
    let egress =
        Arc::new(hookledger::delivery::guard::EgressPolicy::parse_allowlist("127.0.0.1").unwrap());
    let sender =
        hookledger::delivery::sender::Sender::new(hookledger::delivery::sender::SenderConfig {
            egress: egress.clone(),
            ..config
        })
        .unwrap();
    (sender, egress)
}

/// The real API router over `engine`, with `token` as the operator token, served in process
/// on 127.0.0.1 port 0: its base URL.
pub async fn serve_api(
    engine: &Arc<hookledger::delivery::engine::Engine>,
    egress: Arc<hookledger::delivery::guard::EgressPolicy>,
    token: &str,
) -> String {
    use hookledger::api;
    let state = api::AppState {
        engine: engine.clone(),
        egress,
        token: Arc::new(token.to_owned()),
        sql_url: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(state, api::DEFAULT_MAX_PAYLOAD);
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}
