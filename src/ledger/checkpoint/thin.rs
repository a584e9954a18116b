//! Thinning: which stored projection checkpoints to keep as history grows, so that their
//! storage stays logarithmic in the length of the log while a point-in-time query into deep
//! history still starts near its target.
//!
//! The rule ([`keep`]) is a pure function of the stored seqs and the checkpoint interval `E`
//! (`HOOKLEDGER_CHECKPOINT_EVERY`), measured from the newest stored checkpoint:
//!
//! - every checkpoint younger than [`RECENT`] intervals is kept (level 0);
//! - an older one has level `L >= 1` when its age is in `[RECENT·E·2^(L-1), RECENT·E·2^L)`,
//!   and is kept only if it is the lowest stored seq in its slot of width `E·2^L` (slot
//!   `seq / (E·2^L)`), so each level keeps about `RECENT / 2` checkpoints, each twice as far
//!   apart as the level below.
//!
//! Invariants (tested below): the rule is idempotent (`keep(keep(s)) == keep(s)`), the
//! newest and the oldest stored checkpoints are always kept, and, with a checkpoint every
//! interval, what remains after `n` intervals is at most `RECENT + 5·(log2(n / RECENT) + 1)`
//! rows, while any target has a kept checkpoint at or before it no further back than half its
//! age or one interval, whichever is larger. A checkpoint is a cache
//! (see [`super`]), so deleting one loses nothing but time; the checkpointer thins after each
//! checkpoint it writes, off the writer thread, in one small `DELETE` of its own.

use crate::error::Result;
use crate::store::Store;

/// How many of the newest checkpoint intervals keep every checkpoint.
pub const RECENT: u64 = 8;

/// The level of a checkpoint `age` records older than the newest, with interval `every`.
fn level(age: u64, every: u64) -> u32 {
    let units = age / every.max(1);
    if units < RECENT {
        0
    } else {
        (units / RECENT).ilog2() + 1
    }
}

/// The seqs to keep among `seqs` (ascending, each once) by the rule in the module docs.
pub fn keep(seqs: &[u64], every: u64) -> Vec<u64> {
    let Some(&newest) = seqs.last() else {
        return Vec::new();
    };
    let every = every.max(1);
    seqs.iter()
        .enumerate()
        .filter(|&(i, &seq)| match level(newest - seq, every) {
            0 => true,
            l => {
                let width = every.saturating_mul(1u64 << l.min(62));
                i == 0 || seqs[i - 1] / width != seq / width
            }
        })
        .map(|(_, &seq)| seq)
        .collect()
}

/// Deletes the stored checkpoints the rule does not keep; the seqs deleted.
pub fn thin(store: &mut dyn Store, every: u64) -> Result<Vec<u64>> {
    let seqs = super::seqs_upto(store, u64::MAX)?;
    let kept = keep(&seqs, every);
    let drop: Vec<u64> = seqs
        .into_iter()
        .filter(|s| kept.binary_search(s).is_err())
        .collect();
    if !drop.is_empty() {
        store.delete_checkpoints(&drop)?;
    }
    Ok(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints every `every` records (plus up to a third of it, as batches end), thinned
    /// after each one, as the checkpointer does.
    fn history(every: u64, count: usize, seed: u64) -> Vec<Vec<u64>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut seq, mut stored, mut states) = (0, Vec::new(), Vec::new());
        for _ in 0..count {
            seq += every + rng.u64(0..=every / 3);
            stored.push(seq);
            stored = keep(&stored, every);
            states.push(stored.clone());
        }
        states
    }

    #[test]
    fn the_rule_is_idempotent_and_keeps_the_newest_and_the_oldest() {
        for stored in history(100, 2_000, 1) {
            assert_eq!(keep(&stored, 100), stored);
        }
        let all: Vec<u64> = (1..=500).map(|n| n * 100).collect();
        let kept = keep(&all, 100);
        assert_eq!(kept.first(), Some(&100));
        assert_eq!(kept.last(), Some(&50_000));
        assert!(kept.len() < all.len());
    }

    #[test]
    fn the_newest_intervals_are_kept_whole() {
        let all: Vec<u64> = (1..=100).map(|n| n * 10).collect();
        let kept = keep(&all, 10);
        let recent: Vec<u64> = all.iter().copied().filter(|s| 1_000 - s < 80).collect();
        assert!(recent.iter().all(|s| kept.contains(s)), "{kept:?}");
        assert_eq!(recent.len(), RECENT as usize);
    }

    #[test]
    fn storage_stays_logarithmic() {
        for (seed, every) in [(1, 100), (2, 1_000), (3, 7)] {
            for (n, stored) in history(every, 3_000, seed).into_iter().enumerate() {
                let intervals = (n + 1) as f64;
                let bound =
                    RECENT as f64 + 5.0 * ((intervals / RECENT as f64).log2().max(0.0) + 1.0);
                assert!(
                    stored.len() as f64 <= bound,
                    "{} kept after {intervals} intervals (bound {bound})",
                    stored.len()
                );
            }
        }
    }

    #[test]
    fn a_deep_target_starts_within_half_its_age() {
        for (seed, every) in [(4, 100), (5, 1_000)] {
            for stored in history(every, 1_500, seed).into_iter().step_by(37) {
                let newest = *stored.last().unwrap();
                for pair in stored.windows(2) {
                    // The worst target in a gap is the record just before the next checkpoint.
                    let target = pair[1] - 1;
                    let (age, distance) = (newest - target, target - pair[0]);
                    let limit = (every + every / 3).max(age / 2);
                    assert!(distance <= limit, "target {target}: {distance} > {limit}");
                }
            }
        }
    }
}
