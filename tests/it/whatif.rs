//! What-if on a synthetic ledger with a known outage: webhook 1's receiver is down from 10:00
//! to 12:00, webhook 2's never; an event every 15 minutes from 09:00 to 16:00 goes to both,
//! retried on `10m,30m` (three attempts) as a small engine decides against the known truth,
//! each attempt recorded at its instant through the real writer.
//!
//! Worked out by hand for webhook 1 (attempts at t, t+10m, t+40m): the deliveries enqueued at
//! 10:00, 10:15, 10:30, 10:45, 11:00 and 11:15 spend their budget inside the outage and are
//! dead; 11:30 and 11:45 are delivered on their third attempt (12:10, 12:25). Under `20m,40m`
//! (attempts at t, t+20m, t+1h) the last retries of 11:00 and 11:15 land at 12:00 and 12:15:
//! exactly those two are recovered; 10:00-10:45 still end before noon.

use std::path::Path;

use hookledger::delivery::backoff::RetrySchedule;
use hookledger::ids::DeliveryKey;
use hookledger::ledger::record::{NewRecord, Timestamp};
use hookledger::ledger::writer::Commit;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::whatif::{self, render::render, Fate, Policy, Query, Report, Scope};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::serve::{as_of_seq, call, post_json, Server};
use crate::common::*;

const MIN: i64 = 60;
const HOUR: i64 = 3600;

/// 2026-01-01T00:00:00Z plus `secs`.
fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

/// The seconds of the events' enqueue times: every 15 minutes, 09:00 to 16:00.
fn enqueue_times() -> Vec<i64> {
    (0..=28).map(|i| 9 * HOUR + i * 15 * MIN).collect()
}

/// When each attempt of a delivery enqueued at `t` happens and whether it gets through, under
/// `delays` and a receiver that is `up` at given seconds: the engine, against the truth.
fn attempts(t: i64, delays: &[i64], up: &dyn Fn(i64) -> bool) -> Vec<(i64, bool)> {
    let mut out = vec![];
    let mut at = t;
    for n in 0..=delays.len() {
        let ok = up(at);
        out.push((at, ok));
        if ok || n == delays.len() {
            break;
        }
        at += delays[n];
    }
    out
}

/// The ledger of the module docs, for a receiver of webhook 1 that is `up1` (webhook 2's is
/// always up), closed.
fn outage_ledger(up1: &dyn Fn(i64) -> bool) -> TestLedger {
    let delays = [10 * MIN, 30 * MIN];
    let always_up = |_: i64| true;
    let mut t = TestLedger::new();
    // (second, order, commit): publishes before attempts at the same instant.
    let mut steps: Vec<(i64, u8, u128, Commit)> = vec![];
    for (i, &enq) in enqueue_times().iter().enumerate() {
        let n = i as u128 + 1;
        steps.push((
            enq,
            0,
            n,
            publish_commit(n, &[webhook(1), webhook(2)], at(enq)),
        ));
        for w in [1, 2] {
            let k = key(w, n);
            let truth: &dyn Fn(i64) -> bool = if w == 1 { up1 } else { &always_up };
            let tries = attempts(enq, &delays, truth);
            for (a, &(when, ok)) in tries.iter().enumerate() {
                let attempt = a as u16 + 1;
                let mut records = vec![NewRecord::new(k, attempted(attempt))];
                if ok {
                    records.push(NewRecord::new(k, delivered(attempt)));
                } else {
                    let next = delays.get(a).map_or(when, |d| when + d);
                    records.push(NewRecord::new(k, failed(attempt, 503, at(next))));
                    if a == delays.len() {
                        records.push(NewRecord::new(k, dead_parked()));
                    }
                }
                let commit = Commit {
                    records,
                    ..Commit::default()
                };
                steps.push((when, 1, n * 10 + w, commit));
            }
        }
    }
    steps.sort_by_key(|(when, order, n, _)| (*when, *order, *n));
    for (when, _, _, commit) in steps {
        t.clock.set(at(when));
        t.commit(commit).unwrap();
    }
    t.close();
    t
}

fn down_10_to_12(s: i64) -> bool {
    !(10 * HOUR..12 * HOUR).contains(&s)
}

fn query(schedule: &str) -> Query {
    let scope = Scope {
        since: Some(at(9 * HOUR)),
        until: Some(at(13 * HOUR)),
        webhook: None,
    };
    Query::new(
        scope,
        Policy::new(RetrySchedule::parse(schedule).unwrap()),
        100,
    )
    .unwrap()
}

fn ask(t: &TestLedger, schedule: &str) -> Report {
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    whatif::run(&store, &query(schedule), &mut |_| {}).unwrap()
}

/// The enqueue times (as HH:MM) of the listed fate changes, with their fates.
fn changes(r: &Report) -> Vec<(String, Fate, Fate, Fate)> {
    r.changed
        .iter()
        .map(|c| {
            let hhmm = c.enqueued_at.format("%H:%M").to_string();
            (hhmm, c.actual.fate, c.optimistic.fate, c.pessimistic.fate)
        })
        .collect()
}

#[test]
fn whatif_the_recorded_schedule_replays_to_what_the_ledger_recorded() {
    let t = outage_ledger(&down_10_to_12);
    let r = ask(&t, "10m,30m");
    assert_eq!(
        r.deliveries, 32,
        "16 events in 09:00-13:00, to two webhooks"
    );
    assert_eq!((r.actual.delivered, r.actual.dead), (26, 6), "{r:#?}");
    assert_eq!(r.optimistic, r.actual, "{r:#?}");
    assert_eq!(r.pessimistic, r.actual, "{r:#?}");
    assert_eq!(r.changed_total, 0);
    assert_eq!(r.actual.max_attempts, 3);
    // 11:30's delivery waited until 12:10: the longest wait.
    assert_eq!(r.actual.time_to_delivery_ms.unwrap().max, 40 * 60 * 1000);
    // Webhook 1's receiver: up, down through the outage, up again.
    let w1 = r
        .webhooks
        .iter()
        .find(|w| w.webhook_id == webhook(1))
        .unwrap();
    let states: Vec<bool> = w1.availability.iter().map(|run| run.seen.is_up()).collect();
    assert_eq!(states, [true, false, true], "{w1:#?}");
    assert_eq!(
        (w1.availability[1].from, w1.availability[1].to),
        (at(10 * HOUR), at(11 * HOUR + 55 * MIN))
    );
}

#[test]
fn whatif_a_last_retry_after_noon_recovers_exactly_the_deliveries_worked_out_by_hand() {
    let t = outage_ledger(&down_10_to_12);
    let r = ask(&t, "20m,40m");
    let dead_to_delivered = |hhmm: &str| {
        (
            hhmm.to_owned(),
            Fate::Dead,
            Fate::Delivered,
            Fate::Delivered,
        )
    };
    assert_eq!(
        changes(&r),
        [dead_to_delivered("11:00"), dead_to_delivered("11:15")],
        "{r:#?}"
    );
    assert!(r.changed.iter().all(|c| c.webhook_id == webhook(1)));
    let recovered: Vec<_> = r.changed.iter().map(|c| c.optimistic.at).collect();
    assert_eq!(recovered, [at(12 * HOUR), at(12 * HOUR + 15 * MIN)]);
    assert_eq!((r.optimistic.dead, r.pessimistic.dead), (4, 4));
    // A schedule reaching past the outage from anywhere in it recovers all six.
    let r = ask(&t, "30m,1h,2h");
    assert_eq!(r.changed_total, 6, "{r:#?}");
    assert_eq!((r.optimistic.dead, r.pessimistic.dead), (0, 0));
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("whatif_outage_20m_40m", render(&ask(&t, "20m,40m")));
    });
}

#[test]
fn whatif_unknown_gaps_give_two_bounds_and_the_real_outcome_lies_between() {
    // The truth switches inside gaps between observations: down from 10:03, up from 11:58.
    let truth = |s: i64| !(10 * HOUR + 3 * MIN..11 * HOUR + 58 * MIN).contains(&s);
    let t = outage_ledger(&truth);
    let mut differed = 0;
    for schedule in ["1h42m", "1h29m", "12m,1h", "5m,5m,5m,1h30m", "20m,40m"] {
        let r = ask(&t, schedule);
        let delays: Vec<i64> = RetrySchedule::parse(schedule)
            .unwrap()
            .delays()
            .iter()
            .map(|d| d.as_secs() as i64)
            .collect();
        // The candidate against the truth, delivery by delivery (webhook 2 is always up).
        let enqueued: Vec<i64> = enqueue_times()
            .into_iter()
            .filter(|&s| s < 13 * HOUR)
            .collect();
        let truly_delivered = enqueued
            .iter()
            .filter(|&&s| attempts(s, &delays, &truth).last().unwrap().1)
            .count() as u64
            + enqueued.len() as u64;
        let (o, p) = (r.optimistic.delivered, r.pessimistic.delivered);
        assert!(
            p <= truly_delivered && truly_delivered <= o,
            "{schedule}: {p} <= {truly_delivered} <= {o}"
        );
        assert_eq!(o + r.optimistic.dead, r.deliveries);
        for c in &r.changed {
            let truly = attempts((c.enqueued_at - at(0)).num_seconds(), &delays, &truth)
                .last()
                .unwrap()
                .1;
            if c.pessimistic.fate == Fate::Delivered {
                assert!(truly, "{schedule}: {c:?}");
            }
            if !truly {
                assert_ne!(c.pessimistic.fate, Fate::Delivered, "{schedule}: {c:?}");
            }
        }
        if o != p {
            differed += 1;
        }
    }
    assert!(differed >= 2, "the gaps were never hit: {differed}");
}

/// Every file in the ledger's directory with a digest of its bytes.
fn snapshot_dir(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect();
    files.sort();
    files
}

const WINDOW: [&str; 4] = [
    "--since",
    "2026-01-01T09:00:00Z",
    "--until",
    "2026-01-01T13:00:00Z",
];

#[test]
fn whatif_from_the_cli_is_deterministic_and_writes_nothing() {
    let t = outage_ledger(&down_10_to_12);
    let before = snapshot_dir(t.dir.path());
    let args = [&["whatif", "--schedule", "20m,40m", "--json"][..], &WINDOW].concat();
    let one = hookledger(&args, &t.path);
    assert_eq!(one.status.code(), Some(0), "{one:?}");
    let two = hookledger(&args, &t.path);
    assert_eq!(one.stdout, two.stdout, "same input, same bytes");
    let text = hookledger(
        &[&["whatif", "--schedule", "20m,40m"][..], &WINDOW].concat(),
        &t.path,
    );
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("fate changes: 2"), "{text}");
    assert_eq!(
        snapshot_dir(t.dir.path()),
        before,
        "whatif changed the database files"
    );
    let v: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(v["changed_total"], 2);
    assert_eq!(
        v["policy"],
        json!({ "schedule": "20m,40m", "budget": 3, "jitter": false })
    );
    // Bad input names the flag; nothing is read.
    let bad = hookledger(&["whatif", "--schedule", "5s,abc"], &t.path);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--schedule") && err.contains("`abc`"), "{err}");
    let order = [
        "whatif",
        "--schedule",
        "1m",
        "--since",
        "2026-01-02T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ];
    let bad = hookledger(&order, &t.path);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--until"),
        "{bad:?}"
    );
    assert_eq!(snapshot_dir(t.dir.path()), before);
}

#[test]
fn whatif_over_http_answers_the_cli_json_and_refuses_bad_input_naming_the_field() {
    // The ledger is written outside the runtime (its writer is waited for by blocking).
    let t = outage_ledger(&down_10_to_12);
    let args = [&["whatif", "--schedule", "20m,40m", "--json"][..], &WINDOW].concat();
    let cli: Value = serde_json::from_slice(&hookledger(&args, &t.path).stdout).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(over_http(&t, cli));
}

async fn over_http(t: &TestLedger, cli: Value) {
    let server = Server::start(&t.path);
    let url = format!("{}/v1/whatif", server.base);
    let before = as_of_seq(&server.base).await;
    let body = json!({ "schedule": "20m,40m", "since": "2026-01-01T09:00:00Z", "until": "2026-01-01T13:00:00Z" });
    let (status, answer) = post_json(&url, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, cli, "the route answers the CLI's JSON");
    let (status, _) = call(reqwest::Method::POST, &url, None, Some(body)).await;
    assert_eq!(status, 401);
    let cases = [
        (json!({ "schedule": "5s,0s" }), "schedule"),
        (json!({ "schedule": "" }), "schedule"),
        (json!({ "schedule": "5s", "since": "yesterday" }), "since"),
        (
            json!({ "schedule": "5s", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z" }),
            "until",
        ),
        (json!({ "schedule": "5s", "budget": 0 }), "budget"),
        (
            json!({ "schedule": "5s", "webhook_id": "nope" }),
            "webhook_id",
        ),
        (json!({ "schedule": "5s", "colour": "red" }), "colour"),
        (json!({ "budget": 3 }), "schedule"),
        (json!({ "schedule": 5 }), "schedule"),
    ];
    for (body, field) in cases {
        let (status, answer) = post_json(&url, body.clone()).await;
        assert!((400..500).contains(&status), "{body}: {status} {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(
        as_of_seq(&server.base).await,
        before,
        "whatif wrote records"
    );
    assert!(server.stop().success());
}

#[test]
fn whatif_keys_are_the_ledger_keys() {
    let t = outage_ledger(&down_10_to_12);
    let r = ask(&t, "20m,40m");
    let keys: Vec<DeliveryKey> = r
        .changed
        .iter()
        .map(|c| DeliveryKey::new(c.webhook_id, c.event_id))
        .collect();
    // Events 9 and 10 are 11:00 and 11:15.
    assert_eq!(keys, [key(1, 9), key(1, 10)]);
}
