//! The ledger on PostgreSQL: the same commits fold to the same state as on DuckDB, a reopen
//! (from genesis or a checkpoint) rebuilds it, repeated event ids are answered as on DuckDB,
//! and tampering with rows through SQL is found by `verify`.

use std::sync::Arc;

use hookledger::clock::{Clock, ManualClock};
use hookledger::ledger::verify::{verify, Log};
use hookledger::ledger::{Ledger, LedgerOptions};
use hookledger::store::any::Location;
use hookledger::store::pg::PgStore;
use hookledger::LedgerError;

use crate::common::*;
use crate::pg_common::connect;

/// Opens a ledger at `location` with a manual clock at the epoch.
pub fn open(location: &Location, clock: &ManualClock, options: &LedgerOptions) -> Ledger {
    Ledger::open_at(location, Arc::new(clock.clone()), options).expect("open the ledger")
}

/// The same scenario on any ledger: three events to two webhooks, attempts, a failure, a
/// delivery, a dead-parking; answers the seqs committed.
pub fn scenario(ledger: &Ledger, clock: &ManualClock) -> Vec<u64> {
    let mut seqs = Vec::new();
    for n in 1..=3 {
        seqs.extend(
            ledger
                .commit_blocking(publish_commit(n, &[webhook(1), webhook(2)], clock.now()))
                .unwrap()
                .seqs,
        );
        clock.advance(chrono::Duration::seconds(1));
    }
    let next = clock.now() + chrono::Duration::seconds(30);
    let steps = [
        (key(1, 1), attempted(1)),
        (key(1, 1), failed(1, 503, next)),
        (key(1, 1), attempted(2)),
        (key(1, 1), delivered(2)),
        (key(2, 2), dead_parked()),
    ];
    for (k, body) in steps {
        let commit = hookledger::ledger::writer::Commit {
            records: vec![hookledger::ledger::record::NewRecord::new(k, body)],
            ..Default::default()
        };
        seqs.extend(ledger.commit_blocking(commit).unwrap().seqs);
        clock.advance(chrono::Duration::seconds(1));
    }
    seqs
}

#[test]
fn the_same_commits_fold_to_the_same_state_on_postgres_and_duckdb_and_survive_a_reopen() {
    let url = pg_schema!("the_same_commits_fold_to_the_same_state_on_postgres_and_duckdb");
    let pg = Location::Postgres(url.clone());
    let dir = tempfile::tempdir().unwrap();
    let duck = Location::Duck(dir.path().join("same.duckdb"));
    let options = LedgerOptions {
        checkpoint_every: None,
        ..LedgerOptions::default()
    };
    let mut states = Vec::new();
    for location in [&duck, &pg] {
        let clock = ManualClock::at_epoch();
        let ledger = open(location, &clock, &options);
        assert_eq!(scenario(&ledger, &clock), (1..=11).collect::<Vec<_>>());
        let verdict = ledger.verify().unwrap();
        assert!(verdict.ok(), "{location}: {verdict}");
        assert_eq!(ledger.history(key(1, 1)).unwrap().len(), 5);
        states.push((ledger.state(), ledger.head().unwrap()));
        ledger.close();
    }
    assert_eq!(states[0], states[1], "DuckDB and PostgreSQL fold alike");
    // Reopened from genesis, then from a checkpoint: the same state and head.
    let clock = ManualClock::at_epoch();
    let ledger = open(&pg, &clock, &LedgerOptions::default());
    assert_eq!(ledger.rebuild_stats().records, 11);
    assert_eq!((ledger.state(), ledger.head().unwrap()), states[1]);
    assert_eq!(ledger.checkpoint_now().unwrap(), Some(11));
    ledger.close();
    let ledger = open(&pg, &clock, &LedgerOptions::default());
    assert_eq!(ledger.rebuild_stats().start.checkpoint, Some(11));
    assert_eq!((ledger.state(), ledger.head().unwrap()), states[1]);
    assert_eq!(ledger.state_at_seq(3).unwrap().last_seq(), 3);
    let verdict = ledger.verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
}

#[test]
fn a_repeated_event_id_is_answered_as_on_duckdb() {
    let url = pg_schema!("a_repeated_event_id_is_answered_as_on_duckdb");
    let clock = ManualClock::at_epoch();
    let ledger = open(&Location::Postgres(url), &clock, &LedgerOptions::default());
    ledger
        .commit_blocking(publish_commit(1, &[webhook(1)], clock.now()))
        .unwrap();
    let same = ledger.commit_blocking(publish_commit(1, &[webhook(1)], clock.now()));
    assert!(
        matches!(
            same,
            Err(LedgerError::EventExists {
                same_body: true,
                ..
            })
        ),
        "{same:?}"
    );
    let mut other = publish_commit(1, &[webhook(1)], clock.now());
    other.events[0].body = b"{\"order\":\"other\"}".to_vec();
    let other = ledger.commit_blocking(other);
    assert!(
        matches!(
            other,
            Err(LedgerError::EventExists {
                same_body: false,
                ..
            })
        ),
        "{other:?}"
    );
    assert_eq!(
        ledger.state().last_seq(),
        1,
        "nothing of a refused publish is written"
    );
    assert!(ledger.verify().unwrap().ok());
}

/// Writes one scenario to a fresh schema, closes the ledger, runs `attack` through psql's
/// protocol, and verifies the store read-only.
fn attacked(name: &str, attack: &str) -> Option<hookledger::ledger::verify::Verdict> {
    let server = crate::pg_common::server(name)?;
    let url = crate::pg_common::fresh_schema(&server);
    let clock = ManualClock::at_epoch();
    let ledger = open(
        &Location::Postgres(url.clone()),
        &clock,
        &LedgerOptions::default(),
    );
    scenario(&ledger, &clock);
    ledger.close();
    let changed = connect(&url).execute(attack, &[]).unwrap();
    assert!(changed > 0, "the attack changed nothing: {attack}");
    let store = PgStore::open(&url, hookledger::store::duck::OpenMode::ReadOnly).unwrap();
    Some(verify(&store, None).unwrap())
}

#[test]
fn tampering_through_sql_is_found_by_verify_at_its_seq() {
    let cases = [
        (
            "status_code",
            Log::Ledger,
            5,
            "UPDATE webhook_deliveries SET status_code = 500 WHERE seq = 5",
        ),
        (
            "recorded_at",
            Log::Ledger,
            7,
            "UPDATE webhook_deliveries SET recorded_at = recorded_at + interval '1 second' WHERE seq = 7",
        ),
        ("a deleted record", Log::Ledger, 9, "DELETE FROM webhook_deliveries WHERE seq = 9"),
        (
            "an event body",
            Log::Events,
            2,
            "UPDATE events SET body = convert_to('{\"order\":99}', 'UTF8') WHERE seq = 2",
        ),
    ];
    for (case, log, seq, attack) in cases {
        let Some(verdict) = attacked(
            "tampering_through_sql_is_found_by_verify_at_its_seq",
            attack,
        ) else {
            return;
        };
        assert!(!verdict.ok(), "{case}: tampering went unnoticed: {verdict}");
        let p = verdict.problem.as_ref().unwrap();
        assert_eq!((p.log, p.seq), (log, seq), "{case}: {verdict}");
    }
}

#[test]
fn an_untampered_postgres_ledger_verifies_read_only() {
    let Some(verdict) = attacked(
        "an_untampered_postgres_ledger_verifies_read_only",
        "INSERT INTO settings (name, value) VALUES ('note', 'not a ledger row')",
    ) else {
        return;
    };
    assert!(verdict.ok(), "{verdict}");
    assert_eq!((verdict.records, verdict.events), (11, 3));
}

#[test]
fn a_store_flag_that_is_not_a_postgres_url_is_refused_naming_the_flag() {
    let err = Location::from_flags("x.duckdb".into(), Some("mysql://h/db")).unwrap_err();
    assert!(err.to_string().contains("--store"), "{err}");
    let shown = Location::Postgres("postgres://u:secret@h:5/db".into()).to_string();
    assert!(!shown.contains("secret"), "{shown}");
}

/// The writer's partition fence on PostgreSQL (`crate::cluster`): a node that leases no
/// partition of a webhook may enqueue its deliveries, but neither start an attempt of one
/// nor declare one abandoned, and nothing of a refused commit is written; once the node
/// leases the partition, both go through.
#[test]
fn the_fence_refuses_attempts_and_abandons_outside_the_nodes_partitions() {
    use hookledger::cluster::{partition_of, Membership};
    use hookledger::ledger::record::{ErrorClass, Failure, NewRecord, RecordBody};
    use hookledger::ledger::writer::Commit;

    let url = pg_schema!("the_fence_refuses_attempts_and_abandons_outside_the_nodes_partitions");
    let clock = ManualClock::at_epoch();
    let ledger = open(
        &Location::Postgres(url.clone()),
        &clock,
        &LedgerOptions::default(),
    );
    let node = uuid::Uuid::new_v4();
    ledger.shared().set_cluster(Arc::new(Membership::new(node)));
    // Any node enqueues: a publish lands on whichever node the producer reached.
    ledger
        .commit_blocking(publish_commit(1, &[webhook(1)], clock.now()))
        .unwrap();
    let one = |body: RecordBody| Commit {
        records: vec![NewRecord::new(key(1, 1), body)],
        ..Commit::default()
    };
    let abandoned = || {
        RecordBody::Failed(Failure {
            attempt: 1,
            status: None,
            error_class: ErrorClass::Abandoned,
            error: "the node attempting it stopped".into(),
            duration_ms: 0,
            next_due_at: clock.now(),
            response_body: None,
        })
    };
    let head = ledger.state().last_seq();
    let refused = ledger.commit_blocking(one(attempted(1))).unwrap_err();
    assert!(
        matches!(refused, LedgerError::NotLeased { .. }),
        "{refused}"
    );
    assert_eq!(
        ledger.state().last_seq(),
        head,
        "nothing of a refused attempt"
    );

    // The node takes the webhook's partition: its attempt goes through.
    let partition = i32::from(partition_of(webhook(1)));
    let mut client = connect(&url);
    let take = "UPDATE partition_leases SET node_id = $1, expires_at = now() + interval '1 hour', \
                epoch = epoch + 1 WHERE partition = $2";
    client.execute(take, &[&node, &partition]).unwrap();
    ledger.commit_blocking(one(attempted(1))).unwrap();

    // Handed to another node before it could declare that attempt cut off: refused.
    client
        .execute(take, &[&uuid::Uuid::new_v4(), &partition])
        .unwrap();
    let head = ledger.state().last_seq();
    let refused = ledger.commit_blocking(one(abandoned())).unwrap_err();
    assert!(
        matches!(refused, LedgerError::NotLeased { .. }),
        "{refused}"
    );
    assert_eq!(
        ledger.state().last_seq(),
        head,
        "nothing of a refused abandon"
    );
    // The attempt's own outcome still lands: its request was on the wire.
    let next = clock.now() + chrono::Duration::seconds(30);
    ledger.commit_blocking(one(failed(1, 503, next))).unwrap();
    assert!(ledger.verify().unwrap().ok());
}
