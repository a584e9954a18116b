//! The PostgreSQL store's schema: migrations applied once and versioned, a newer schema
//! refused naming both versions, read-only opens that create and write nothing, and the audit
//! views with DuckDB's names and columns.

use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::pg::{supported_schema, PgStore};
use hookledger::store::{CommitBatch, Store};

use crate::pg_common::connect;

fn migrations(url: &str) -> Vec<i32> {
    connect(url)
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn migrations_are_applied_once_and_versioned() {
    let url = pg_schema!("migrations_are_applied_once_and_versioned");
    let all: Vec<i32> = (1..=supported_schema() as i32).collect();
    // Nodes starting together: every open migrates or waits for the one that does.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, OpenMode::ReadWrite).map(|_| ()))
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    assert_eq!(migrations(&url), all);
    let store = PgStore::open(&url, OpenMode::ReadWrite).unwrap();
    assert_eq!(store.schema_version().unwrap(), supported_schema());
    assert_eq!(migrations(&url), all, "a second open applies nothing");
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let url = pg_schema!("a_newer_schema_is_refused_naming_both_versions");
    drop(PgStore::open(&url, OpenMode::ReadWrite).unwrap());
    connect(&url)
        .execute("INSERT INTO schema_migrations (version) VALUES (9)", &[])
        .unwrap();
    for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let err = PgStore::open(&url, mode).err().unwrap();
        assert!(
            matches!(err, hookledger::LedgerError::SchemaTooNew { found: 9, supported } if supported == supported_schema()),
            "{err:?}"
        );
    }
}

#[test]
fn a_read_only_open_of_an_empty_database_says_so_and_creates_nothing() {
    let url = pg_schema!("a_read_only_open_of_an_empty_database_says_so_and_creates_nothing");
    let err = PgStore::open(&url, OpenMode::ReadOnly).err().unwrap();
    assert!(err.to_string().contains("--store"), "{err}");
    let tables: i64 = connect(&url)
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn a_read_only_store_refuses_to_write() {
    let url = pg_schema!("a_read_only_store_refuses_to_write");
    drop(PgStore::open(&url, OpenMode::ReadWrite).unwrap());
    let mut store = PgStore::open(&url, OpenMode::ReadOnly).unwrap();
    let refused = store.commit(&CommitBatch {
        settings: vec![("api_token".into(), "t".into())],
        ..CommitBatch::default()
    });
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(store.setting("api_token").unwrap(), None);
}

/// The audit views' columns, by name in order, on DuckDB and on PostgreSQL.
#[test]
fn the_audit_views_have_duckdbs_names_and_columns() {
    let url = pg_schema!("the_audit_views_have_duckdbs_names_and_columns");
    let dir = tempfile::tempdir().unwrap();
    let duck = DuckStore::open(&dir.path().join("views.duckdb"), OpenMode::ReadWrite).unwrap();
    let _pg = PgStore::open(&url, OpenMode::ReadWrite).unwrap();
    let mut pg = connect(&url);
    for view in [
        "delivery_history",
        "delivery_latest",
        "attempt_outcomes",
        "webhook_history",
        "events_all",
    ] {
        let sql = "SELECT column_name FROM information_schema.columns WHERE table_name = ? \
                   ORDER BY ordinal_position";
        let mut stmt = duck.connection().prepare(sql).unwrap();
        let in_duck: Vec<String> = stmt
            .query_map([view], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let in_pg: Vec<String> = pg
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                &[&view],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!in_duck.is_empty(), "{view} exists on DuckDB");
        assert_eq!(in_pg, in_duck, "{view}");
    }
}
