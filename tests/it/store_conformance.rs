//! The store conformance suite: what every [`Store`] implementation must do. The same checks
//! run, unchanged, against DuckDB (a file per check in a temp dir) and PostgreSQL (a schema
//! per check on `HOOKLEDGER_TEST_PG_URL`, see `pg_common.rs`).

use chrono::DateTime;
use hookledger::ids::{DeliveryKey, EventId};
use hookledger::ledger::chain::{batch_hash, genesis, BatchLink};
use hookledger::ledger::record::{Record, RecordBody, Timestamp};
use hookledger::ledger::stored::StoredRecord;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::pg::PgStore;
use hookledger::store::{CommitBatch, Store, StoredEvent};

use crate::common::*;

fn at(s: i64) -> Timestamp {
    DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
}

fn row(seq: u64, k: DeliveryKey, body: RecordBody) -> StoredRecord {
    StoredRecord::from_record(&Record {
        seq,
        recorded_at: at(seq as i64 * 10),
        key: k,
        body,
    })
}

fn stored_event(n: u128) -> StoredEvent {
    let mut e = StoredEvent {
        seq: n as u64,
        event_id: event(n),
        event_type: "order.created".into(),
        published_at: at(0),
        body: vec![b'{', 0xfe, b'}'],
        hash: [0; 32],
        ..Default::default()
    };
    e.hash = hookledger::ledger::chain::event_link(&[n as u8; 32], &e);
    e
}

/// A batch of records `first..first+len` for distinct deliveries, with its chain link.
fn batch(first: u64, rows: Vec<StoredRecord>, events: Vec<StoredEvent>) -> CommitBatch {
    let link = BatchLink {
        first_seq: first,
        last_seq: first + rows.len() as u64 - 1,
        hash: batch_hash(&genesis(), &rows),
    };
    CommitBatch {
        events,
        records: rows,
        link: Some((link, at(0))),
        ..CommitBatch::default()
    }
}

fn scan_all(store: &dyn Store, from: u64, to: u64) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    store
        .scan_records(from, to, &mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
    out
}

/// Every check of the suite, against a fresh, empty store from `make`.
fn conformance(make: &dyn Fn() -> Box<dyn Store>) {
    empty_store_reads_as_empty(make().as_mut());
    committed_records_read_back_in_order(make().as_mut());
    a_failed_commit_writes_nothing(make().as_mut());
    history_events_and_settings(make().as_mut());
    duplicate_enqueues_are_found(make().as_mut());
    requeues_are_checked_against_the_record_before(make().as_mut());
    a_requeue_of_a_delivery_never_enqueued_is_found(make().as_mut());
    finished_deliveries_are_found_by_window(make().as_mut());
    deliveries_are_summarised_by_their_last_record(make().as_mut());
    positions_are_found_by_seq(make().as_mut());
    events_are_read_by_the_records_that_name_them(make().as_mut());
    checkpoints_are_appended_and_listed(make().as_mut());
    a_repeated_event_id_is_refused_at_any_age(make().as_mut());
    an_expunge_removes_the_body_and_keeps_its_fact(make().as_mut());
    producer_ids_and_heads_follow_the_logs(make().as_mut());
}

/// An expunge sets the body to nothing in the batch that appends its fact; every other column
/// of the event stays; a second expunge of the same body fails and writes nothing.
fn an_expunge_removes_the_body_and_keeps_its_fact(store: &mut dyn Store) {
    use hookledger::ledger::expunge::StoredExpunge;
    let mut e = stored_event(1);
    e.body_digest = Some(hookledger::ledger::chain::body_digest(&e.body));
    e.hash = hookledger::ledger::chain::event_link(&[1; 32], &e);
    store
        .commit(&batch(
            1,
            vec![row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) })],
            vec![e.clone()],
        ))
        .unwrap();
    let fact = StoredExpunge {
        seq: 1,
        recorded_at_us: at(20).timestamp_micros(),
        event_id: e.event_id,
        event_seq: e.seq,
        event_hash: e.hash,
        body_digest: e.body_digest.unwrap(),
        link_version: 3,
        actor: "operator".into(),
        reason: "a test".into(),
        hash: [7; 32],
    };
    assert_eq!(store.expunge_of(e.event_id).unwrap(), None);
    assert_eq!(store.last_expunge().unwrap(), None);
    let erase = CommitBatch {
        expunges: vec![fact.clone()],
        ..CommitBatch::default()
    };
    store.commit(&erase).unwrap();
    let found = store.events(&[e.event_id]).unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        found[0].expunged && found[0].body.is_empty(),
        "{:?}",
        found[0]
    );
    assert_eq!(
        (found[0].hash, found[0].body_digest),
        (e.hash, e.body_digest)
    );
    assert_eq!(store.expunge_of(e.event_id).unwrap(), Some(fact.clone()));
    assert_eq!(store.last_expunge().unwrap(), Some((1, [7; 32])));
    assert_eq!(store.first_unrecorded_expunge().unwrap(), None);
    let mut facts = Vec::new();
    store
        .scan_expunges(&mut |x| {
            facts.push(x);
            Ok(())
        })
        .unwrap();
    assert_eq!(facts, vec![fact.clone()]);
    let again = CommitBatch {
        expunges: vec![StoredExpunge { seq: 2, ..fact }],
        ..CommitBatch::default()
    };
    assert!(store.commit(&again).is_err(), "no body left to expunge");
    assert_eq!(
        store.last_expunge().unwrap(),
        Some((1, [7; 32])),
        "nothing written"
    );
    assert!(store
        .bodies_published_before(at(1_000), 0, 10)
        .unwrap()
        .is_empty());
}

/// The producer's id of each event (the UUID for one stored without), and the heads a store
/// with several writers reports (one with a single writer reports none).
fn producer_ids_and_heads_follow_the_logs(store: &mut dyn Store) {
    let mut named = stored_event(2);
    named.producer_id = Some("order-2".into());
    named.app = Some("default".into());
    named.format = Some(1);
    named.hash = hookledger::ledger::chain::event_link(&[2; 32], &named);
    let plain = StoredEvent {
        seq: 1,
        hash: [1; 32],
        ..stored_event(1)
    };
    let named = StoredEvent { seq: 2, ..named };
    let rows = vec![row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) })];
    store
        .commit(&batch(1, rows, vec![plain.clone(), named.clone()]))
        .unwrap();
    let ids = store
        .producer_ids(&[plain.event_id, named.event_id, event(9)])
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[&named.event_id], "order-2");
    assert_eq!(ids[&plain.event_id], plain.event_id.to_string());
    assert_eq!(
        store.bodies_published_before(at(1), 0, 10).unwrap(),
        vec![(1, plain.event_id), (2, named.event_id)]
    );
    assert_eq!(
        store.bodies_published_before(at(1), 1, 10).unwrap(),
        vec![(2, named.event_id)]
    );
    if let Some(heads) = store.heads().unwrap() {
        assert_eq!(
            (heads.records, heads.events, heads.changes, heads.expunges),
            (1, 2, 0, 0)
        );
        assert!(store.lock_commits().unwrap());
        store.unlock_commits().unwrap();
    } else {
        assert!(
            !store.lock_commits().unwrap(),
            "a store without heads has one writer"
        );
    }
}

/// Links by the seq they end at, the head, and the last seq at an instant within a range.
fn positions_are_found_by_seq(store: &mut dyn Store) {
    assert_eq!(store.last_link(0).unwrap(), None);
    let mut prev = genesis();
    for first in [1u64, 3, 6] {
        let rows: Vec<_> = (first..first + 2)
            .map(|n| row(n, key(1, n as u128), RecordBody::Enqueued { due_at: at(0) }))
            .collect();
        let rows = if first == 3 {
            let mut r = rows;
            r.push(row(5, key(1, 5), RecordBody::Enqueued { due_at: at(0) }));
            r
        } else {
            rows
        };
        let link = BatchLink {
            first_seq: first,
            last_seq: rows.last().unwrap().seq,
            hash: batch_hash(&prev, &rows),
        };
        prev = link.hash;
        store
            .commit(&CommitBatch {
                records: rows,
                link: Some((link, at(first as i64))),
                ..CommitBatch::default()
            })
            .unwrap();
    }
    let links = store.links().unwrap();
    assert_eq!(store.links_after(0).unwrap(), links);
    // Links 1..=2, 3..=5, 6..=7: after 2 and after 4 both start at the batch 3..=5.
    assert_eq!(store.links_after(2).unwrap(), links[1..].to_vec());
    assert_eq!(store.links_after(4).unwrap(), links[1..].to_vec());
    assert_eq!(store.links_after(5).unwrap(), links[2..].to_vec());
    assert_eq!(store.links_after(7).unwrap(), vec![]);
    assert_eq!(store.link_ending_at(5).unwrap(), Some(links[1].clone()));
    assert_eq!(store.link_ending_at(4).unwrap(), None);
    assert_eq!(store.last_link(0).unwrap(), Some((links[2].clone(), at(6))));
    assert_eq!(store.last_link(7).unwrap(), Some((links[2].clone(), at(6))));
    assert_eq!(store.last_link(8).unwrap(), None);
    // Records are at seq * 10 seconds.
    assert_eq!(
        store.last_seq_at_within(at(45), 0, u64::MAX).unwrap(),
        Some(4)
    );
    assert_eq!(store.last_seq_at_within(at(45), 2, 4).unwrap(), Some(3));
    assert_eq!(store.last_seq_at_within(at(5), 1, 7).unwrap(), None);
}

fn checkpoints_are_appended_and_listed(store: &mut dyn Store) {
    use hookledger::store::StoredCheckpoint;
    assert!(store.checkpoint_index().unwrap().is_empty());
    let cp = |seq: u64, b: u8| StoredCheckpoint {
        seq,
        chain_hash: [b; 32],
        recorded_at_us: Some(seq as i64 * 1000),
        format_version: 1,
        digest: [b + 1; 32],
        body: vec![b; 10 + seq as usize],
    };
    for (seq, b) in [(5, 1), (2, 2), (5, 3)] {
        store.append_checkpoint(&cp(seq, b)).unwrap();
    }
    let index = store.checkpoint_index().unwrap();
    let seqs: Vec<_> = index.iter().map(|c| (c.seq, c.bytes)).collect();
    assert_eq!(seqs, [(2, 12), (5, 15), (5, 15)], "in seq order");
    assert_eq!(index[0].recorded_at_us, Some(2000));
    assert_eq!(
        store.checkpoints_at(5).unwrap(),
        vec![cp(5, 1), cp(5, 3)],
        "in append order"
    );
    assert!(store.checkpoints_at(3).unwrap().is_empty());
}

/// However many events were stored since, a repeated id refuses the batch whole, and
/// `events` finds the first one.
fn a_repeated_event_id_is_refused_at_any_age(store: &mut dyn Store) {
    for n in 1..=40u128 {
        let mut e = stored_event(n);
        e.seq = n as u64;
        store
            .commit(&CommitBatch {
                events: vec![e],
                ..CommitBatch::default()
            })
            .unwrap();
    }
    let mut again = stored_event(1);
    again.seq = 41;
    let refused = store.commit(&CommitBatch {
        events: vec![stored_event(41), again],
        ..CommitBatch::default()
    });
    assert!(
        refused.is_err(),
        "a repeat of the first event id must be refused"
    );
    assert_eq!(store.last_event().unwrap().map(|e| e.0), Some(40));
    assert_eq!(store.events(&[event(1), event(40)]).unwrap().len(), 2);
    let mut seen = 0;
    store
        .scan_events(&mut |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 40);
}

/// One delivery ending in each record kind (the store does not judge transitions): the
/// listed state is [`DeliveryState::after`] that kind, in enqueue order, filtered and paged.
fn deliveries_are_summarised_by_their_last_record(store: &mut dyn Store) {
    use hookledger::ledger::record::RecordKind;
    use hookledger::ledger::view::{DeliveryFilter, DeliveryState};
    let last_bodies = [
        RecordBody::Enqueued { due_at: at(5) },
        attempted(1),
        delivered(1),
        failed(1, 500, at(99)),
        dead_parked(),
        RecordBody::Parked { reason: "r".into() },
        requeued(hookledger::ledger::record::Terminal::Dead, at(77)),
    ];
    let mut rows = Vec::new();
    for (n, body) in last_bodies.iter().enumerate() {
        let k = key(1, n as u128 + 1);
        rows.push(row(
            rows.len() as u64 + 1,
            k,
            RecordBody::Enqueued { due_at: at(0) },
        ));
        rows.push(row(rows.len() as u64 + 1, k, body.clone()));
    }
    rows.push(row(15, key(2, 1), RecordBody::Enqueued { due_at: at(0) }));
    store.commit(&batch(1, rows, vec![])).unwrap();

    let all = store.deliveries(DeliveryFilter::default(), 0, 100).unwrap();
    assert_eq!(all.len(), 8);
    for (summary, body) in all.iter().zip(&last_bodies) {
        assert_eq!(summary.state, DeliveryState::after(body.kind()), "{body:?}");
    }
    assert_eq!(all[3].last_status, Some(500));
    assert_eq!(all[3].due_at, Some(at(99)), "a failure's next due time");
    assert_eq!(all[6].due_at, Some(at(77)), "a requeue's due time");
    assert_eq!(all[2].due_at, None, "only pending deliveries are due");
    assert_eq!(all[1].attempts, 1);
    let seqs: Vec<_> = all.iter().map(|d| d.enqueued_seq).collect();
    assert_eq!(seqs, [1, 3, 5, 7, 9, 11, 13, 15], "in enqueue order");

    let after = store.deliveries(DeliveryFilter::default(), 9, 2).unwrap();
    assert_eq!(after, all[5..7], "a cursor and a limit");
    let pending = DeliveryFilter {
        state: Some(DeliveryState::Pending),
        webhook: Some(webhook(1)),
        ..DeliveryFilter::default()
    };
    let found: Vec<_> = store.deliveries(pending, 0, 100).unwrap();
    let events: Vec<_> = found.iter().map(|d| d.event_id).collect();
    assert_eq!(events, [event(1), event(4), event(7)]);
    let one = DeliveryFilter {
        event: Some(event(1)),
        ..DeliveryFilter::default()
    };
    assert_eq!(store.deliveries(one, 0, 100).unwrap().len(), 2);
    assert!(RecordKind::ALL
        .iter()
        .all(|k| last_bodies.iter().any(|b| b.kind() == *k)));
}

fn finished_deliveries_are_found_by_window(store: &mut dyn Store) {
    use hookledger::ledger::record::Terminal;
    let reason = || "r".to_string();
    let rows = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(1, 1), RecordBody::DeadParked { reason: reason() }),
        row(3, key(1, 2), RecordBody::Enqueued { due_at: at(0) }),
        row(4, key(1, 2), RecordBody::Parked { reason: reason() }),
        row(5, key(2, 3), RecordBody::Enqueued { due_at: at(0) }),
        row(6, key(2, 3), RecordBody::Parked { reason: reason() }),
        row(7, key(1, 4), RecordBody::Enqueued { due_at: at(0) }),
    ];
    store.commit(&batch(1, rows, vec![])).unwrap();
    // Records are at seq * 10 seconds.
    let found = store
        .finished_in_window(webhook(1), at(15), at(35))
        .unwrap();
    assert_eq!(found, vec![(event(1), Terminal::Dead)]);
    let found = store
        .finished_in_window(webhook(1), at(0), at(100))
        .unwrap();
    assert_eq!(
        found,
        vec![(event(1), Terminal::Dead), (event(2), Terminal::Parked)]
    );
}

fn empty_store_reads_as_empty(store: &mut dyn Store) {
    assert_eq!(store.last_seq().unwrap(), 0);
    assert!(store.links().unwrap().is_empty());
    assert!(store.changes().unwrap().is_empty());
    assert!(scan_all(store, 1, u64::MAX).is_empty());
    assert_eq!(store.last_event().unwrap(), None);
    store.commit(&CommitBatch::default()).unwrap();
    assert_eq!(store.first_duplicate_enqueue().unwrap(), None);
}

fn committed_records_read_back_in_order(store: &mut dyn Store) {
    let rows: Vec<_> = (1..=5)
        .map(|n| row(n, key(1, n as u128), RecordBody::Enqueued { due_at: at(0) }))
        .collect();
    let events = (1..=5).map(stored_event).collect();
    let b = batch(1, rows.clone(), events);
    store.commit(&b).unwrap();
    assert_eq!(scan_all(store, 1, u64::MAX), rows);
    assert_eq!(scan_all(store, 2, 3), rows[1..3].to_vec());
    assert_eq!(store.last_seq().unwrap(), 5);
    assert_eq!(store.last_seq_at(at(30)).unwrap(), 3);
    assert_eq!(store.last_seq_at(at(-1)).unwrap(), 0);
    assert_eq!(store.links().unwrap(), vec![b.link.unwrap().0]);
    let mut events = Vec::new();
    store
        .scan_events(&mut |e| {
            events.push(e);
            Ok(())
        })
        .unwrap();
    assert_eq!(events, (1..=5).map(stored_event).collect::<Vec<_>>());
    assert_eq!(store.last_event().unwrap(), Some((5, stored_event(5).hash)));
}

/// A batch that writes into every table and is refused by its last write: its last event
/// repeats a stored one (backends write events last, see the `Store` invariant). A store that
/// wrote row by row without a transaction would leave the records, the link, the change, the
/// setting or the first event behind; only a rollback leaves nothing.
fn a_failed_commit_writes_nothing(store: &mut dyn Store) {
    let first = batch(
        1,
        vec![row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) })],
        vec![stored_event(1)],
    );
    store.commit(&first).unwrap();
    let mut second = batch(
        2,
        vec![
            row(2, key(1, 2), RecordBody::Enqueued { due_at: at(0) }),
            row(3, key(1, 1), attempted(1)),
        ],
        vec![stored_event(2), stored_event(1)],
    );
    second.changes.push(a_change());
    second.settings.push(("api_token".into(), "t2".into()));
    assert!(store.commit(&second).is_err());
    assert_eq!(store.last_seq().unwrap(), 1);
    assert_eq!(scan_all(store, 1, u64::MAX).len(), 1);
    assert_eq!(store.links().unwrap().len(), 1);
    assert!(store.changes().unwrap().is_empty());
    assert_eq!(store.setting("api_token").unwrap(), None);
    assert_eq!(store.events(&[event(2)]).unwrap(), vec![]);
    assert_eq!(store.last_event().unwrap(), Some((1, stored_event(1).hash)));
    // The same batch without the repeated event commits whole.
    second.events.pop();
    store.commit(&second).unwrap();
    assert_eq!(store.last_seq().unwrap(), 3);
    assert_eq!(store.changes().unwrap().len(), 1);
    assert_eq!(store.changes_after(0).unwrap(), store.changes().unwrap());
    assert_eq!(store.changes_after(1).unwrap(), vec![], "after its own seq");
    assert_eq!(store.setting("api_token").unwrap().as_deref(), Some("t2"));
}

fn a_change() -> hookledger::registry::StoredChange {
    use hookledger::registry::{Change, ChangeRecord, StoredChange};
    let rec = ChangeRecord {
        seq: 1,
        recorded_at: at(0),
        webhook_id: webhook(1),
        change: Change::Deactivated { reason: "r".into() },
    };
    StoredChange::from_change(&rec, &hookledger::registry::genesis())
}

/// `first_bad_requeue` flags a requeue whose previous record is not the state it names, or
/// that has none; `last_kinds` answers each delivery's last record kind.
fn requeues_are_checked_against_the_record_before(store: &mut dyn Store) {
    use hookledger::ledger::record::{RecordKind, Terminal};
    let reason = || "r".to_string();
    let mut rows = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(1, 1), attempted(1)),
        row(3, key(1, 1), delivered(1)),
        row(4, key(1, 2), RecordBody::Enqueued { due_at: at(0) }),
        row(5, key(1, 2), RecordBody::DeadParked { reason: reason() }),
        row(6, key(1, 3), RecordBody::Enqueued { due_at: at(0) }),
        row(7, key(1, 3), RecordBody::Parked { reason: reason() }),
    ];
    for (n, t) in [
        (8, Terminal::Delivered),
        (9, Terminal::Dead),
        (10, Terminal::Parked),
    ] {
        rows.push(row(n, key(1, n as u128 - 7), requeued(t, at(0))));
    }
    store.commit(&batch(1, rows, vec![])).unwrap();
    assert_eq!(
        store.first_bad_requeue().unwrap(),
        None,
        "each from its own state"
    );
    let kinds = |store: &dyn Store, keys: &[DeliveryKey]| {
        let mut k = store.last_kinds(keys).unwrap();
        k.sort();
        k
    };
    assert_eq!(
        kinds(store, &[key(1, 1), key(2, 1), key(1, 9)]),
        vec![(key(1, 1), RecordKind::Requeued)]
    );
    // Delivery (1,1) attempted and delivered again, then requeued as dead.
    let forged = vec![
        row(11, key(1, 1), attempted(1)),
        row(12, key(1, 1), delivered(1)),
        row(13, key(1, 1), requeued(Terminal::Dead, at(0))),
    ];
    store.commit(&batch(11, forged, vec![])).unwrap();
    assert_eq!(
        kinds(store, &[key(1, 1), key(1, 2), key(1, 3)]),
        vec![
            (key(1, 1), RecordKind::Requeued),
            (key(1, 2), RecordKind::Requeued),
            (key(1, 3), RecordKind::Requeued),
        ]
    );
    let wrong = Some((13, Terminal::Dead, Some(RecordKind::Delivered)));
    assert_eq!(store.first_bad_requeue().unwrap(), wrong);
    let never = row(14, key(2, 7), requeued(Terminal::Parked, at(0)));
    store.commit(&batch(14, vec![never], vec![])).unwrap();
    assert_eq!(
        store.first_bad_requeue().unwrap(),
        wrong,
        "the first by seq"
    );
}

fn a_requeue_of_a_delivery_never_enqueued_is_found(store: &mut dyn Store) {
    use hookledger::ledger::record::Terminal;
    let rows = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(1, 1), RecordBody::Parked { reason: "r".into() }),
        row(3, key(2, 1), requeued(Terminal::Parked, at(0))),
    ];
    store.commit(&batch(1, rows, vec![])).unwrap();
    assert_eq!(
        store.first_bad_requeue().unwrap(),
        Some((3, Terminal::Parked, None))
    );
    assert_eq!(store.last_kinds(&[key(2, 2)]).unwrap(), vec![]);
}

fn history_events_and_settings(store: &mut dyn Store) {
    let rows = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(2, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(3, key(1, 1), attempted(1)),
    ];
    let mut b = batch(1, rows.clone(), vec![stored_event(1)]);
    b.settings.push(("api_token".into(), "t1".into()));
    store.commit(&b).unwrap();
    assert_eq!(
        store.enqueued_webhooks(event(1)).unwrap(),
        vec![webhook(1), webhook(2)]
    );
    assert!(store.enqueued_webhooks(event(2)).unwrap().is_empty());
    use hookledger::ledger::record::RecordKind;
    assert_eq!(store.page(0, 2, None, None).unwrap(), rows[..2].to_vec());
    assert_eq!(
        store.page(1, 10, Some(webhook(1)), None).unwrap(),
        vec![rows[2].clone()]
    );
    let attempts = store
        .page(0, 10, None, Some(RecordKind::Attempted))
        .unwrap();
    assert_eq!(attempts, vec![rows[2].clone()]);
    let trail = store.history(key(1, 1)).unwrap();
    assert_eq!(trail, vec![rows[0].clone(), rows[2].clone()]);
    let found = store
        .events(&[event(1), EventId(uuid::Uuid::nil())])
        .unwrap();
    assert_eq!(found, vec![stored_event(1)]);
    assert_eq!(store.setting("api_token").unwrap().as_deref(), Some("t1"));
    assert_eq!(store.setting("missing").unwrap(), None);
}

fn events_are_read_by_the_records_that_name_them(store: &mut dyn Store) {
    let first = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(1, 2), RecordBody::Enqueued { due_at: at(0) }),
    ];
    store
        .commit(&batch(1, first, vec![stored_event(1), stored_event(2)]))
        .unwrap();
    // A later batch names the old event 1 (an attempt) and its own event 3, twice.
    let later = vec![
        row(3, key(1, 3), RecordBody::Enqueued { due_at: at(0) }),
        row(4, key(1, 1), attempted(1)),
        row(5, key(2, 3), RecordBody::Enqueued { due_at: at(0) }),
    ];
    store
        .commit(&batch(3, later, vec![stored_event(3)]))
        .unwrap();
    let seqs = |first, last| -> Vec<u64> {
        let found = store.events_of_records(first, last).unwrap();
        found.iter().map(|e| e.seq).collect()
    };
    assert_eq!(seqs(3, 5), [1, 3], "each named event once, in seq order");
    assert_eq!(seqs(2, 2), [2]);
    assert_eq!(seqs(1, 5), [1, 2, 3]);
    assert_eq!(seqs(6, 9), Vec::<u64>::new());
    assert_eq!(
        store.events_of_records(4, 4).unwrap(),
        vec![stored_event(1)],
        "the whole event"
    );
}

fn duplicate_enqueues_are_found(store: &mut dyn Store) {
    let rows = vec![
        row(1, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
        row(2, key(1, 2), RecordBody::Enqueued { due_at: at(0) }),
        row(3, key(1, 1), RecordBody::Enqueued { due_at: at(0) }),
    ];
    store.commit(&batch(1, rows, vec![])).unwrap();
    assert_eq!(store.first_duplicate_enqueue().unwrap(), Some(3));
}

#[test]
fn duckdb_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    conformance(&|| {
        counter.set(counter.get() + 1);
        let path = dir.path().join(format!("store-{}.duckdb", counter.get()));
        let mut store = DuckStore::open(&path, OpenMode::ReadWrite).unwrap();
        // Small buckets, so that the suite crosses several.
        store.set_bucket_events(4);
        Box::new(store)
    });
}

#[test]
fn postgres_store_passes_the_conformance_suite() {
    let Some(server) = crate::pg_common::server("postgres_store_passes_the_conformance_suite")
    else {
        return;
    };
    conformance(&|| {
        let url = crate::pg_common::fresh_schema(&server);
        Box::new(PgStore::open(&url, OpenMode::ReadWrite).unwrap())
    });
}

#[test]
fn postgres_store_deletes_checkpoints_by_seq() {
    let url = pg_schema!("postgres_store_deletes_checkpoints_by_seq");
    let mut store = PgStore::open(&url, OpenMode::ReadWrite).unwrap();
    checkpoints_are_deleted_by_seq(&mut store);
}

#[test]
fn a_read_only_open_of_a_missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.duckdb");
    let err = DuckStore::open(&path, OpenMode::ReadOnly).err().unwrap();
    assert!(err.to_string().contains("no database at"), "{err}");
    assert!(!path.exists(), "a read-only open creates nothing");
}

#[test]
fn a_schema_newer_than_this_build_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.duckdb");
    {
        let store = DuckStore::open(&path, OpenMode::ReadWrite).unwrap();
        store
            .connection()
            .execute("INSERT INTO schema_migrations (version) VALUES (9)", [])
            .unwrap();
    }
    for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let err = DuckStore::open(&path, mode).err().unwrap();
        assert!(
            matches!(
                err,
                hookledger::LedgerError::SchemaTooNew {
                    found: 9,
                    supported: 8
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains('9') && text.contains('8'), "{text}");
    }
}

#[test]
fn an_older_file_is_migrated_forward_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    {
        // A file as schema 1 left it: no audit views, version 1 recorded.
        let store = DuckStore::open(&path, OpenMode::ReadWrite).unwrap();
        store
            .connection()
            .execute_batch(
                "DROP VIEW delivery_history CASCADE; DROP VIEW IF EXISTS delivery_latest; \
                 DROP VIEW attempt_outcomes; DROP VIEW webhook_history; \
                 DROP VIEW events_all; DROP TABLE event_buckets; \
                 DROP TABLE projection_checkpoints; DROP SEQUENCE checkpoint_ids; \
                 DELETE FROM schema_migrations WHERE version >= 2;",
            )
            .unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
    }
    let store = DuckStore::open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(store.schema_version().unwrap(), 8);
    let n: i64 = store
        .connection()
        .query_row("SELECT count(*) FROM delivery_latest", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

/// A file as schema 2 left it (one keyed `events` table, no buckets, no checkpoints), with
/// history: it opens, migrates, verifies, keeps refusing its old event ids once its events are
/// sealed into bucket 0, and verifies again.
#[test]
fn a_schema_2_file_with_history_migrates_forward_and_still_verifies() {
    use hookledger::ledger::LedgerOptions;
    let mut t = TestLedger::new();
    for n in 1..=5 {
        t.publish(n, &[webhook(1)]).unwrap();
    }
    t.append(key(1, 1), attempted(1)).unwrap();
    t.append(key(1, 1), delivered(1)).unwrap();
    let live = t.ledger().state();
    t.close();
    {
        let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
        store
            .connection()
            .execute_batch(
                "DROP VIEW events_all; DROP TABLE event_buckets;                  DROP TABLE projection_checkpoints;                  DROP SEQUENCE checkpoint_ids;                  DELETE FROM schema_migrations WHERE version >= 3;",
            )
            .unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
    }
    let options = LedgerOptions {
        bucket_events: 2,
        checkpoint_every: None,
        ..LedgerOptions::default()
    };
    t.reopen_with(&options);
    assert_eq!(t.ledger().state(), live);
    assert!(t.ledger().verify().unwrap().ok());
    for n in 6..=9 {
        t.publish(n, &[webhook(1)]).unwrap();
    }
    let same = t.publish(1, &[webhook(1)]);
    assert!(
        matches!(
            same,
            Err(hookledger::LedgerError::EventExists {
                same_body: true,
                ..
            })
        ),
        "{same:?}"
    );
    t.ledger().checkpoint_now().unwrap();
    t.reopen_with(&options);
    let reader = t.ledger().reader().unwrap();
    assert_eq!(reader.schema_version().unwrap(), 8);
    let sealed: i64 = reader
        .connection()
        .unwrap()
        .query_row("SELECT count(*) FROM event_buckets", [], |r| r.get(0))
        .unwrap();
    assert!(sealed >= 2, "{sealed}");
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(verdict.events, 9);
}

/// Thinning's one delete: every row at the given seqs goes, in one call, and nothing else.
fn checkpoints_are_deleted_by_seq(store: &mut dyn Store) {
    use hookledger::store::StoredCheckpoint;
    let cp = |seq: u64, b: u8| StoredCheckpoint {
        seq,
        chain_hash: [b; 32],
        recorded_at_us: Some(seq as i64 * 1000),
        format_version: 1,
        digest: [b; 32],
        body: vec![b; 4],
    };
    assert_eq!(store.delete_checkpoints(&[1, 2]).unwrap(), 0, "none stored");
    for (seq, b) in [(2, 1), (5, 2), (5, 3), (7, 4), (9, 5)] {
        store.append_checkpoint(&cp(seq, b)).unwrap();
    }
    assert_eq!(store.delete_checkpoints(&[]).unwrap(), 0);
    assert_eq!(store.delete_checkpoints(&[5, 9, 11]).unwrap(), 3);
    let left: Vec<u64> = store
        .checkpoint_index()
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(left, [2, 7]);
    assert!(store.checkpoints_at(5).unwrap().is_empty());
    assert_eq!(store.checkpoints_at(7).unwrap(), vec![cp(7, 4)]);
}

#[test]
fn duckdb_store_deletes_checkpoints_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DuckStore::open(&dir.path().join("thin.duckdb"), OpenMode::ReadWrite).unwrap();
    checkpoints_are_deleted_by_seq(&mut store);
}
