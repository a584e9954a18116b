//! Storage failures: the disk fills up (or the file stops growing) under a running
//! `hookledger serve`, and DuckDB gives up on a database after a commit it could not roll back.
//!
//! - Disk full: the database lives on a small tmpfs, which needs `mount` (root). Where mount
//!   is not permitted, that test prints `SKIPPED: ...` to stderr and returns; the same scenario
//!   then still runs with the fallback fault: a file-size limit (`RLIMIT_FSIZE`, lowered on the
//!   running server with `prlimit`), which any user can set on their own process. Either way:
//!   publishes answer 503 `storage_unavailable` while the disk fails, nothing answered 2xx is
//!   lost, the same process accepts publishes again once space is back and delivers what was
//!   stuck, and `verify` passes before and after the stop.
//! - Invalidated database: DuckDB's own debug switches make a commit fail and its rollback
//!   fail too, which invalidates the database instance; the writer reopens the file and
//!   continues without a restart.

use std::sync::Arc;

use hookledger::clock::SystemClock;
use hookledger::ledger::Ledger;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::LedgerError;

use crate::common::*;

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
