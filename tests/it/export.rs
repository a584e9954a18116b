//! `hookledger export` and `hookledger verify --export` as the real binary on real ledger files:
//! whole batches in zero-padded files, a second run continues, bodies only when asked (never an
//! expunged one), `--since`/`--until`, and verify failing on an edited, deleted, swapped file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hookledger::export::manifest::Manifest;
use hookledger::export::plan::Range;
use hookledger::export::writer::{encode, list, read_file};
use hookledger::ledger::expunge::{ExpungeOrder, OPERATOR};
use hookledger::ledger::writer::Commit;
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::Store as _;

use crate::common::*;

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(args)
        .env_remove("HOOKLEDGER_DB")
        .env_remove("HOOKLEDGER_DATABASE_URL")
        .output()
        .expect("run hookledger")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn export(db: &Path, out: &Path, extra: &[&str]) -> Output {
    let (db, out) = (db.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["export", "--db", db, "--out", out];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "export: {}", text(&o));
    o
}

/// `hookledger verify --export DIR`: passed, and what it printed.
pub fn verify_export(dir: &Path) -> (bool, String) {
    let o = run(&["verify", "--export", dir.to_str().unwrap()]);
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "verify ran: {}",
        text(&o)
    );
    (o.status.success(), text(&o))
}

/// Event `n` to webhooks 1 and 2, then an attempt and an outcome for each: 1 + 4 batches.
fn busy(t: &TestLedger, n: u128) {
    t.publish(n, &[webhook(1), webhook(2)]).unwrap();
    for w in [1, 2] {
        t.append(key(w, n), attempted(1)).unwrap();
    }
    t.append(key(1, n), delivered(1)).unwrap();
    t.append(key(2, n), failed(1, 503, t.now())).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    list(dir).unwrap().into_iter().map(|(_, n)| n).collect()
}

#[test]
fn files_hold_whole_batches_a_second_run_continues_and_verify_passes() {
    let mut t = TestLedger::new();
    for n in 1..=4 {
        busy(&t, n);
    }
    t.close();
    let out = t.dir.path().join("export");
    export(&t.path, &out, &["--every", "5"]);
    let files = list(&out).unwrap();
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    let links = store.links().unwrap();
    assert_eq!(store.last_seq().unwrap(), 24);
    for (range, _) in &files {
        assert!(
            links.iter().any(|l| l.first_seq == range.first)
                && links.iter().any(|l| l.last_seq == range.last),
            "{range:?} is whole batches"
        );
        assert!(range.rows() >= 5 || range.last == 24, "{range:?}");
    }
    let mut rows = Vec::new();
    for (_, name) in &files {
        rows.extend(read_file(&out.join(name)).unwrap());
    }
    let mut stored = Vec::new();
    store
        .scan_records(1, u64::MAX, &mut |r| {
            stored.push(r);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
        stored,
        "every record, column for column"
    );
    let event = rows[0].event.as_ref().unwrap();
    assert_eq!(
        (event.app.as_str(), event.event_type.as_str()),
        ("default", "order.created")
    );
    assert!(event.body.is_none(), "no bodies unless asked");
    assert!(event.body_digest.is_some());
    let manifest = Manifest::load(&out).unwrap();
    assert_eq!(manifest.last_seq(), 24);
    assert_eq!(
        manifest
            .files
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>(),
        names(&out)
    );
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
    assert!(said.contains("24 records"), "{said}");

    // Nothing new: nothing written. Then new records: a file starting right after the last.
    let before: Vec<_> = files
        .iter()
        .map(|(_, n)| std::fs::read(out.join(n)).unwrap())
        .collect();
    drop(store);
    export(&t.path, &out, &["--every", "5"]);
    assert_eq!(list(&out).unwrap(), files);
    t.reopen();
    busy(&t, 5);
    t.close();
    export(&t.path, &out, &["--every", "100"]);
    let after = list(&out).unwrap();
    assert_eq!(after.len(), files.len() + 1);
    assert_eq!(
        after.last().unwrap().0,
        Range {
            first: 25,
            last: 30
        }
    );
    for ((_, n), bytes) in files.iter().zip(before) {
        assert_eq!(std::fs::read(out.join(n)).unwrap(), bytes, "{n} unchanged");
    }
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
}

#[test]
fn bodies_are_written_only_when_asked_and_never_an_expunged_one() {
    let mut t = TestLedger::new();
    busy(&t, 1);
    busy(&t, 2);
    t.commit(Commit {
        expunge: vec![ExpungeOrder {
            event_id: event(2),
            actor: OPERATOR.into(),
            reason: "erasure request".into(),
        }],
        ..Commit::default()
    })
    .unwrap();
    t.close();
    let out = t.dir.path().join("with-bodies");
    export(&t.path, &out, &["--bodies"]);
    let rows = read_file(&out.join(&names(&out)[0])).unwrap();
    for r in &rows {
        let e = r.event.as_ref().unwrap();
        if r.record.event_id == event(1).0 {
            assert_eq!(e.body.as_deref(), Some(&b"{\"order\":1}"[..]));
            assert!(!e.body_expunged);
        } else {
            assert_eq!(e.body, None, "expunged: no body");
            assert!(e.body_expunged);
            assert!(e.body_digest.is_some(), "its digest stays");
        }
    }
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
}

#[test]
fn since_and_until_select_whole_commits_by_time() {
    let mut t = TestLedger::new();
    let start = t.now();
    busy(&t, 1); // seqs 1..=6 at the start
    t.advance(3600);
    busy(&t, 2); // 7..=12 an hour later
    t.advance(3600);
    busy(&t, 3); // 13..=18
    t.close();
    let at = |h: i64| (start + chrono::Duration::minutes(h * 60 - 30)).to_rfc3339();
    let out = t.dir.path().join("window");
    export(&t.path, &out, &["--since", &at(1), "--until", &at(2)]);
    let files = list(&out).unwrap();
    assert_eq!(
        files.iter().map(|f| f.0).collect::<Vec<_>>(),
        [Range { first: 7, last: 12 }]
    );
    // A later run continues after the last file, up to the head.
    export(&t.path, &out, &[]);
    assert_eq!(list(&out).unwrap().last().unwrap().0.last, 18);
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
    let o = run(&[
        "export",
        "--db",
        t.path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--since"), "{}", text(&o));
    let o = run(&[
        "export",
        "--db",
        t.path.to_str().unwrap(),
        "--out",
        "x",
        "--every",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--every"), "{}", text(&o));
}

/// An export of 4 files (seqs 1..=24, every 6).
fn four_files() -> (TestLedger, PathBuf) {
    let mut t = TestLedger::new();
    for n in 1..=4 {
        busy(&t, n);
    }
    t.close();
    let out = t.dir.path().join("export");
    export(&t.path, &out, &["--every", "6"]);
    assert_eq!(names(&out).len(), 4);
    (t, out)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Sets the manifest's SHA-256 of each file to the file's own, so that only the chain can
/// tell what was done to it.
fn reseal_manifest(dir: &Path) {
    use sha2::Digest;
    let mut m = Manifest::load(dir).unwrap();
    for e in &mut m.files {
        if let Ok(bytes) = std::fs::read(dir.join(&e.name)) {
            e.sha256 = hex::encode(sha2::Sha256::digest(bytes));
        }
    }
    m.save(dir).unwrap();
}

fn assert_fails_naming(dir: &Path, file: &str, what: &str) {
    let (ok, said) = verify_export(dir);
    assert!(!ok, "{what}: verify passed: {said}");
    assert!(said.contains(file), "{what}: names {file}: {said}");
}

#[test]
fn verify_export_fails_on_an_edited_a_deleted_and_a_swapped_file() {
    let (t, out) = four_files();
    let files = names(&out);
    let (ok, said) = verify_export(&out);
    assert!(ok, "the original passes: {said}");

    // A flipped byte.
    let dir = t.dir.path().join("flipped");
    copy_dir(&out, &dir);
    let mut bytes = std::fs::read(dir.join(&files[1])).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(dir.join(&files[1]), bytes).unwrap();
    assert_fails_naming(&dir, &files[1], "a flipped byte");

    // A rewritten file: one status code changed, the manifest resealed to the new bytes.
    let dir = t.dir.path().join("edited");
    copy_dir(&out, &dir);
    let mut rows = read_file(&dir.join(&files[2])).unwrap();
    let failed = rows
        .iter_mut()
        .find(|r| r.record.status_code == Some(503))
        .unwrap();
    failed.record.status_code = Some(200);
    std::fs::write(dir.join(&files[2]), encode(&rows).unwrap()).unwrap();
    reseal_manifest(&dir);
    assert_fails_naming(&dir, &files[2], "an edited record");
    let (_, said) = verify_export(&dir);
    assert!(said.contains("chain hash"), "{said}");

    // One file rewritten consistently from a changed record (every batch hash in it
    // recomputed, the manifest's hashes to match): only the next file's chain tells.
    let dir = t.dir.path().join("rechained");
    copy_dir(&out, &dir);
    let mut rows = read_file(&dir.join(&files[1])).unwrap();
    let failed = rows
        .iter_mut()
        .find(|r| r.record.status_code == Some(503))
        .unwrap();
    failed.record.status_code = Some(200);
    let mut prev = rows[0].batch_prev_hash;
    let mut at = 0;
    while at < rows.len() {
        let first = rows[at].batch_first_seq;
        let end = at
            + rows[at..]
                .iter()
                .take_while(|r| r.batch_first_seq == first)
                .count();
        let records: Vec<_> = rows[at..end].iter().map(|r| r.record.clone()).collect();
        let hash = hookledger::ledger::chain::batch_hash(&prev, &records);
        for r in &mut rows[at..end] {
            (r.batch_prev_hash, r.batch_hash) = (prev, hash);
        }
        (prev, at) = (hash, end);
    }
    std::fs::write(dir.join(&files[1]), encode(&rows).unwrap()).unwrap();
    reseal_manifest(&dir);
    let mut m = Manifest::load(&dir).unwrap();
    m.files[1].chain_hash = hex::encode(prev);
    m.save(&dir).unwrap();
    assert_fails_naming(&dir, &files[2], "a file rechained from a changed record");
    let (_, said) = verify_export(&dir);
    assert!(
        said.contains("does not chain to the batch before it"),
        "{said}"
    );
    assert!(
        !said.contains(&files[1]),
        "the rewritten file is consistent: {said}"
    );

    // A deleted file, with and without its manifest entry.
    let dir = t.dir.path().join("deleted");
    copy_dir(&out, &dir);
    std::fs::remove_file(dir.join(&files[1])).unwrap();
    assert_fails_naming(&dir, &files[1], "a deleted file");
    let mut m = Manifest::load(&dir).unwrap();
    m.files.retain(|e| e.name != files[1]);
    m.save(&dir).unwrap();
    assert_fails_naming(&dir, &files[2], "a deleted file left out of the manifest");

    // Two files' contents swapped (their names kept), the manifest resealed.
    let dir = t.dir.path().join("swapped");
    copy_dir(&out, &dir);
    let (a, b) = (dir.join(&files[1]), dir.join(&files[2]));
    let tmp = dir.join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    reseal_manifest(&dir);
    assert_fails_naming(&dir, &files[1], "swapped files");
    assert_fails_naming(&dir, &files[2], "swapped files");

    // An anchor from `hookledger head` is a batch of the files; another hash at its seq is
    // not (what catches files rewritten consistently from a changed record).
    let anchor = run(&["head", "--db", t.path.to_str().unwrap()]);
    let anchor = String::from_utf8_lossy(&anchor.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let o = run(&[
        "verify",
        "--export",
        out.to_str().unwrap(),
        "--expect-head",
        &anchor,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "verify",
        "--export",
        out.to_str().unwrap(),
        "--expect-head",
        &format!("24:{}", "00".repeat(32)),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run(&["verify", "--export", "/nonexistent/export"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--export"), "{}", text(&o));
}
