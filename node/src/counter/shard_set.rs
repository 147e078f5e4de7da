//! [`ShardSet`]: a counter cell's value, a state-based CRDT.
//!
//! A cell's value is a set of shards, one per replica incarnation that ever
//! led an increment of the cell: `shard = (id, clock, sum, count)`. Only
//! the shard's owner changes it, raising `clock` by one per update. The
//! value of the cell is the sum of the shards' sums and counts.
//!
//! Merge keeps, for each shard id, the shard with the higher clock (for
//! equal clocks, the larger `(sum, count)`, so that merge stays
//! deterministic even on inputs that should not exist). This is a
//! join-semilattice: merge is commutative, associative and idempotent, and
//! never lowers a clock, so replicas, hints, read repair and anti-entropy
//! may deliver the same state any number of times in any order.
//!
//! Encoding (little-endian): `count: u16`, then per shard in increasing id
//! order `id: u64 | clock: u64 | sum: i64 | count: u64` (32 bytes).

/// One replica incarnation's part of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Owner: `host_id << 32 | incarnation` (see [`crate::Identity`]).
    pub id: u64,
    /// Version: raised by one with every update by the owner.
    pub clock: u64,
    /// Sum of the owner's deltas.
    pub sum: i64,
    /// Number of the owner's increments.
    pub count: u64,
}

impl Shard {
    fn newer_than(&self, other: &Shard) -> bool {
        (self.clock, self.sum, self.count) > (other.clock, other.sum, other.count)
    }
}

/// A counter cell's value: shards sorted by id, ids unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSet {
    shards: Vec<Shard>,
}

const SHARD_BYTES: usize = 32;
/// The highest clock a shard may carry. Clocks rise by one per update, so
/// no owner comes near it (2^62 updates); a state from the network at or
/// above it is refused, so that a forged one cannot leave `clock + 1` no
/// room and freeze the owner's shard.
pub const MAX_CLOCK: u64 = 1 << 62;
/// Most shards a cell may hold (one per replica incarnation that led it).
pub const MAX_SHARDS: usize = 4096;

impl ShardSet {
    /// A set holding one shard.
    pub fn single(shard: Shard) -> ShardSet {
        ShardSet {
            shards: vec![shard],
        }
    }

    /// The shards, by id.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard of `id`, if present.
    pub fn shard(&self, id: u64) -> Option<Shard> {
        self.shards
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| self.shards[i])
    }

    /// Sum of all shards, widened: a shard's sum never leaves the `i64`
    /// range, but the cell's may (readers refuse that rather than wrap).
    pub fn sum(&self) -> i128 {
        self.shards.iter().map(|s| i128::from(s.sum)).sum()
    }

    /// Number of increments over all shards, widened like [`ShardSet::sum`].
    pub fn count(&self) -> u128 {
        self.shards.iter().map(|s| u128::from(s.count)).sum()
    }

    /// Whether every shard of an encoded set leaves its clock room to rise
    /// (below `MAX_CLOCK`); `bytes` must be valid.
    pub fn clocks_have_room(bytes: &[u8]) -> bool {
        bytes
            .get(2..)
            .unwrap_or_default()
            .chunks_exact(SHARD_BYTES)
            .all(|c| word(c, 1) < MAX_CLOCK)
    }

    /// Merges `other` into `self`.
    pub fn merge(&mut self, other: &ShardSet) {
        let mut out = Vec::with_capacity(self.shards.len() + other.shards.len());
        let (a, b) = (&self.shards, &other.shards);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            if x.id == y.id {
                out.push(if y.newer_than(&x) { y } else { x });
                i += 1;
                j += 1;
            } else if x.id < y.id {
                out.push(x);
                i += 1;
            } else {
                out.push(y);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.shards = out;
    }

    /// Encodes the set.
    pub fn encode(&self) -> Vec<u8> {
        encode_shards(&self.shards)
    }

    /// The encoding of the set holding only `shard`, without building the
    /// set (the leader's write path encodes one per cell).
    pub fn encode_single(shard: &Shard) -> Vec<u8> {
        encode_shards(std::slice::from_ref(shard))
    }

    /// Whether `bytes` is a well-formed encoding (no allocation).
    pub fn is_valid(bytes: &[u8]) -> bool {
        let Some((head, rest)) = bytes.split_first_chunk::<2>() else {
            return false;
        };
        let n = u16::from_le_bytes(*head) as usize;
        if n > MAX_SHARDS || rest.len() != n * SHARD_BYTES {
            return false;
        }
        rest.chunks_exact(SHARD_BYTES)
            .map(shard_id)
            .collect::<IdsIncreasing>()
            .0
    }

    /// Merges two encoded sets straight into the encoding of their merge,
    /// without building either set (the storage engine calls this for every
    /// increment). `None` if either input is malformed.
    pub fn merge_encoded(older: &[u8], newer: &[u8]) -> Option<Vec<u8>> {
        if !Self::is_valid(older) || !Self::is_valid(newer) {
            return None;
        }
        let (a, b) = (&older[2..], &newer[2..]);
        let mut out = Vec::with_capacity(older.len() + newer.len() - 2);
        out.extend_from_slice(&[0, 0]);
        let (mut i, mut j, mut n) = (0, 0, 0u16);
        while i < a.len() || j < b.len() {
            let x = a.get(i..i + SHARD_BYTES);
            let y = b.get(j..j + SHARD_BYTES);
            let take = match (x, y) {
                (Some(x), Some(y)) if shard_id(x) == shard_id(y) => {
                    i += SHARD_BYTES;
                    j += SHARD_BYTES;
                    if decode_shard(y).newer_than(&decode_shard(x)) {
                        y
                    } else {
                        x
                    }
                }
                (Some(x), Some(y)) if shard_id(x) < shard_id(y) => {
                    i += SHARD_BYTES;
                    x
                }
                (Some(x), None) => {
                    i += SHARD_BYTES;
                    x
                }
                (_, Some(y)) => {
                    j += SHARD_BYTES;
                    y
                }
                (None, None) => break,
            };
            out.extend_from_slice(take);
            n += 1;
        }
        if n as usize > MAX_SHARDS {
            return None;
        }
        out[..2].copy_from_slice(&n.to_le_bytes());
        Some(out)
    }

    /// Merges `newer` into `older`, in `older`'s buffer: shards it holds
    /// already are overwritten where `newer`'s are newer, and shards it
    /// lacks are merged in from the back, so no other buffer is needed (a
    /// replica merging one leader's shard into a cell that holds several is
    /// the common case). Returns `false`, changing nothing, when either
    /// input is malformed or the merge would exceed `MAX_SHARDS`.
    pub fn merge_in_place(older: &mut Vec<u8>, newer: &[u8]) -> bool {
        if !Self::is_valid(older) || !Self::is_valid(newer) {
            return false;
        }
        let slot = |i: usize| 2 + i * SHARD_BYTES;
        let n_old = (older.len() - 2) / SHARD_BYTES;
        let n_new = (newer.len() - 2) / SHARD_BYTES;
        // How many of `newer`'s ids `older` lacks (both lists are sorted).
        let (mut i, mut added) = (0, 0);
        for j in 0..n_new {
            let id = shard_id(&newer[slot(j)..]);
            while i < n_old && shard_id(&older[slot(i)..]) < id {
                i += 1;
            }
            if i < n_old && shard_id(&older[slot(i)..]) == id {
                i += 1;
            } else {
                added += 1;
            }
        }
        let total = n_old + added;
        if total > MAX_SHARDS {
            return false;
        }
        older.resize(slot(total), 0);
        older[..2].copy_from_slice(&(total as u16).to_le_bytes());
        // From the back, `k` the next slot to fill and `i` how many of
        // older's shards are still to place: `k >= i` throughout, so a
        // shard is moved before its slot is written; once `newer` runs
        // out, `k == i` and the shards below are in place already.
        let (mut i, mut k) = (n_old, total);
        for j in (0..n_new).rev() {
            let y = &newer[slot(j)..slot(j + 1)];
            let id = shard_id(y);
            while i > 0 && shard_id(&older[slot(i - 1)..]) > id {
                i -= 1;
                k -= 1;
                if k != i {
                    older.copy_within(slot(i)..slot(i + 1), slot(k));
                }
            }
            k -= 1;
            if i > 0 && shard_id(&older[slot(i - 1)..]) == id {
                i -= 1;
                if decode_shard(y).newer_than(&decode_shard(&older[slot(i)..])) {
                    older[slot(k)..slot(k + 1)].copy_from_slice(y);
                } else if k != i {
                    older.copy_within(slot(i)..slot(i + 1), slot(k));
                }
            } else {
                older[slot(k)..slot(k + 1)].copy_from_slice(y);
            }
        }
        true
    }

    /// Decodes a set; `None` unless well formed (exact length, ids strictly
    /// increasing).
    pub fn decode(bytes: &[u8]) -> Option<ShardSet> {
        if !Self::is_valid(bytes) {
            return None;
        }
        let shards = bytes[2..]
            .chunks_exact(SHARD_BYTES)
            .map(decode_shard)
            .collect();
        Some(ShardSet { shards })
    }
}

fn word(c: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&c[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

fn shard_id(c: &[u8]) -> u64 {
    word(c, 0)
}

fn decode_shard(c: &[u8]) -> Shard {
    Shard {
        id: word(c, 0),
        clock: word(c, 1),
        sum: word(c, 2) as i64,
        count: word(c, 3),
    }
}

/// Collects ids, remembering whether they strictly increase.
struct IdsIncreasing(bool, Option<u64>);

impl FromIterator<u64> for IdsIncreasing {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut state = IdsIncreasing(true, None);
        for id in iter {
            if state.1.is_some_and(|last| last >= id) {
                state.0 = false;
            }
            state.1 = Some(id);
        }
        state
    }
}

/// `count: u16 LE`, then per shard `id | clock | sum | count`, 8 bytes
/// LE each.
fn encode_shards(shards: &[Shard]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + shards.len() * SHARD_BYTES);
    buf.extend_from_slice(&(shards.len() as u16).to_le_bytes());
    for s in shards {
        buf.extend_from_slice(&s.id.to_le_bytes());
        buf.extend_from_slice(&s.clock.to_le_bytes());
        buf.extend_from_slice(&s.sum.to_le_bytes());
        buf.extend_from_slice(&s.count.to_le_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shard_set() -> impl Strategy<Value = ShardSet> {
        proptest::collection::btree_map(0u64..6, (0u64..5, -50i64..50, 0u64..50), 0..5).prop_map(
            |m| ShardSet {
                shards: m
                    .into_iter()
                    .map(|(id, (clock, sum, count))| Shard {
                        id,
                        clock,
                        sum,
                        count,
                    })
                    .collect(),
            },
        )
    }

    fn merged(a: &ShardSet, b: &ShardSet) -> ShardSet {
        let mut x = a.clone();
        x.merge(b);
        x
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in shard_set(), b in shard_set()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in shard_set(), b in shard_set(), c in shard_set()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in shard_set(), b in shard_set()) {
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab);
        }

        #[test]
        fn merge_never_lowers_a_clock(a in shard_set(), b in shard_set()) {
            let m = merged(&a, &b);
            for s in a.shards().iter().chain(b.shards()) {
                prop_assert!(m.shard(s.id).is_some_and(|x| x.clock >= s.clock));
            }
        }

        #[test]
        fn merging_encodings_equals_merging_sets(a in shard_set(), b in shard_set()) {
            prop_assert_eq!(ShardSet::merge_encoded(&a.encode(), &b.encode()), Some(merged(&a, &b).encode()));
        }

        #[test]
        fn merging_in_place_equals_merging(
            a in shard_set(),
            b in shard_set(),
            ids in 0..3u8,
            keep in proptest::collection::vec(any::<bool>(), 8),
        ) {
            // Some cases have `b` hold `a`'s ids, some a subset of them (a
            // replica merging one leader's shard), some ids of its own.
            let b = match ids {
                0 => ShardSet { shards: a.shards.iter().zip(b.shards.iter().cycle()).map(|(x, y)| Shard { id: x.id, ..*y }).collect() },
                1 => ShardSet { shards: a.shards.iter().zip(b.shards.iter().cycle()).zip(&keep).filter(|(_, k)| **k).map(|((x, y), _)| Shard { id: x.id, ..*y }).collect() },
                _ => b,
            };
            let mut bytes = a.encode();
            prop_assert!(ShardSet::merge_in_place(&mut bytes, &b.encode()));
            prop_assert_eq!(&bytes, &merged(&a, &b).encode());
            let mut bytes = a.encode();
            assert!(ShardSet::merge_in_place(&mut bytes, &b.encode()));
            prop_assert_eq!(ShardSet::decode(&bytes), Some(merged(&a, &b)));
        }

        #[test]
        fn merging_in_place_leaves_malformed_input_alone(a in shard_set(), garbage in proptest::collection::vec(any::<u8>(), 0..70)) {
            let mut bytes = a.encode();
            if !ShardSet::is_valid(&garbage) {
                prop_assert!(!ShardSet::merge_in_place(&mut bytes, &garbage));
                prop_assert_eq!(&bytes, &a.encode());
            }
            let mut garbage_older = garbage.clone();
            if !ShardSet::is_valid(&garbage) {
                prop_assert!(!ShardSet::merge_in_place(&mut garbage_older, &a.encode()));
                prop_assert_eq!(garbage_older, garbage);
            }
        }

        #[test]
        fn validity_agrees_with_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(ShardSet::is_valid(&bytes), ShardSet::decode(&bytes).is_some());
        }

        #[test]
        fn encoding_round_trips(a in shard_set()) {
            prop_assert_eq!(ShardSet::decode(&a.encode()), Some(a));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = ShardSet::decode(&bytes);
        }
    }
}
