//! Actors on PostgreSQL (issue 17): a database of schema 3 (before actors) holding a row of
//! format 2 as an older build wrote it opens read-only and read-write (migrating to the actor
//! column), verifies and shows no actor for that row; a change made now stores its actor;
//! editing a stored actor (of the new row, or one put on the old row) makes `verify` fail at
//! that change's seq.

use std::sync::Arc;

use hookledger::clock::ManualClock;
use hookledger::delivery::signing::Secret;
use hookledger::ids::WebhookId;
use hookledger::ledger::verify::{verify, Log, Verdict};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::{Ledger, LedgerOptions};
use hookledger::registry::{genesis, Actor, Change, ChangeRecord, StoredChange};
use hookledger::store::any::Location;
use hookledger::store::duck::OpenMode;
use hookledger::store::pg::PgStore;
use hookledger::store::{CommitBatch, Store};

use crate::pg_common::connect;

/// schema/pg/002_audit_views.sql's `webhook_history`, as databases of schema 3 have it.
const OLD_VIEW: &str = "CREATE VIEW webhook_history AS \
    SELECT seq, recorded_at, kind, coalesce(app, 'default') AS app, webhook_id, url, \
    event_types, description, active, payload_format, name, metadata, token_id, reason \
    FROM webhook_changes";

fn read_only(url: &str) -> PgStore {
    PgStore::open(url, OpenMode::ReadOnly).unwrap()
}

fn verdict(url: &str) -> Verdict {
    verify(&read_only(url), None).unwrap()
}

fn assert_fails_at(v: &Verdict, seq: u64, case: &str) {
    let p = v
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: verify passed"));
    assert_eq!((p.log, p.seq), (Log::Registry, seq), "{case}: {v}");
}

#[test]
fn a_postgres_ledger_from_before_actors_upgrades_and_its_actors_are_chained() {
    let url = pg_schema!("a_postgres_ledger_from_before_actors_upgrades");
    let id = WebhookId::new();
    {
        // An older build's database: a format 2 row, and no actor column (schema 3).
        let mut store = PgStore::open(&url, OpenMode::ReadWrite).unwrap();
        let rec = ChangeRecord {
            seq: 1,
            recorded_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            webhook_id: id,
            change: Change::created("http://127.0.0.1:9/h", vec![], None, Secret::generate()),
        };
        let mut row = StoredChange::from_change(&rec, &genesis());
        row.format_version = 2;
        row.hash = row.link(&genesis());
        store
            .commit(&CommitBatch {
                changes: vec![row],
                ..CommitBatch::default()
            })
            .unwrap();
    }
    connect(&url)
        .batch_execute(&format!(
            "DROP VIEW webhook_history; ALTER TABLE webhook_changes DROP COLUMN actor; \
             {OLD_VIEW}; DELETE FROM schema_migrations WHERE version = 4"
        ))
        .unwrap();
    assert_eq!(read_only(&url).schema_version().unwrap(), 3);
    let old = read_only(&url).changes().unwrap();
    assert_eq!((old[0].format_version, old[0].actor.clone()), (2, None));
    let v = verdict(&url);
    assert!(v.ok(), "read-only, before the migration: {v}");

    let ledger = Ledger::open_at(
        &Location::Postgres(url.clone()),
        Arc::new(ManualClock::at_epoch()),
        &LedgerOptions::default(),
    )
    .unwrap();
    let change = Change::Deactivated { reason: "r".into() }.by(Actor::Operator);
    ledger
        .commit_blocking(Commit {
            changes: vec![(id, change)],
            ..Commit::default()
        })
        .unwrap();
    ledger.close();
    let store = read_only(&url);
    assert_eq!(
        store.schema_version().unwrap(),
        hookledger::store::pg::supported_schema()
    );
    let rows: Vec<_> = store
        .changes()
        .unwrap()
        .into_iter()
        .map(|c| (c.seq, c.format_version, c.actor))
        .collect();
    assert_eq!(
        rows,
        vec![(1, 2, None), (2, 3, Some("operator".to_owned()))]
    );
    let v = verdict(&url);
    assert!(v.ok(), "{v}");

    let mut admin = connect(&url);
    let attack = |admin: &mut postgres::Client, sql: &str| {
        assert_eq!(admin.execute(sql, &[]).unwrap(), 1, "{sql}");
    };
    attack(
        &mut admin,
        "UPDATE webhook_changes SET actor = 'cli' WHERE seq = 2",
    );
    assert_fails_at(&verdict(&url), 2, "another actor");
    attack(
        &mut admin,
        "UPDATE webhook_changes SET actor = 'operator' WHERE seq = 2",
    );
    assert!(verdict(&url).ok(), "restored");
    attack(
        &mut admin,
        "UPDATE webhook_changes SET actor = 'operator' WHERE seq = 1",
    );
    assert_fails_at(&verdict(&url), 1, "an actor on the old row");
}
