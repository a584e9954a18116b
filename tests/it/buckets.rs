//! Sealed buckets' id filters (src/store/duck/filters.rs) on real files: a filter that is
//! missing, damaged or without its row is rebuilt from the bucket's ids, so a repeated id in
//! that bucket is still recognised (same body: the first answer; another body: a conflict), and
//! the filter is stored again; a file of schema 5 (filters inside `event_buckets`, written by
//! the binary at main's commit eb62fdf: `tests/fixtures/schema5_buckets.duckdb`, ten events in
//! buckets of three, one `enqueued` each) migrates, verifies and still recognises its ids.

use std::path::Path;
use std::sync::Arc;

use hookledger::clock::ManualClock;
use hookledger::ledger::{Ledger, LedgerOptions};
use hookledger::LedgerError;

use crate::common::*;

fn options() -> LedgerOptions {
    LedgerOptions {
        checkpoint_every: None,
        bucket_events: 3,
        ..LedgerOptions::default()
    }
}

/// Publishing event `n` again, with its first body and with another: (same, other) answers.
fn repeat(t: &TestLedger, n: u128) -> (bool, bool) {
    let same = t.commit(publish_commit(n, &[webhook(1)], t.now()));
    let mut other = publish_commit(n, &[webhook(1)], t.now());
    other.events[0].body = b"{\"order\":\"changed\"}".to_vec();
    let other = t.commit(other);
    (
        matches!(
            same,
            Err(LedgerError::EventExists {
                same_body: true,
                ..
            })
        ),
        matches!(
            other,
            Err(LedgerError::EventExists {
                same_body: false,
                ..
            })
        ),
    )
}

fn raw(path: &Path) -> duckdb::Connection {
    duckdb::Connection::open(path).unwrap()
}

fn filter_rows(conn: &duckdb::Connection, bucket: u32) -> i64 {
    conn.query_row(
        &format!("SELECT count(*) FROM event_filter_{bucket:05}"),
        [],
        |r| r.get(0),
    )
    .unwrap_or(-1)
}

fn copies(conn: &duckdb::Connection, n: u128) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM events_all WHERE event_id = ?",
        [event(n).0],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_missing_or_damaged_filter_is_rebuilt_and_its_ids_are_still_recognised() {
    let mut t = TestLedger::with_options(&options());
    for n in 1..=12 {
        t.publish(n, &[webhook(1)]).unwrap();
    }
    // Events 1-5 are delivered, 6-12 still pending: a repeat of a pending one is answered
    // from its stored event, one of a finished one by the store refusing the batch.
    for n in 1..=5 {
        t.append(key(1, n), attempted(1)).unwrap();
        t.append(key(1, n), delivered(1)).unwrap();
    }
    t.close();
    {
        let c = raw(&t.path);
        let sealed: i64 = c
            .query_row("SELECT count(*) FROM event_buckets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sealed, 3, "events 1-9 are in sealed buckets 0-2");
        // Bucket 0: no filter table. Bucket 1: a well-formed filter with every bit clear ("no
        // id here"), under the old digest. Bucket 2: the table without its row.
        c.execute_batch("DROP TABLE event_filter_00000").unwrap();
        let len: i64 = c
            .query_row(
                "SELECT octet_length(filter) FROM event_filter_00001",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut blank = vec![0u8; len as usize];
        blank[0] = 1;
        blank[1] = ((len as usize - 9) / 64) as u8;
        c.execute("UPDATE event_filter_00001 SET filter = ?", [blank])
            .unwrap();
        c.execute_batch("DELETE FROM event_filter_00002").unwrap();
    }
    t.reopen_with(&options());
    for n in [1, 2, 3, 4, 6, 7, 9] {
        assert_eq!(repeat(&t, n), (true, true), "event {n}");
    }
    t.publish(13, &[webhook(1)]).unwrap();
    let reader = t.ledger().reader().unwrap();
    let c = reader.connection().unwrap();
    for n in [1, 4, 7, 13] {
        assert_eq!(copies(c, n), 1, "event {n}");
    }
    // The rebuilt filters were stored again.
    for bucket in 0..3 {
        assert_eq!(filter_rows(c, bucket), 1, "bucket {bucket}");
    }
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
}

#[test]
fn a_file_with_filters_inside_event_buckets_migrates_and_recognises_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    std::fs::write(&path, include_bytes!("../fixtures/schema5_buckets.duckdb")).unwrap();
    {
        let c = raw(&path);
        let v: i64 = c
            .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, 5);
    }
    let clock = ManualClock::at_epoch();
    let ledger = Ledger::open_with(&path, Arc::new(clock.clone()), &options()).unwrap();
    let mut t = TestLedger {
        dir,
        path,
        clock,
        ledger: Some(ledger),
    };
    let reader = t.ledger().reader().unwrap();
    assert_eq!(reader.schema_version().unwrap(), 8);
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    {
        let c = reader.connection().unwrap();
        let filter_column: i64 = c
            .query_row(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_name = 'event_buckets' AND column_name = 'filter'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(filter_column, 0);
        for bucket in 0..3 {
            assert_eq!(filter_rows(c, bucket), 1, "bucket {bucket}");
        }
    }
    // Events 1 and 5 delivered (a repeat is refused by the store), 9 and 10 still pending.
    for n in [1, 5] {
        t.append(key(1, n), attempted(1)).unwrap();
        t.append(key(1, n), delivered(1)).unwrap();
    }
    for n in [1, 5, 9, 10] {
        assert_eq!(repeat(&t, n), (true, true), "event {n}");
    }
    t.publish(11, &[webhook(1)]).unwrap();
    t.reopen_with(&options());
    assert_eq!(repeat(&t, 2), (true, true));
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(verdict.events, 11);
    assert_eq!(verdict.records, 15);
}
