//! The pure part of an export: file names and which seq ranges become files.
//!
//! Invariant: a file holds whole chain batches (a link's `first_seq..=last_seq` is never split
//! between two files), so every batch hash can be recomputed from one file's rows; and the
//! ranges planned after a file ending at `after` start at `after + 1` and are contiguous.

use crate::ledger::chain::BatchLink;

/// What every export file's name starts with.
pub const PREFIX: &str = "webhook_deliveries-";
/// What every export file's name ends with (a temp file never does).
pub const SUFFIX: &str = ".parquet";
/// Digits of each seq in a name: `u64::MAX` has 20, so names sort as their ranges do.
const DIGITS: usize = 20;

/// A file's seq range, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub first: u64,
    pub last: u64,
}

impl Range {
    /// `webhook_deliveries-<first>-<last>.parquet`, zero-padded.
    pub fn file_name(&self) -> String {
        format!(
            "{PREFIX}{:0w$}-{:0w$}{SUFFIX}",
            self.first,
            self.last,
            w = DIGITS
        )
    }

    /// The range a file name says, if it is an export file's name.
    pub fn parse(name: &str) -> Option<Self> {
        let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (first, last) = middle.split_once('-')?;
        let digits = |s: &str| s.len() == DIGITS && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) {
            return None;
        }
        let range = Self {
            first: first.parse().ok()?,
            last: last.parse().ok()?,
        };
        (1..=range.last).contains(&range.first).then_some(range)
    }

    pub fn rows(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The name a file is written under before its rename: hidden, and not ending in `.parquet`,
/// so that no glob of readers (`*.parquet`) ever sees a partial file.
pub fn temp_name(final_name: &str) -> String {
    format!(".{final_name}.tmp")
}

/// When to seal a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// Everything available: the last file may hold fewer than `every` records (a one-shot
    /// export, or continuous mode when its interval has passed).
    All,
    /// Only files of at least `every` records (continuous mode before its interval).
    Full,
}

/// The files to write next: whole batches of `links` (in seq order) that start after `after`
/// and end at or before `upto`, cut once a file holds at least `every` records. A batch larger
/// than `every` makes one file of its own. A batch not starting right after the previous one
/// ends the plan (the range after it is not contiguous; the caller reports it).
pub fn plan(links: &[BatchLink], after: u64, upto: u64, every: u64, seal: Seal) -> Vec<Range> {
    let every = every.max(1);
    let mut out = Vec::new();
    let mut open: Option<Range> = None;
    let mut next = after + 1;
    for link in links
        .iter()
        .skip_while(|l| l.last_seq <= after)
        .take_while(|l| l.last_seq <= upto)
    {
        if link.first_seq != next {
            break;
        }
        next = link.last_seq + 1;
        let range = match open {
            Some(r) => Range {
                first: r.first,
                last: link.last_seq,
            },
            None => Range {
                first: link.first_seq,
                last: link.last_seq,
            },
        };
        if range.rows() >= every {
            out.push(range);
            open = None;
        } else {
            open = Some(range);
        }
    }
    if let (Some(r), Seal::All) = (open, seal) {
        out.push(r);
    }
    out
}

/// The first seq to export for `--since`: the start of the batch holding `seq` (the first
/// record recorded at or after the instant), so that files hold whole batches.
pub fn batch_start(links: &[BatchLink], seq: u64) -> u64 {
    links
        .iter()
        .find(|l| l.last_seq >= seq)
        .map_or(seq, |l| l.first_seq.min(seq))
}

/// The last seq to export for `--until`: the end of the last batch ending at or before `seq`
/// (the last record recorded before the instant).
pub fn batch_end(links: &[BatchLink], seq: u64) -> u64 {
    links
        .iter()
        .take_while(|l| l.last_seq <= seq)
        .last()
        .map_or(0, |l| l.last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(spans: &[(u64, u64)]) -> Vec<BatchLink> {
        spans
            .iter()
            .map(|&(first_seq, last_seq)| BatchLink {
                first_seq,
                last_seq,
                hash: [0; 32],
            })
            .collect()
    }

    fn r(first: u64, last: u64) -> Range {
        Range { first, last }
    }

    #[test]
    fn names_are_zero_padded_sort_as_ranges_and_parse_back() {
        let name = r(7, 1234).file_name();
        assert_eq!(
            name,
            "webhook_deliveries-00000000000000000007-00000000000000001234.parquet"
        );
        assert_eq!(Range::parse(&name), Some(r(7, 1234)));
        let mut names = [r(1000, 1999).file_name(), r(2, 999).file_name()];
        names.sort();
        assert_eq!(names[0], r(2, 999).file_name());
        let max = r(u64::MAX, u64::MAX).file_name();
        assert_eq!(Range::parse(&max), Some(r(u64::MAX, u64::MAX)));
    }

    #[test]
    fn other_names_are_not_export_files() {
        for name in [
            "manifest.json",
            "webhook_deliveries-1-2.parquet",
            &temp_name(&r(1, 2).file_name()),
            "webhook_deliveries-00000000000000000009-00000000000000000003.parquet",
            "webhook_deliveries-00000000000000000000-00000000000000000003.parquet",
            "webhook_deliveries-0000000000000000000a-00000000000000000003.parquet",
        ] {
            assert_eq!(Range::parse(name), None, "{name}");
        }
        assert!(!temp_name("x.parquet").ends_with(SUFFIX));
    }

    #[test]
    fn files_hold_whole_batches_and_cut_at_every() {
        let l = links(&[(1, 3), (4, 4), (5, 9), (10, 10), (11, 12)]);
        assert_eq!(
            plan(&l, 0, u64::MAX, 4, Seal::All),
            [r(1, 4), r(5, 9), r(10, 12)]
        );
        assert_eq!(plan(&l, 0, u64::MAX, 4, Seal::Full), [r(1, 4), r(5, 9)]);
        assert_eq!(plan(&l, 0, u64::MAX, 100, Seal::Full), []);
        assert_eq!(plan(&l, 0, u64::MAX, 100, Seal::All), [r(1, 12)]);
        assert_eq!(
            plan(&l, 0, u64::MAX, 1, Seal::Full).len(),
            5,
            "one file per batch"
        );
    }

    #[test]
    fn a_plan_continues_after_the_last_file_and_stops_at_upto() {
        let l = links(&[(1, 3), (4, 4), (5, 9), (10, 10), (11, 12)]);
        assert_eq!(plan(&l, 4, u64::MAX, 2, Seal::All), [r(5, 9), r(10, 12)]);
        assert_eq!(plan(&l, 4, 10, 2, Seal::All), [r(5, 9), r(10, 10)]);
        assert_eq!(plan(&l, 4, 8, 2, Seal::All), [], "a batch is never cut");
        assert_eq!(plan(&l, 12, u64::MAX, 2, Seal::All), []);
    }

    #[test]
    fn a_gap_in_the_links_ends_the_plan() {
        let l = links(&[(1, 3), (5, 9)]);
        assert_eq!(plan(&l, 0, u64::MAX, 1, Seal::All), [r(1, 3)]);
        assert_eq!(
            plan(&l, 1, u64::MAX, 1, Seal::All),
            [],
            "after splits a batch"
        );
    }

    #[test]
    fn since_and_until_snap_to_whole_batches() {
        let l = links(&[(1, 3), (4, 4), (5, 9)]);
        assert_eq!(batch_start(&l, 2), 1);
        assert_eq!(batch_start(&l, 5), 5);
        assert_eq!(batch_start(&l, 10), 10, "past the end");
        assert_eq!(batch_end(&l, 8), 4);
        assert_eq!(batch_end(&l, 9), 9);
        assert_eq!(batch_end(&l, 2), 0);
    }
}
