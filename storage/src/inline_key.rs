//! [`InlineKey`]: key bytes held in place when short, and [`mix64`], the
//! finalizer the engine's and the node's hash tables share.
//!
//! Why: a table search that compares keys behind a pointer takes a cache
//! miss per comparison. Counter cell keys are about 40 bytes, so holding
//! them in the table's own slots (the memtable's groups, the node's
//! own-shard cache) lets a search compare bytes it already has in cache,
//! and inserting one allocates nothing. Longer keys go to the heap.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Key bytes, inline up to `N` bytes (`N` at most 255).
#[derive(Debug, Clone)]
pub enum InlineKey<const N: usize> {
    /// Short: the length and the bytes.
    Inline(u8, [u8; N]),
    /// Longer than `N`.
    Heap(Box<[u8]>),
}

impl<const N: usize> InlineKey<N> {
    /// `bytes`, inline when they fit.
    pub fn new(bytes: &[u8]) -> InlineKey<N> {
        if bytes.len() <= N && N <= usize::from(u8::MAX) {
            let mut buf = [0u8; N];
            buf[..bytes.len()].copy_from_slice(bytes);
            InlineKey::Inline(bytes.len() as u8, buf)
        } else {
            InlineKey::Heap(bytes.into())
        }
    }

    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            InlineKey::Inline(len, buf) => &buf[..usize::from(*len)],
            InlineKey::Heap(bytes) => bytes,
        }
    }
}

impl<const N: usize> PartialEq for InlineKey<N> {
    fn eq(&self, other: &InlineKey<N>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> Eq for InlineKey<N> {}

/// Byte order, as the slices compare.
impl<const N: usize> Ord for InlineKey<N> {
    fn cmp(&self, other: &InlineKey<N>) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl<const N: usize> PartialOrd for InlineKey<N> {
    fn partial_cmp(&self, other: &InlineKey<N>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Hashes as the byte slice does, so that a table is searched by `&[u8]`.
impl<const N: usize> Hash for InlineKey<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<const N: usize> std::borrow::Borrow<[u8]> for InlineKey<N> {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// murmur3's 64-bit finalizer: every input bit reaches every output bit.
/// Hash tables use both the low bits of a hash (the bucket) and the top
/// seven (the tag), and a multiply alone mixes neither well.
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn an_inline_key_orders_and_finds_as_its_bytes(
            a in proptest::collection::vec(0u8..3, 0..12),
            b in proptest::collection::vec(0u8..3, 0..12),
        ) {
            let (ka, kb) = (InlineKey::<8>::new(&a), InlineKey::<8>::new(&b));
            prop_assert_eq!(ka.as_slice(), a.as_slice());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            let map: HashMap<InlineKey<8>, ()> = [(ka, ())].into();
            prop_assert!(map.contains_key(a.as_slice()));
            prop_assert_eq!(map.contains_key(b.as_slice()), a == b);
        }
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_on_the_heap() {
        assert!(matches!(
            InlineKey::<4>::new(b"abcd"),
            InlineKey::Inline(4, _)
        ));
        assert!(matches!(InlineKey::<4>::new(b"abcde"), InlineKey::Heap(_)));
        assert_ne!(mix64(1), mix64(2));
    }
}
