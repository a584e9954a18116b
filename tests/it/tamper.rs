//! Tamper evidence, end to end on a real file: editing, deleting, moving or inserting a row
//! behind hookledger's back (raw SQL on the closed database) makes `verify` fail, and it names
//! the log and the seq where the damage is; the `hookledger verify` command then exits 1.
//!
//! The fixture commits one record at a time, so every record is its own chained batch and
//! "the first bad batch" is exactly the tampered seq.

use std::path::Path;
use std::process::Command;

use hookledger::delivery::signing::Secret;
use hookledger::ledger::chain::{batch_hash, BatchLink};
use hookledger::ledger::record::{Record, RecordBody, Terminal};
use hookledger::ledger::stored::StoredRecord;
use hookledger::ledger::verify::{verify, Log, Verdict};
use hookledger::ledger::writer::Commit;
use hookledger::registry::Change;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::{CommitBatch, Store};

use crate::common::*;

/// Seqs of the fixture, one record (and one batch) each.
const ENQ_1: u64 = 1; // enqueued (1,1)
const ENQ_2: u64 = 2; // enqueued (1,2)
const ENQ_3: u64 = 3; // enqueued (1,3)
const ATT_1: u64 = 4; // attempted (1,1) #1
const FAIL_1: u64 = 5; // failed (1,1) #1, HTTP 503
const ATT_2: u64 = 6; // attempted (1,1) #2
const DELIV: u64 = 7; // delivered (1,1) #2
const ATT_3: u64 = 8; // attempted (1,2) #1
const RECORDS: u64 = 8;

/// A closed ledger file: one registry change, then [`RECORDS`] single-record commits.
fn fixture() -> TestLedger {
    let mut t = TestLedger::new();
    let w = webhook(1);
    t.commit(Commit {
        changes: vec![(
            w,
            Change::Created {
                url: "https://receiver.example/hook".into(),
                event_types: vec![],
                description: Some("orders".into()),
                secret: Secret::generate(),
                app: hookledger::ids::AppUid::default_app(),
                payload_format: Default::default(),
            },
        )],
        ..Commit::default()
    })
    .unwrap();
    let mut seqs = Vec::new();
    for n in 1..=3 {
        seqs.extend(t.publish(n, &[w]).unwrap().seqs);
        t.advance(1);
    }
    let next_due = t.now() + chrono::Duration::seconds(30);
    for body in [
        attempted(1),
        failed(1, 503, next_due),
        attempted(2),
        delivered(2),
    ] {
        seqs.extend(t.append(key(1, 1), body).unwrap().seqs);
        t.advance(1);
    }
    seqs.extend(t.append(key(1, 2), attempted(1)).unwrap().seqs);
    assert_eq!(seqs, (1..=RECORDS).collect::<Vec<_>>());
    t.close();
    t
}

/// Runs `attack` on a read-write connection to the closed file, then verifies it read-only.
fn attack(path: &Path, attack: impl FnOnce(&DuckStore)) -> Verdict {
    {
        let store = DuckStore::open(path, OpenMode::ReadWrite).unwrap();
        attack(&store);
    }
    verify(&DuckStore::open(path, OpenMode::ReadOnly).unwrap(), None).unwrap()
}

fn sql(store: &DuckStore, statement: &str) {
    let changed = store.connection().execute(statement, []).unwrap();
    assert!(changed > 0, "the attack changed nothing: {statement}");
}

/// Asserts that `verdict` failed, in `log`, at `seq`.
fn assert_fails_at(verdict: &Verdict, log: Log, seq: u64, case: &str) {
    assert!(!verdict.ok(), "{case}: tampering went unnoticed: {verdict}");
    let p = verdict.problem.as_ref().unwrap();
    assert_eq!((p.log, p.seq), (log, seq), "{case}: {verdict}");
}

#[test]
fn an_untampered_ledger_verifies_with_the_right_counts() {
    let t = fixture();
    let verdict = verify(&DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap(), None).unwrap();
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(
        (
            verdict.records,
            verdict.batches,
            verdict.events,
            verdict.changes
        ),
        (RECORDS, RECORDS, 3, 1)
    );
    assert!(verdict
        .to_string()
        .starts_with("ok: 8 records in 8 batches, 3 events and 1 registry"));
}

#[test]
fn editing_one_field_of_a_record_fails_at_that_seq() {
    let cases = [
        // Still decodes and folds (a failure is a failure): only the hash can tell.
        ("status_code", FAIL_1, "SET status_code = 500"),
        ("due_at", ENQ_2, "SET due_at = due_at - INTERVAL 1 HOUR"),
        ("error text", FAIL_1, "SET error = 'HTTP 500'"),
        // A different kind that is still a valid transition (pending -> parked).
        ("kind", ATT_3, "SET kind = 'parked'"),
        // A kind whose columns do not decode.
        ("kind, undecodable", DELIV, "SET kind = 'failed'"),
        (
            "recorded_at",
            ATT_2,
            "SET recorded_at = recorded_at + INTERVAL 1 SECOND",
        ),
    ];
    for (case, seq, set) in cases {
        let t = fixture();
        let verdict = attack(&t.path, |s| {
            sql(
                s,
                &format!("UPDATE webhook_deliveries {set} WHERE seq = {seq}"),
            )
        });
        assert_fails_at(&verdict, Log::Ledger, seq, case);
    }
}

#[test]
fn deleting_a_record_fails_at_its_seq_in_the_middle_or_at_the_end() {
    for seq in [ENQ_3, ATT_1, RECORDS] {
        let t = fixture();
        let verdict = attack(&t.path, |s| {
            sql(
                s,
                &format!("DELETE FROM webhook_deliveries WHERE seq = {seq}"),
            )
        });
        assert_fails_at(&verdict, Log::Ledger, seq, &format!("delete {seq}"));
    }
}

#[test]
fn swapping_two_records_fails_at_the_lower_seq() {
    // (2, 3): two enqueues of different deliveries, still a valid fold; (6, 7): the fold breaks.
    for (a, b) in [(ENQ_2, ENQ_3), (ATT_2, DELIV), (ENQ_1, ATT_3)] {
        let t = fixture();
        let verdict = attack(&t.path, |s| {
            sql(
                s,
                &format!(
                    "UPDATE webhook_deliveries SET seq = CASE seq WHEN {a} THEN {b} ELSE {a} END \
                     WHERE seq IN ({a}, {b})"
                ),
            )
        });
        assert_fails_at(&verdict, Log::Ledger, a, &format!("swap {a} and {b}"));
    }
}

#[test]
fn a_copied_enqueued_row_at_the_end_fails_even_with_a_forged_chain_link() {
    let t = fixture();
    let forged = RECORDS + 1;
    let copy = format!(
        "INSERT INTO webhook_deliveries SELECT * REPLACE ({forged} AS seq, \
         (SELECT max(recorded_at) FROM webhook_deliveries) AS recorded_at) \
         FROM webhook_deliveries WHERE seq = {ENQ_1}"
    );
    // Without a link: the row is not covered by the chain.
    let verdict = attack(&t.path, |s| sql(s, &copy));
    assert_fails_at(&verdict, Log::Ledger, forged, "copy, no link");

    // With a correctly recomputed link the chain holds: delivery (1,1) was finished, so the
    // fold forgot it and accepts the new enqueue; the duplicate-enqueue check must catch it.
    let verdict = attack(&t.path, |s| {
        let links = s.links().unwrap();
        let mut rows = Vec::new();
        s.scan_records(forged, forged, &mut |r: StoredRecord| {
            rows.push(r);
            Ok(())
        })
        .unwrap();
        let link = BatchLink {
            first_seq: forged,
            last_seq: forged,
            hash: batch_hash(&links.last().unwrap().hash, &rows),
        };
        s.connection()
            .execute(
                "INSERT INTO ledger_batches VALUES (?, ?, current_timestamp, ?)",
                duckdb::params![forged as i64, forged as i64, link.hash.to_vec()],
            )
            .unwrap();
    });
    assert_fails_at(&verdict, Log::Ledger, forged, "copy with forged link");
    let reason = &verdict.problem.unwrap().reason;
    assert!(reason.contains("second `enqueued`"), "{reason}");
}

/// A closed file with delivery (1,1) delivered and (1,2) dead, so that every terminal state a
/// forged requeue could name is counted for some delivery.
fn delivered_and_dead() -> TestLedger {
    let mut t = TestLedger::new();
    one_delivered_one_dead(&t);
    t.close();
    t
}

/// Appends `body` for `k` as a new, correctly chained batch written behind hookledger's back
/// (through the store, which does not judge transitions); answers its seq.
fn forge_batch(path: &Path, k: hookledger::ids::DeliveryKey, body: RecordBody) -> u64 {
    let mut store = DuckStore::open(path, OpenMode::ReadWrite).unwrap();
    let seq = store.last_seq().unwrap() + 1;
    let prev = store.links().unwrap().last().unwrap().hash;
    let at = chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap();
    let rows = vec![StoredRecord::from_record(&Record {
        seq,
        recorded_at: at,
        key: k,
        body,
    })];
    let link = BatchLink {
        first_seq: seq,
        last_seq: seq,
        hash: batch_hash(&prev, &rows),
    };
    store
        .commit(&CommitBatch {
            records: rows,
            link: Some((link, at)),
            ..CommitBatch::default()
        })
        .unwrap();
    seq
}

#[test]
fn a_forged_requeue_in_a_correctly_chained_batch_is_named() {
    let cases = [
        (
            "a delivered delivery requeued as dead",
            key(1, 1),
            "its previous record is `delivered`",
        ),
        (
            "a key never enqueued requeued as dead",
            key(1, 9),
            "never enqueued",
        ),
    ];
    for (case, k, says) in cases {
        let t = delivered_and_dead();
        let pristine = verify(&DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap(), None);
        assert!(pristine.unwrap().ok(), "{case}: the fixture verifies");
        let seq = forge_batch(&t.path, k, requeued(Terminal::Dead, t.now()));
        let verdict = verify(&DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap(), None).unwrap();
        assert_fails_at(&verdict, Log::Ledger, seq, case);
        let reason = &verdict.problem.unwrap().reason;
        assert!(
            reason.contains("`requeued` from dead") && reason.contains(says),
            "{case}: {reason}"
        );
    }
}

#[test]
fn a_requeue_from_the_state_its_delivery_is_in_verifies() {
    let t = delivered_and_dead();
    forge_batch(&t.path, key(1, 2), requeued(Terminal::Dead, t.now()));
    let verdict = verify(&DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap(), None).unwrap();
    assert!(verdict.ok(), "{verdict}");
}

#[test]
fn editing_a_chain_hash_fails_at_its_batch() {
    let t = fixture();
    let verdict = attack(&t.path, |s| {
        let changed = s
            .connection()
            .execute(
                "UPDATE ledger_batches SET hash = ? WHERE first_seq = ?",
                duckdb::params![vec![0u8; 32], ATT_1 as i64],
            )
            .unwrap();
        assert_eq!(changed, 1);
    });
    assert_fails_at(&verdict, Log::Ledger, ATT_1, "chain hash");
}

#[test]
fn editing_a_webhook_url_fails_in_the_registry_log() {
    let t = fixture();
    let verdict = attack(&t.path, |s| {
        sql(
            s,
            "UPDATE webhook_changes SET url = 'https://attacker.example/' WHERE seq = 1",
        )
    });
    assert_fails_at(&verdict, Log::Registry, 1, "webhook url");
    assert!(
        verdict.to_string().starts_with("FAILED: registry seq 1"),
        "{verdict}"
    );
}

/// The body is what gets signed and sent: changing it must break the event chain.
#[test]
fn editing_an_event_body_or_deleting_an_event_fails_in_the_events_log() {
    let t = fixture();
    let verdict = attack(&t.path, |s| {
        sql(
            s,
            "UPDATE events SET body = '{\"evil\":1}'::BLOB WHERE seq = 2",
        )
    });
    assert_fails_at(&verdict, Log::Events, 2, "event body");
    let t = fixture();
    let verdict = attack(&t.path, |s| sql(s, "DELETE FROM events WHERE seq = 2"));
    assert_fails_at(&verdict, Log::Events, 2, "deleted event");
}

#[test]
fn the_verify_command_exits_1_on_a_tampered_file_and_0_before() {
    let t = fixture();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["verify", "--db"])
            .arg(&t.path)
            .output()
            .unwrap()
    };
    let before = run();
    assert_eq!(before.status.code(), Some(0), "{before:?}");
    attack(&t.path, |s| {
        sql(
            s,
            &format!("UPDATE webhook_deliveries SET status_code = 200 WHERE seq = {FAIL_1}"),
        )
    });
    let after = run();
    assert_eq!(after.status.code(), Some(1), "{after:?}");
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert!(
        stdout.starts_with(&format!("FAILED: ledger seq {FAIL_1}: hash mismatch")),
        "{stdout}"
    );
}
