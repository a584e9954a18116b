//! A `hookledger export` SIGKILLed while it writes leaves no partial file visible (every
//! `*.parquet` in the directory reads whole), and the next run continues to a complete export
//! that verifies. A kill cannot split one `write(2)` of a file's bytes, so a second run has a
//! write fail halfway (a file-size limit, as a full disk would): only the hidden temp file is
//! cut short, never a visible one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookledger::export::writer::{list, read_file};

use crate::common::*;
use crate::export::{export, verify_export};

/// Events per commit and commits: 40 x 60 = 2,400 records in 60 batches.
const PER_COMMIT: u128 = 40;
const COMMITS: u128 = 60;

fn big_ledger() -> TestLedger {
    let mut t = TestLedger::new();
    let hooks: Vec<_> = (1..=PER_COMMIT).map(webhook).collect();
    for n in 1..=COMMITS {
        t.publish(n, &hooks).unwrap();
    }
    t.close();
    t
}

/// Every visible export file reads whole and holds the seqs its name says.
fn assert_no_partial_file(dir: &Path) -> usize {
    let files = list(dir).unwrap();
    for (range, name) in &files {
        let rows = read_file(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rows.len() as u64, range.rows(), "{name}");
    }
    files.len()
}

#[test]
fn a_killed_export_leaves_no_partial_file_and_the_next_run_continues() {
    let t = big_ledger();
    let out = t.dir.path().join("export");
    let mut kills = 0;
    for round in 0..4u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["export", "--every", "1", "--db"])
            .arg(&t.path)
            .arg("--out")
            .arg(&out)
            .env_remove("HOOKLEDGER_DB")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it once it has sealed a few more files than before (or as it finishes).
        let seen = if out.exists() {
            list(&out).unwrap().len()
        } else {
            0
        };
        let target = seen + 2 + round as usize * 3;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let now = if out.exists() {
                list(&out).unwrap().len()
            } else {
                0
            };
            if now >= target {
                child.kill().unwrap();
                kills += 1;
                break;
            }
            assert!(Instant::now() < deadline, "export made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.wait();
        assert_no_partial_file(&out);
    }
    assert!(kills >= 1, "at least one run was killed mid-export");
    export(&t.path, &out, &["--every", "1"]);
    assert_eq!(
        assert_no_partial_file(&out),
        COMMITS as usize,
        "one file per batch"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "temp files are removed");
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("{} records", PER_COMMIT * COMMITS)),
        "{said}"
    );
}

#[test]
fn a_write_that_fails_halfway_leaves_no_partial_file_and_the_next_run_continues() {
    use std::os::unix::process::CommandExt as _;
    let t = big_ledger();
    let out = t.dir.path().join("export");
    let mut limited = Command::new(env!("CARGO_BIN_EXE_hookledger"));
    limited
        .args(["export", "--every", "1", "--db"])
        .arg(&t.path)
        .arg("--out")
        .arg(&out)
        .env_remove("HOOKLEDGER_DB");
    // Writes past 2,000 bytes fail with EFBIG (the first file is larger), instead of SIGXFSZ.
    unsafe {
        limited.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 2_000,
                rlim_max: libc::RLIM_INFINITY,
            };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let o = limited.output().unwrap();
    assert!(!o.status.success(), "the limited export failed");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("File too large"),
        "it says why: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(assert_no_partial_file(&out), 0, "no file was sealed");
    export(&t.path, &out, &["--every", "1"]);
    assert_eq!(assert_no_partial_file(&out), COMMITS as usize);
    let (ok, said) = verify_export(&out);
    assert!(ok, "{said}");
}
