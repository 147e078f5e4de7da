//! [`Leaves`]: the Merkle leaves of one token range, as anti-entropy
//! compares them.
//!
//! A token range `(start, end]` (wrapping past `u64::MAX` when
//! `start >= end`; the whole ring when they are equal) is cut into `2^depth`
//! equal slices of tokens. A leaf's hash is the wrapping sum of its cells'
//! hashes, so it does not depend on the order cells are visited and two
//! replicas holding the same cells agree however their storage is laid out.
//! Cell keys start with the token (big-endian), so a slice of tokens is one
//! or two contiguous key ranges.
//!
//! tally compares only the leaves (no inner nodes are exchanged), and
//! sizes the tree to the range: 1,024 leaves (8 KiB) up to 32,768 cells,
//! then twice as many for every doubling, up to 65,536 leaves (512 KiB)
//! from about two million cells, so that a leaf that differs costs a read
//! of about 32 cells rather than of a thousandth of the range. Because a
//! leaf's hash is a sum, the repairer hashes its own copy once at the
//! deepest level and [`fold`]s it to the depth it picked. Exchanging inner
//! nodes level by level would save the 512 KiB of the deepest trees at
//! the cost of a round trip per level; at these sizes the bytes are
//! cheaper than the round trips.

use tally_client::KeyRange;

use crate::counter::cell_key;
use crate::counter::limits::RequestError;
use crate::replica::store::{storage_error, CounterStore};

/// Most leaves of one tree (`2^16`).
pub const MAX_DEPTH: u8 = 16;

/// The hash of one cell: `fmix64(crc32(key) << 32 | crc32(value))`.
pub fn cell_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut h = (u64::from(crc32fast::hash(key)) << 32) | u64::from(crc32fast::hash(value));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn key_at(token: u64) -> Vec<u8> {
    token.to_be_bytes().to_vec()
}

/// The first key after every key of `token` (keys start with the token;
/// a namespace length byte is at most 64, so `FF * 9` is past them all).
fn key_after(token: u64) -> Vec<u8> {
    match token.checked_add(1) {
        Some(next) => key_at(next),
        None => vec![0xFF; 9],
    }
}

/// The cell key ranges of tokens in `(start, end]` (wrapping; the whole
/// ring when `start == end`).
pub fn token_key_ranges(start: u64, end: u64) -> Vec<KeyRange> {
    if start < end {
        return vec![KeyRange {
            start: key_after(start),
            end: key_after(end),
        }];
    }
    let mut out = Vec::with_capacity(2);
    if start < u64::MAX {
        out.push(KeyRange {
            start: key_after(start),
            end: vec![0xFF; 9],
        });
    }
    out.push(KeyRange {
        start: Vec::new(),
        end: key_after(end),
    });
    out
}

/// The leaves of the token range `(start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaves {
    start: u64,
    /// Tokens in the range (`2^64` for the whole ring).
    width: u128,
    count: u128,
}

impl Leaves {
    /// `2^depth` leaves over `(start, end]` (`depth` capped at [`MAX_DEPTH`]).
    pub fn new(start: u64, end: u64, depth: u8) -> Leaves {
        let width = if start == end {
            1u128 << 64
        } else {
            u128::from(end.wrapping_sub(start))
        };
        Leaves {
            start,
            width,
            count: 1u128 << depth.min(MAX_DEPTH),
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no leaves (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The leaf holding `token`, which must lie in the range.
    pub fn leaf_of(&self, token: u64) -> usize {
        let offset = u128::from(token.wrapping_sub(self.start).wrapping_sub(1));
        ((offset * self.count) / self.width).min(self.count - 1) as usize
    }

    /// The exclusive start token of leaf `i` (its end is the next one's).
    fn boundary(&self, i: u128) -> u64 {
        self.start
            .wrapping_add(((self.width * i) / self.count) as u64)
    }

    /// The cell key ranges of leaf `i`.
    pub fn key_ranges(&self, i: usize) -> Vec<KeyRange> {
        let i = i as u128;
        let (from, to) = (self.boundary(i), self.boundary(i + 1));
        if from == to && self.width < (1u128 << 64) {
            return Vec::new(); // an empty slice of a narrow range
        }
        token_key_ranges(from, to)
    }
}

/// Leaves of the depth above: each the sum of its two children (a leaf's
/// hash is a sum, and leaf `i` of depth `d` covers leaves `2i` and `2i+1`
/// of depth `d + 1`).
pub fn fold(mut hashes: Vec<u64>, depth: u8) -> Vec<u64> {
    while hashes.len() > 1 << depth {
        hashes = hashes
            .chunks(2)
            .map(|pair| pair.iter().fold(0u64, |a, h| a.wrapping_add(*h)))
            .collect();
    }
    hashes
}

impl CounterStore {
    /// The Merkle leaves of this node's cells with tokens in
    /// `(start, end]` (see [`Leaves`]): one full scan of the range. Kept
    /// here, beside the tree it fills, so the store knows nothing of
    /// Merkle trees.
    pub fn merkle_leaves(&self, start: u64, end: u64, depth: u8) -> Result<Vec<u64>, RequestError> {
        self.merkle_leaves_counted(start, end, depth)
            .map(|(hashes, _)| hashes)
    }

    /// [`CounterStore::merkle_leaves`] and the number of cells hashed.
    pub fn merkle_leaves_counted(
        &self,
        start: u64,
        end: u64,
        depth: u8,
    ) -> Result<(Vec<u64>, u64), RequestError> {
        let leaves = Leaves::new(start, end, depth);
        let mut hashes = vec![0u64; leaves.len()];
        let mut cells = 0u64;
        for range in token_key_ranges(start, end) {
            self.db()
                .scan_with(&range.start, Some(&range.end), |k, v| {
                    if let Some(token) = cell_key::token_of(k) {
                        let h = &mut hashes[leaves.leaf_of(token)];
                        *h = h.wrapping_add(cell_hash(k, v));
                        cells += 1;
                    }
                    true
                })
                .map_err(storage_error)?;
        }
        Ok((hashes, cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn in_ranges(token: u64, ranges: &[KeyRange]) -> bool {
        let key = [&token.to_be_bytes()[..], b"\x06events\x00\x01k"].concat();
        ranges
            .iter()
            .any(|r| r.start.as_slice() <= key.as_slice() && key.as_slice() < r.end.as_slice())
    }

    proptest! {
        #[test]
        fn a_token_is_in_its_leaf_and_in_no_other(start in any::<u64>(), end in any::<u64>(), t in any::<u64>(), depth in 0u8..6) {
            let leaves = Leaves::new(start, end, depth);
            let inside = start == end || if start < end { start < t && t <= end } else { t > start || t <= end };
            prop_assume!(inside);
            prop_assert!(in_ranges(t, &token_key_ranges(start, end)));
            let leaf = leaves.leaf_of(t);
            for i in 0..leaves.len() {
                prop_assert_eq!(in_ranges(t, &leaves.key_ranges(i)), i == leaf, "token {} leaf {} checked {}", t, leaf, i);
            }
        }

        #[test]
        fn a_token_outside_the_range_is_in_no_key_range(start in any::<u64>(), end in any::<u64>(), t in any::<u64>()) {
            let inside = start == end || if start < end { start < t && t <= end } else { t > start || t <= end };
            prop_assume!(!inside);
            prop_assert!(!in_ranges(t, &token_key_ranges(start, end)));
        }
    }

    proptest! {
        #[test]
        fn a_folded_tree_is_the_tree_of_the_shallower_depth(start in any::<u64>(), end in any::<u64>(), tokens in proptest::collection::vec(any::<u64>(), 0..200), deep in 1u8..9, shallow_by in 1u8..9) {
            let shallow = deep.saturating_sub(shallow_by);
            let fine = Leaves::new(start, end, deep);
            let coarse = Leaves::new(start, end, shallow);
            let inside = |t: u64| start == end || if start < end { start < t && t <= end } else { t > start || t <= end };
            let mut deep_hashes = vec![0u64; fine.len()];
            let mut shallow_hashes = vec![0u64; coarse.len()];
            for t in tokens.into_iter().filter(|t| inside(*t)) {
                let h = cell_hash(&t.to_be_bytes(), b"v");
                deep_hashes[fine.leaf_of(t)] = deep_hashes[fine.leaf_of(t)].wrapping_add(h);
                shallow_hashes[coarse.leaf_of(t)] = shallow_hashes[coarse.leaf_of(t)].wrapping_add(h);
            }
            prop_assert_eq!(fold(deep_hashes, shallow), shallow_hashes);
        }
    }

    #[test]
    fn the_ring_edges_are_covered() {
        let whole = Leaves::new(7, 7, 4);
        for t in [0, 7, 8, u64::MAX] {
            let leaf = whole.leaf_of(t);
            assert!(in_ranges(t, &whole.key_ranges(leaf)), "token {t}");
        }
        assert!(in_ranges(u64::MAX, &token_key_ranges(5, 2)));
        assert!(in_ranges(0, &token_key_ranges(u64::MAX, 3)));
        assert_ne!(cell_hash(b"a", b"1"), cell_hash(b"a", b"2"));
    }
}
