//! The console's questions to the store, the same checks on both backends (DuckDB in a temp
//! dir, PostgreSQL on `HOOKLEDGER_TEST_PG_URL`, required under `CI=true`): the figures of
//! `/v1/console/stats` ([`Store::attempt_stats`]: attempts per minute, failure classes,
//! per-webhook percentiles and last failure, the latency histogram, for every webhook or some)
//! and the deliveries listing's time window and newest-first order.

use chrono::DateTime;
use hookledger::ids::DeliveryKey;
use hookledger::ledger::chain::{batch_hash, genesis, BatchLink};
use hookledger::ledger::record::{ErrorClass, Failure, Record, RecordBody, Timestamp};
use hookledger::ledger::stored::StoredRecord;
use hookledger::ledger::view::DeliveryFilter;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::pg::PgStore;
use hookledger::store::{AttemptStatsQuery, CommitBatch, Store, WebhookAttempts};

use crate::common::*;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn at(s: i64) -> Timestamp {
    DateTime::from_timestamp(T0 + s, 0).unwrap()
}

fn ms(s: i64) -> i64 {
    (T0 + s) * 1000
}

fn done(ms: u32) -> RecordBody {
    RecordBody::Delivered {
        attempt: 1,
        status: 200,
        duration_ms: ms,
    }
}

fn fail(class: ErrorClass, ms: u32) -> RecordBody {
    RecordBody::Failed(Failure {
        attempt: 1,
        status: (class == ErrorClass::Status).then_some(500),
        error_class: class,
        error: "no".into(),
        duration_ms: ms,
        next_due_at: at(9_999),
        response_body: None,
    })
}

/// Four deliveries of three webhooks: (key, second recorded, body), seqs 1.. in this order.
fn ledger() -> Vec<(DeliveryKey, i64, RecordBody)> {
    let enq = || RecordBody::Enqueued { due_at: at(0) };
    vec![
        (key(1, 1), 0, enq()),
        (key(1, 1), 10, attempted(1)),
        (key(1, 1), 10, done(5)),
        (key(1, 2), 60, enq()),
        (key(1, 2), 60, attempted(1)),
        (key(1, 2), 70, fail(ErrorClass::Status, 300)),
        (key(1, 2), 130, attempted(2)),
        (key(1, 2), 130, done(40)),
        (key(2, 3), 120, enq()),
        (key(2, 3), 120, attempted(1)),
        (key(2, 3), 125, fail(ErrorClass::Timeout, 12_000)),
        (key(3, 4), 3_700, enq()),
        (key(3, 4), 3_700, attempted(1)),
        (key(3, 4), 3_700, done(1)),
    ]
}

fn fill(store: &mut dyn Store) {
    let rows: Vec<StoredRecord> = ledger()
        .into_iter()
        .enumerate()
        .map(|(i, (k, s, body))| {
            StoredRecord::from_record(&Record {
                seq: i as u64 + 1,
                recorded_at: at(s),
                key: k,
                body,
            })
        })
        .collect();
    let link = BatchLink {
        first_seq: 1,
        last_seq: rows.len() as u64,
        hash: batch_hash(&genesis(), &rows),
    };
    let batch = CommitBatch {
        records: rows,
        link: Some((link, at(3_700))),
        ..CommitBatch::default()
    };
    store.commit(&batch).unwrap();
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

fn attempt_stats_are_aggregated_in_the_window(store: &mut dyn Store) {
    fill(store);
    let mut q = AttemptStatsQuery {
        webhooks: None,
        since: at(0),
        until: at(3_600),
        minutes_since: at(60),
    };
    let all = store.attempt_stats(&q).unwrap();
    // Minutes after 60 s only: the failure at 70 s, then a delivery and a failure at 2 min.
    assert_eq!(all.per_minute, [(ms(60), 0, 1), (ms(120), 1, 1)]);
    assert_eq!(
        all.failure_classes,
        [
            (webhook(1), "status".to_owned(), 1),
            (webhook(2), "timeout".to_owned(), 1)
        ]
    );
    assert_eq!(
        all.webhooks.len(),
        2,
        "webhook 3's attempt is after the window"
    );
    let w1: &WebhookAttempts = &all.webhooks[0];
    assert_eq!(
        (w1.webhook_id, w1.attempts, w1.delivered),
        (webhook(1), 3, 2)
    );
    assert!(close(w1.p50_ms, 40.0), "{w1:?}");
    // Interpolated between 40 and 300 at 0.98 of the way.
    assert!(close(w1.p99_ms, 40.0 + 0.98 * 260.0), "{w1:?}");
    assert_eq!(w1.last_failure_ms, Some(ms(70)));
    let w2 = &all.webhooks[1];
    assert_eq!(
        (w2.webhook_id, w2.attempts, w2.delivered),
        (webhook(2), 1, 0)
    );
    assert!(close(w2.p50_ms, 12_000.0) && close(w2.p99_ms, 12_000.0));
    assert_eq!(w2.last_failure_ms, Some(ms(125)));
    // 5 ms under 10, 40 under 50, 300 under 500, 12 s past the last bound.
    assert_eq!(all.latency_histogram, [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]);

    q.webhooks = Some(vec![webhook(2)]);
    let one = store.attempt_stats(&q).unwrap();
    assert_eq!(one.per_minute, [(ms(120), 0, 1)]);
    assert_eq!(one.failure_classes, [(webhook(2), "timeout".to_owned(), 1)]);
    assert_eq!(one.webhooks, all.webhooks[1..]);
    assert_eq!(one.latency_histogram, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    q.webhooks = Some(vec![]);
    let none = store.attempt_stats(&q).unwrap();
    assert!(none.webhooks.is_empty() && none.per_minute.is_empty());
    assert_eq!(none.latency_histogram.iter().sum::<u64>(), 0);
}

fn deliveries_are_listed_by_window_and_newest_first(store: &mut dyn Store) {
    fill(store);
    let keys = |f: DeliveryFilter, cursor: u64, limit: usize| -> Vec<DeliveryKey> {
        let rows = store.deliveries(f, cursor, limit).unwrap();
        rows.iter()
            .map(|d| DeliveryKey::new(d.webhook_id, d.event_id))
            .collect()
    };
    let window = DeliveryFilter {
        since: Some(at(60)),
        until: Some(at(3_600)),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        keys(window.clone(), 0, 10),
        [key(1, 2), key(2, 3)],
        "enqueued at 60 s (the bound) and 120 s"
    );
    let before = DeliveryFilter {
        until: Some(at(60)),
        ..DeliveryFilter::default()
    };
    assert_eq!(keys(before, 0, 10), [key(1, 1)], "until is exclusive");
    let newest = DeliveryFilter {
        newest_first: true,
        ..DeliveryFilter::default()
    };
    assert_eq!(
        keys(newest.clone(), 0, 10),
        [key(3, 4), key(2, 3), key(1, 2), key(1, 1)]
    );
    assert_eq!(
        keys(newest.clone(), 0, 2),
        [key(3, 4), key(2, 3)],
        "the latest page"
    );
    assert_eq!(
        keys(newest, 9, 2),
        [key(1, 2), key(1, 1)],
        "the page before the delivery enqueued at seq 9"
    );
    let newest_in_window = DeliveryFilter {
        newest_first: true,
        ..window
    };
    assert_eq!(keys(newest_in_window, 0, 10), [key(2, 3), key(1, 2)]);
}

#[test]
fn duckdb_answers_the_consoles_questions() {
    let dir = tempfile::tempdir().unwrap();
    for (i, check) in [
        attempt_stats_are_aggregated_in_the_window as fn(&mut dyn Store),
        deliveries_are_listed_by_window_and_newest_first,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("console-{i}.duckdb"));
        check(&mut DuckStore::open(&path, OpenMode::ReadWrite).unwrap());
    }
}

#[test]
fn postgres_answers_the_consoles_questions() {
    let Some(server) = crate::pg_common::server("postgres_answers_the_consoles_questions") else {
        return;
    };
    for check in [
        attempt_stats_are_aggregated_in_the_window as fn(&mut dyn Store),
        deliveries_are_listed_by_window_and_newest_first,
    ] {
        let url = crate::pg_common::fresh_schema(&server);
        check(&mut PgStore::open(&url, OpenMode::ReadWrite).unwrap());
    }
}
