//! Schema 8's layout of projection checkpoints in a DuckDB file (`src/store/duck/checkpoints.rs`):
//! each body in a table of its own, dropped with its row when thinned; a body table gone by
//! hand makes its checkpoint ignored, not the open fail; a schema 7 file (bodies inline) reads
//! read-only as it is, and migrates its checkpoints so that the next open starts from one.

use hookledger::ledger::LedgerOptions;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::Store;

use crate::common::*;

fn manual() -> LedgerOptions {
    LedgerOptions {
        checkpoint_every: None,
        ..LedgerOptions::default()
    }
}

fn body_tables(conn: &duckdb::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() \
             WHERE table_name LIKE 'checkpoint_body_%' ORDER BY table_name",
        )
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// The seqs of the stored checkpoints, in order.
fn stored_seqs(store: &impl Store) -> Vec<u64> {
    let index = store.checkpoint_index().unwrap();
    index.iter().map(|c| c.seq).collect()
}

/// Three deliveries, a checkpoint at seq 9, two more records.
fn fixture() -> TestLedger {
    let t = TestLedger::with_options(&manual());
    for n in 1..=3 {
        t.publish(n, &[webhook(1), webhook(2)]).unwrap();
    }
    t.append(key(1, 1), attempted(1)).unwrap();
    t.append(key(1, 2), attempted(1)).unwrap();
    t.append(key(1, 3), attempted(1)).unwrap();
    assert_eq!(t.ledger().checkpoint_now().unwrap(), Some(9));
    t.append(key(1, 1), delivered(1)).unwrap();
    t.append(key(2, 3), dead_parked()).unwrap();
    t
}

#[test]
fn each_body_has_its_own_table_and_thinning_drops_it_with_its_row() {
    let t = fixture();
    for n in 4..=6 {
        t.publish(n, &[webhook(1)]).unwrap();
        t.ledger().checkpoint_now().unwrap();
    }
    let mut store = t.ledger().reader().unwrap();
    assert_eq!(stored_seqs(&store), vec![9, 12, 13, 14]);
    assert_eq!(body_tables(store.connection().unwrap()).len(), 4);
    let first = store.checkpoints_at(9).unwrap();
    assert_eq!(first.len(), 1);
    assert!(!first[0].body.is_empty());

    assert_eq!(store.delete_checkpoints(&[9, 13]).unwrap(), 2);
    assert_eq!(stored_seqs(&store), vec![12, 14]);
    assert_eq!(
        body_tables(store.connection().unwrap()).len(),
        2,
        "the bodies went with their rows"
    );
    assert!(store.checkpoints_at(9).unwrap().is_empty());
    // A new checkpoint takes a fresh id, never a dropped one's table.
    t.publish(7, &[webhook(1)]).unwrap();
    t.ledger().checkpoint_now().unwrap();
    assert_eq!(body_tables(store.connection().unwrap()).len(), 3);
    assert!(t.ledger().verify().unwrap().ok());
}

#[test]
fn a_checkpoint_whose_body_table_was_dropped_by_hand_is_ignored_and_the_full_fold_runs() {
    let mut t = fixture();
    let live = t.ledger().state();
    t.close();
    {
        let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
        let tables = body_tables(store.connection());
        assert_eq!(tables.len(), 1);
        store
            .connection()
            .execute_batch(&format!("DROP TABLE {}", tables[0]))
            .unwrap();
    }
    t.reopen_with(&manual());
    let start = t.ledger().rebuild_stats().start.clone();
    assert_eq!(start.checkpoint, None, "the full fold ran");
    assert_eq!(start.ignored.len(), 1);
    assert_eq!(start.ignored[0].seq, 9);
    assert!(
        start.ignored[0].reason.contains("digest"),
        "{:?}",
        start.ignored
    );
    assert_eq!(t.ledger().state(), live);
}

/// Turns a closed schema 8 file back into schema 7's layout: bodies inline in
/// `projection_checkpoints`, no body tables, no sequence.
fn as_schema_7(t: &TestLedger) {
    let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
    let tables = body_tables(store.connection());
    assert_eq!(tables.len(), 1);
    store
        .connection()
        .execute_batch(&format!(
            "CREATE TABLE old_checkpoints (seq BIGINT NOT NULL, chain_hash BLOB NOT NULL, \
               recorded_at TIMESTAMP, format_version UTINYINT NOT NULL, digest BLOB NOT NULL, \
               created_at TIMESTAMP NOT NULL DEFAULT current_timestamp, \
               body_bytes BIGINT NOT NULL, body BLOB NOT NULL); \
             INSERT INTO old_checkpoints SELECT p.seq, p.chain_hash, p.recorded_at, \
               p.format_version, p.digest, p.created_at, p.body_bytes, b.body \
               FROM projection_checkpoints p, {} b; \
             DROP TABLE projection_checkpoints; DROP TABLE {}; DROP SEQUENCE checkpoint_ids; \
             ALTER TABLE old_checkpoints RENAME TO projection_checkpoints; \
             DELETE FROM schema_migrations WHERE version >= 8;",
            tables[0], tables[0]
        ))
        .unwrap();
    assert_eq!(store.schema_version().unwrap(), 7);
}

#[test]
fn a_schema_7_file_reads_its_checkpoints_read_only_and_migrates_them_forward() {
    let mut t = fixture();
    let live = t.ledger().state();
    let before = t.ledger().reader().unwrap().checkpoints_at(9).unwrap();
    t.close();
    as_schema_7(&t);
    {
        let old = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
        assert_eq!(old.schema_version().unwrap(), 7);
        assert_eq!(old.checkpoints_at(9).unwrap(), before, "read inline");
        let verdict = hookledger::ledger::verify::verify(&old, None).unwrap();
        assert!(verdict.ok(), "{verdict}");
    }
    t.reopen_with(&manual());
    let reader = t.ledger().reader().unwrap();
    assert_eq!(reader.schema_version().unwrap(), 8);
    assert_eq!(body_tables(reader.connection().unwrap()).len(), 1);
    assert_eq!(reader.checkpoints_at(9).unwrap(), before, "moved whole");
    let start = t.ledger().rebuild_stats().start.clone();
    assert_eq!(start.checkpoint, Some(9), "{:?}", start.ignored);
    assert_eq!(t.ledger().state(), live);
    assert!(t.ledger().verify().unwrap().ok());
}

/// Publishes events with 64 KiB bodies until the WAL holds more than 1 MiB.
fn fill_wal(t: &TestLedger) -> u64 {
    let wal = wal_bytes(t);
    for n in 1..=24u128 {
        let mut commit = publish_commit(n, &[webhook(1)], t.now());
        commit.events[0].body = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 << 10)).into_bytes();
        t.commit(commit).unwrap();
    }
    wal_bytes(t) - wal
}

fn wal_bytes(t: &TestLedger) -> u64 {
    let mut wal = t.path.clone().into_os_string();
    wal.push(".wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// The writer checkpoints DuckDB when its queue is empty and the WAL has passed the idle
/// threshold (`Store::idle`), not only when DuckDB's own 16 MB threshold falls in a commit.
#[test]
fn the_writer_checkpoints_when_idle_once_the_wal_passes_its_threshold() {
    let off = TestLedger::with_options(&LedgerOptions {
        idle_checkpoint_mb: 0,
        ..manual()
    });
    assert!(fill_wal(&off) > 1 << 20);
    off.publish(100, &[webhook(1)]).unwrap();
    assert!(wal_bytes(&off) > 1 << 20, "turned off: the WAL stays");
    assert_eq!(off.ledger().idle_checkpoints(), 0);

    let on = TestLedger::with_options(&LedgerOptions {
        idle_checkpoint_mb: 1,
        ..manual()
    });
    fill_wal(&on);
    // The writer goes idle right after it answers the last commit; wait for that moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while on.ledger().idle_checkpoints() == 0 {
        assert!(std::time::Instant::now() < deadline, "no idle checkpoint");
        std::thread::yield_now();
    }
    assert!(
        wal_bytes(&on) < 1 << 20,
        "{} bytes of WAL left",
        wal_bytes(&on)
    );
    let state = on.ledger().state();
    let mut t = on;
    t.reopen_with(&manual());
    assert_eq!(t.ledger().state(), state, "nothing lost");
}
