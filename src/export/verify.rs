//! `hookledger verify --export DIR`: checks an export directory against the hash chain its
//! files carry, with nothing but the files (no database).
//!
//! What is checked: every file the manifest lists is there with the same SHA-256, row count and
//! chain hashes, and every export file is listed; each file holds exactly the seqs its name says,
//! in order, in whole batches; every batch hash recomputes from the file's rows (their
//! canonical encoding, `crate::ledger::chain::batch_hash`) and chains to the previous batch,
//! across files, from genesis when the export starts at seq 1; the files are contiguous; a body
//! present matches its digest; and an anchor (`--expect-head SEQ:HASH`, from `hookledger head`)
//! within the exported range is a batch of the files.
//!
//! Invariant: a changed, missing, reordered or swapped file is a [`Problem`] naming the file;
//! checking never writes.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest};
use super::plan::Range;
use super::rows::Row;
use super::writer::{list, read_file};
use super::ExportError;
use crate::ledger::chain::{self, Hash};

/// One thing wrong, in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub message: String,
}

/// What the check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: usize,
    pub rows: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub chain_hash: Option<Hash>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, file: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_owned(),
            message: message.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            write!(
                f,
                "export OK: {} files, {} records, seq {}..={}",
                self.files, self.rows, self.first_seq, self.last_seq
            )?;
            if let Some(h) = self.chain_hash {
                write!(f, ", chain hash {}", hex::encode(h))?;
            }
            return Ok(());
        }
        writeln!(f, "export FAILED: {} problem(s)", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.file, p.message)?;
        }
        Ok(())
    }
}

/// Checks the export in `dir` (see the module docs).
pub fn verify(dir: &Path, expect_head: Option<(u64, Hash)>) -> Result<Report, ExportError> {
    if !dir.is_dir() {
        return Err(ExportError::Dir(format!(
            "--export {} is not a directory",
            dir.display()
        )));
    }
    let mut report = Report::default();
    let manifest = match Manifest::load(dir) {
        Ok(m) => m,
        Err(e) => {
            report.problem(manifest::FILE_NAME, e.to_string());
            Manifest::default()
        }
    };
    let files = list(dir)?;
    for entry in &manifest.files {
        if !files.iter().any(|(_, name)| *name == entry.name) {
            report.problem(&entry.name, "is missing (the manifest lists it)");
        }
    }
    let mut prev: Option<(Range, String, Hash)> = None;
    let mut anchor_seen = false;
    for (range, name) in &files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| ExportError::io(&path, e))?;
        let listed = manifest.files.iter().find(|e| e.name == *name);
        match listed {
            None => report.problem(name, "is not in the manifest"),
            Some(e) if e.sha256 != hex::encode(Sha256::digest(&bytes)) => {
                report.problem(name, "was changed: its SHA-256 is not the manifest's")
            }
            Some(_) => {}
        }
        match &prev {
            Some((p, pname, _)) if range.first != p.last + 1 => report.problem(
                name,
                format!(
                    "does not follow {pname}: records {}..={} are missing",
                    p.last + 1,
                    range.first.saturating_sub(1)
                ),
            ),
            _ => {}
        }
        let rows = match read_file(&path) {
            Ok(rows) => rows,
            Err(e) => {
                report.problem(name, format!("is not a readable export file: {e}"));
                prev = None;
                continue;
            }
        };
        let expected_prev = match &prev {
            Some((p, _, h)) if range.first == p.last + 1 => Some(*h),
            None if range.first == 1 => Some(chain::genesis()),
            _ => None,
        };
        let checked = check_file(name, *range, &rows, expected_prev, &mut report);
        if let (Some(e), Some(first), Some(last)) = (listed, rows.first(), rows.last()) {
            if e.rows != rows.len() as u64
                || e.prev_chain_hash != hex::encode(first.batch_prev_hash)
                || e.chain_hash != hex::encode(last.batch_hash)
            {
                report.problem(name, "its rows or chain hashes are not the manifest's");
            }
        }
        if let Some((seq, hash)) = expect_head {
            if let Some(r) = rows.iter().find(|r| r.batch_last_seq == seq) {
                anchor_seen = true;
                if r.batch_hash != hash {
                    report.problem(
                        name,
                        format!("the batch ending at seq {seq} has another hash than the anchor"),
                    );
                }
            }
        }
        if report.files == 0 {
            report.first_seq = range.first;
        }
        report.files += 1;
        report.rows += rows.len() as u64;
        report.last_seq = range.last;
        report.chain_hash = Some(checked);
        prev = Some((*range, name.clone(), checked));
    }
    if let Some((seq, _)) = expect_head {
        if !anchor_seen && (report.first_seq..=report.last_seq).contains(&seq) {
            report.problem(
                "--expect-head",
                format!("no batch of the files ends at seq {seq}"),
            );
        }
    }
    Ok(report)
}

/// Checks one file's rows against its name and the chain; the hash of its last batch (as the
/// file states it, so that one bad batch is reported once, not in every file after it).
fn check_file(
    name: &str,
    range: Range,
    rows: &[Row],
    expected_prev: Option<Hash>,
    report: &mut Report,
) -> Hash {
    let first = rows.first().map_or(0, |r| r.record.seq);
    let last = rows.last().map_or(0, |r| r.record.seq);
    let in_order = rows
        .iter()
        .enumerate()
        .all(|(i, r)| r.record.seq == range.first + i as u64);
    if rows.len() as u64 != range.rows() || !in_order {
        report.problem(
            name,
            format!(
                "holds {} records, seq {first}..={last}{}; its name says {}..={}",
                rows.len(),
                if in_order { "" } else { " out of order" },
                range.first,
                range.last
            ),
        );
    }
    let mut expected = expected_prev;
    let mut last_hash = [0; 32];
    let mut i = 0;
    while i < rows.len() {
        let head = &rows[i];
        let n = rows[i..]
            .iter()
            .take_while(|r| {
                r.batch_first_seq == head.batch_first_seq
                    && r.batch_last_seq == head.batch_last_seq
                    && r.batch_prev_hash == head.batch_prev_hash
                    && r.batch_hash == head.batch_hash
            })
            .count();
        let batch = &rows[i..i + n];
        let (bf, bl) = (head.batch_first_seq, head.batch_last_seq);
        let seqs_ok = batch.first().map(|r| r.record.seq) == Some(bf)
            && batch.last().map(|r| r.record.seq) == Some(bl)
            && bl >= bf
            && n as u64 == bl - bf + 1;
        if !seqs_ok {
            report.problem(
                name,
                format!("the batch {bf}..={bl} is not whole in the file, in order"),
            );
        }
        if let Some(e) = expected {
            if e != head.batch_prev_hash {
                report.problem(
                    name,
                    format!("the batch at seq {bf} does not chain to the batch before it"),
                );
            }
        }
        let records: Vec<_> = batch.iter().map(|r| r.record.clone()).collect();
        if chain::batch_hash(&head.batch_prev_hash, &records) != head.batch_hash {
            report.problem(
                name,
                format!("the records of batch {bf}..={bl} do not match its chain hash"),
            );
        }
        for r in batch {
            if let Some(ev) = &r.event {
                if let (Some(body), Some(digest)) = (&ev.body, ev.body_digest) {
                    if chain::body_digest(body) != digest {
                        report.problem(
                            name,
                            format!("the body at seq {} does not match its digest", r.record.seq),
                        );
                    }
                }
            }
        }
        expected = Some(head.batch_hash);
        last_hash = head.batch_hash;
        i += n;
    }
    last_hash
}
