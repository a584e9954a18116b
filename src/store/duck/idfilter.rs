//! A blocked Bloom filter over event ids: "certainly not stored" in one cache line per sealed
//! bucket of `events` (see `buckets.rs`).
//!
//! Invariant: every id inserted answers `maybe_contains == true`; an id never inserted answers
//! `true` with a small probability (about 0.02 % at [`BITS_PER_ID`]), which only costs the
//! caller one exact index lookup. The hash is this module's own (a fixed 64-bit mix of the
//! UUID's bytes), so a filter stored in the file reads the same under any later build or Rust
//! version; the encoding is versioned.

use crate::error::{LedgerError, Result};

/// Bits of filter per stored id (2.5 bytes).
pub const BITS_PER_ID: usize = 20;
/// Bits set per id, all inside one 512-bit block.
const PROBES: u32 = 10;
const BLOCK_WORDS: usize = 8;
const FORMAT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdFilter {
    blocks: Vec<[u64; BLOCK_WORDS]>,
}

/// A fixed, portable 64-bit mix (splitmix64's finaliser) of the id's two halves.
fn hash(id: u128) -> u64 {
    let mut x = (id as u64) ^ ((id >> 64) as u64).rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl IdFilter {
    /// A filter sized for `ids` ids, holding them.
    pub fn build(ids: &[u128]) -> Self {
        let blocks = (ids.len() * BITS_PER_ID).div_ceil(BLOCK_WORDS * 64).max(1);
        let mut f = Self {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
        };
        for id in ids {
            f.insert(*id);
        }
        f
    }

    fn positions(&self, id: u128) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let h = hash(id);
        let block = ((h >> 32) % self.blocks.len() as u64) as usize;
        let mut bits = h as u32 | 1;
        let probes = (0..PROBES).map(move |_| {
            // A cheap 32-bit xorshift walk gives the probes inside the block.
            bits ^= bits << 13;
            bits ^= bits >> 17;
            bits ^= bits << 5;
            let bit = (bits & 511) as usize;
            (bit / 64, 1u64 << (bit % 64))
        });
        (block, probes)
    }

    fn insert(&mut self, id: u128) {
        let (block, probes) = self.positions(id);
        let probes: Vec<_> = probes.collect();
        for (word, mask) in probes {
            self.blocks[block][word] |= mask;
        }
    }

    pub fn maybe_contains(&self, id: u128) -> bool {
        let (block, mut probes) = self.positions(id);
        let b = &self.blocks[block];
        probes.all(|(word, mask)| b[word] & mask != 0)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + self.blocks.len() * 64);
        out.push(FORMAT);
        out.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        for b in &self.blocks {
            for w in b {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| LedgerError::Invalid(format!("stored event id filter: {why}"));
        let (&format, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if format != FORMAT {
            return Err(bad(&format!("unknown format {format}")));
        }
        let (len, words) = rest.split_at_checked(8).ok_or_else(|| bad("short"))?;
        let n = u64::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        if n == 0 || words.len() != n * BLOCK_WORDS * 8 {
            return Err(bad("length mismatch"));
        }
        let blocks = words
            .chunks_exact(BLOCK_WORDS * 8)
            .map(|c| {
                let mut b = [0u64; BLOCK_WORDS];
                for (w, bytes) in b.iter_mut().zip(c.chunks_exact(8)) {
                    *w = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
                }
                b
            })
            .collect();
        Ok(Self { blocks })
    }

    /// Bytes held in memory.
    pub fn size(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_id_is_found_and_few_others_are() {
        let ids: Vec<u128> = (0..50_000u128)
            .map(|i| uuid::Uuid::now_v7().as_u128() ^ i)
            .collect();
        let f = IdFilter::build(&ids);
        assert!(ids.iter().all(|id| f.maybe_contains(*id)));
        let others = (0..200_000u128)
            .filter(|i| f.maybe_contains(uuid::Uuid::new_v4().as_u128() ^ i))
            .count();
        assert!(others < 200, "false positives: {others} of 200000");
        let back = IdFilter::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
        assert!(IdFilter::from_bytes(&f.to_bytes()[..100]).is_err());
    }

    /// Pins the hash: a filter stored by an earlier build must still answer for its ids.
    #[test]
    fn the_hash_is_frozen() {
        assert_eq!(hash(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(
            hash(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            0xe45e_f62b_f906_7491
        );
        let f = IdFilter::build(&[42]);
        let bytes = f.to_bytes();
        assert_eq!(bytes.len(), 1 + 8 + 64);
        assert!(IdFilter::from_bytes(&bytes).unwrap().maybe_contains(42));
    }
}
