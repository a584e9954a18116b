//! The real `hookledger` binary against real files: exit codes (0 ok, 1 verify found a
//! problem, 2 an error), messages that name the cause (missing file, bad `--at`, conflicting
//! flags, a file locked by another process, a schema newer than this build), and what
//! `verify`, `state` (now, `--seq`, `--at`, `--json`) and `history` print.

use std::process::Output;

use hookledger::ledger::record::Timestamp;

use crate::common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and that stderr contains every one of `needles`.
fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{o:?}");
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A closed ledger: event 1 to webhooks 1 and 2 at t0 (seqs 1, 2), (1,1) attempted at t0+60s
/// (seq 3) and delivered at t0+120s (seq 4). Returns it with t0.
fn built() -> (TestLedger, Timestamp) {
    let mut t = TestLedger::new();
    let t0 = t.now();
    assert_eq!(
        t.publish(1, &[webhook(1), webhook(2)]).unwrap().seqs,
        [1, 2]
    );
    t.advance(60);
    assert_eq!(t.append(key(1, 1), attempted(1)).unwrap().seqs, [3]);
    t.advance(60);
    assert_eq!(t.append(key(1, 1), delivered(1)).unwrap().seqs, [4]);
    t.close();
    (t, t0)
}

#[test]
fn verify_of_a_missing_file_exits_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.duckdb");
    let o = hookledger(&["verify"], &path);
    assert_fails(&o, 2, &["no database at", &path.display().to_string()]);
    assert!(!path.exists(), "inspection must not create the file");
}

#[test]
fn state_with_an_unparsable_at_fails_naming_the_flag() {
    let (t, _) = built();
    let o = hookledger(&["state", "--at", "not-a-time"], &t.path);
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    assert_fails(&o, 2, &["--at", "not-a-time"]);
}

#[test]
fn state_refuses_at_and_seq_together() {
    let (t, _) = built();
    let o = hookledger(
        &["state", "--at", "2026-01-01T00:00:30Z", "--seq", "3"],
        &t.path,
    );
    assert_fails(&o, 2, &["--at", "--seq", "cannot be used with"]);
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
}

#[test]
fn verify_of_a_sound_ledger_exits_0_and_reports_the_counts() {
    let (t, _) = built();
    let o = hookledger(&["verify"], &t.path);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).starts_with("ok: 4 records in 3 batches, 1 events and 0 registry changes"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn state_prints_the_current_counts_and_live_rows() {
    let (t, _) = built();
    let o = hookledger(&["state"], &t.path);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("as of seq 4 ("), "{out}");
    assert_eq!(
        lines.next(),
        Some("pending 1  in_attempt 0  delivered 1  dead 0  parked 0"),
        "{out}"
    );
    let live: Vec<_> = lines.skip(1).collect();
    assert_eq!(live.len(), 1, "{out}");
    assert!(live[0].starts_with(&format!("{}  {}  pending", webhook(2), event(1))));
}

#[test]
fn state_at_a_seq_as_json_is_the_state_right_after_that_record() {
    let (t, _) = built();
    let o = hookledger(&["state", "--seq", "3", "--json"], &t.path);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["as_of_seq"], 3, "{v}");
    assert_eq!(v["counts"]["in_attempt"], 1, "{v}");
    assert_eq!(v["counts"]["pending"], 1, "{v}");
    assert_eq!(v["counts"]["delivered"], 0, "{v}");
    assert_eq!(v["live"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn state_at_a_time_between_commits_shows_the_earlier_state() {
    let (t, t0) = built();
    let between = (t0 + chrono::Duration::seconds(30)).to_rfc3339();
    let o = hookledger(&["state", "--at", &between], &t.path);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    assert!(out.starts_with("as of seq 2 ("), "{out}");
    assert!(
        out.contains("pending 2  in_attempt 0  delivered 0  dead 0  parked 0"),
        "{out}"
    );
    // Exactly at the attempt's time, the attempt is included.
    let at = (t0 + chrono::Duration::seconds(60)).to_rfc3339();
    let o = hookledger(&["state", "--at", &at, "--json"], &t.path);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["as_of_seq"], 3, "{v}");
}

#[test]
fn history_prints_one_deliverys_records_in_order() {
    let (t, _) = built();
    let (w, e) = (webhook(1).to_string(), event(1).to_string());
    let o = hookledger(&["history", "--webhook", &w, "--event", &e], &t.path);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let seq_kind: Vec<(&str, &str)> = lines.iter().map(|l| (l[0], l[2])).collect();
    assert_eq!(
        seq_kind,
        [("1", "enqueued"), ("3", "attempted"), ("4", "delivered")],
        "{out}"
    );
    assert!(out.contains("attempt 1: HTTP 200 in 12 ms"), "{out}");
}

#[test]
fn history_of_an_unknown_delivery_exits_2_with_a_message() {
    let (t, _) = built();
    let (w, e) = (webhook(1).to_string(), event(9).to_string());
    let o = hookledger(&["history", "--webhook", &w, "--event", &e], &t.path);
    assert_fails(&o, 2, &["no records for webhook", &w, &e]);
}

#[test]
fn a_file_held_open_by_a_running_ledger_is_reported_as_locked() {
    let t = TestLedger::new();
    t.publish(1, &[webhook(1)]).unwrap();
    for args in [&["state"][..], &["verify"]] {
        let o = hookledger(args, &t.path);
        assert_fails(&o, 2, &["locked", &t.path.display().to_string()]);
    }
}

#[test]
fn a_file_with_a_newer_schema_exits_2_naming_both_versions() {
    let (t, _) = built();
    {
        let conn = duckdb::Connection::open(&t.path).unwrap();
        conn.execute("INSERT INTO schema_migrations (version) VALUES (99)", [])
            .unwrap();
    }
    for args in [&["verify"][..], &["state"]] {
        let o = hookledger(args, &t.path);
        assert_fails(&o, 2, &["schema version 99", "supports (8)"]);
    }
}

#[test]
fn serve_refuses_an_idle_checkpoint_threshold_out_of_range_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.duckdb");
    for bad in ["17", "-1", "four"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&path)
            .env("HOOKLEDGER_API_TOKEN", "cli-test-token-0123456789abcdef")
            .env("HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB", bad)
            .output()
            .expect("run hookledger");
        assert_fails(
            &o,
            2,
            &["HOOKLEDGER_DUCKDB_IDLE_CHECKPOINT_MB", bad, "0 (off) to 16"],
        );
    }
}
