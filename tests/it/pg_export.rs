//! `hookledger export --store URL` on a PostgreSQL ledger: the same commits as on DuckDB give
//! the same files, row for row (records, chain links, event metadata), `verify --export`
//! passes on them, and a second run after more commits continues right after the last file
//! (the store's `links_after` and `events_of_records` on PostgreSQL).

use std::path::Path;

use hookledger::clock::{Clock, ManualClock};
use hookledger::export::writer::{list, read_file};
use hookledger::ledger::writer::Commit;
use hookledger::ledger::LedgerOptions;
use hookledger::store::any::Location;

use crate::common::*;
use crate::export::{run, verify_export};
use crate::pg_ledger::{open, scenario};

/// Every row of every file in `dir`, in file order, with the files' ranges.
fn exported(dir: &Path) -> (Vec<(u64, u64)>, Vec<hookledger::export::rows::Row>) {
    let files = list(dir).unwrap();
    let ranges = files.iter().map(|(r, _)| (r.first, r.last)).collect();
    let rows = files
        .iter()
        .flat_map(|(_, name)| read_file(&dir.join(name)).unwrap())
        .collect();
    (ranges, rows)
}

fn export_to(source: &[&str], out: &Path, every: &str) {
    let mut args = vec!["export"];
    args.extend_from_slice(source);
    args.extend_from_slice(&["--out", out.to_str().unwrap(), "--every", every]);
    let o = run(&args);
    assert!(
        o.status.success(),
        "export {source:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_postgres_ledger_exports_the_same_files_as_duckdb_and_a_second_run_continues() {
    let url = pg_schema!("a_postgres_ledger_exports_the_same_files_as_duckdb");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("same.duckdb");
    let options = LedgerOptions {
        checkpoint_every: None,
        ..LedgerOptions::default()
    };
    let db_arg = db.to_str().unwrap().to_owned();
    let sources = [
        (Location::Duck(db.clone()), vec!["--db", db_arg.as_str()]),
        (
            Location::Postgres(url.clone()),
            vec!["--store", url.as_str()],
        ),
    ];
    let mut exports = Vec::new();
    for (n, (location, source)) in sources.iter().enumerate() {
        let clock = ManualClock::at_epoch();
        let ledger = open(location, &clock, &options);
        assert_eq!(scenario(&ledger, &clock).len(), 11);
        ledger.close();
        let out = dir.path().join(format!("export-{n}"));
        export_to(source, &out, "4");
        let first = exported(&out);
        let (ok, said) = verify_export(&out);
        assert!(ok, "{location}: {said}");

        // More commits (an attempt of the first, oldest event among them), then a second run.
        let ledger = open(location, &clock, &options);
        let more = Commit {
            records: vec![hookledger::ledger::record::NewRecord::new(
                key(2, 1),
                attempted(1),
            )],
            ..Default::default()
        };
        ledger.commit_blocking(more).unwrap();
        ledger
            .commit_blocking(publish_commit(4, &[webhook(1)], clock.now()))
            .unwrap();
        ledger.close();
        export_to(source, &out, "100");
        let second = exported(&out);
        assert_eq!(
            second.0[..first.0.len()],
            first.0[..],
            "{location}: the first run's files stay"
        );
        assert_eq!(
            second.0[first.0.len()..],
            [(12, 13)],
            "{location}: one new file, right after the last"
        );
        let last = &second.1[11..];
        assert_eq!(
            last.iter()
                .map(|r| r.event.as_ref().map(|e| e.event_seq))
                .collect::<Vec<_>>(),
            [Some(1), Some(4)],
            "{location}: an old event's metadata comes with its new record"
        );
        let (ok, said) = verify_export(&out);
        assert!(ok, "{location}: {said}");
        assert!(said.contains("13 records"), "{location}: {said}");
        exports.push(second);
    }
    assert_eq!(exports[0], exports[1], "DuckDB and PostgreSQL export alike");
}
