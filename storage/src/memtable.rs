//! [`Memtable`]: the in-memory, ordered write buffer in front of the
//! SSTables, with merges applied in place.
//!
//! A hot counter incremented a million times occupies one entry, not a
//! million operands: each merge is folded into the entry on arrival. Every
//! memtable belongs to one WAL file; when the memtable is flushed to an
//! SSTable, that WAL is no longer needed.
//!
//! A `BTreeMap` under a reader-writer lock: only the group-commit leader
//! writes (so writers never contend with each other), readers share the
//! lock. Once frozen (immutable) it is only read, by readers and the flush.
//!
//! Keys are [`MemKey`]s: the first eight bytes as an integer, compared
//! before the bytes. In the write path's profile a third of the memtable's
//! time was `memcmp` calls from the tree's searches; counter cell keys
//! start with an 8-byte token, so nearly every comparison is now one
//! integer comparison. Keys of up to 54 bytes are held inside the tree's
//! nodes: the comparisons that do reach the bytes (cells of one counter
//! share the token) no longer follow a pointer each. In the engine bench
//! (three A/B pairs) that made blind increments 8% and point reads 23%
//! faster.

use std::cmp::Ordering as KeyOrdering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::entry::Entry;
use crate::merge::MergeOperator;

/// Key bytes up to this length are held inside the tree's nodes.
const INLINE_KEY_BYTES: usize = 54;

/// A key's bytes, inline when short: a tree search then compares bytes it
/// already has in cache instead of following a pointer per comparison
/// (counter cell keys are about 40 bytes).
#[derive(Debug, Clone)]
enum KeyBytes {
    Inline(u8, [u8; INLINE_KEY_BYTES]),
    Heap(Box<[u8]>),
}

impl KeyBytes {
    fn new(bytes: &[u8]) -> KeyBytes {
        if bytes.len() <= INLINE_KEY_BYTES {
            let mut buf = [0u8; INLINE_KEY_BYTES];
            buf[..bytes.len()].copy_from_slice(bytes);
            KeyBytes::Inline(bytes.len() as u8, buf)
        } else {
            KeyBytes::Heap(bytes.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(len, buf) => &buf[..usize::from(*len)],
            KeyBytes::Heap(bytes) => bytes,
        }
    }
}

/// A memtable key: its first eight bytes (zero-padded) as a big-endian
/// integer, then the whole key. The prefix never orders two keys against
/// their bytes (a shorter key pads with zeros, the smallest byte), so
/// comparing `(prefix, bytes)` orders exactly as comparing the bytes.
#[derive(Debug, Clone)]
struct MemKey {
    prefix: u64,
    bytes: KeyBytes,
}

impl MemKey {
    fn new(bytes: &[u8]) -> MemKey {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        MemKey {
            prefix: u64::from_be_bytes(word),
            bytes: KeyBytes::new(bytes),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &MemKey) -> bool {
        self.prefix == other.prefix && self.bytes() == other.bytes()
    }
}

impl Eq for MemKey {}

impl Ord for MemKey {
    fn cmp(&self, other: &MemKey) -> KeyOrdering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.bytes().cmp(other.bytes()))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &MemKey) -> Option<KeyOrdering> {
        Some(self.cmp(other))
    }
}

/// An ordered in-memory table of entries.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<MemKey, Entry>>,
    bytes: AtomicUsize,
    wal_number: u64,
}

impl Memtable {
    pub(crate) fn new(wal_number: u64) -> Memtable {
        Memtable {
            map: RwLock::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
            wal_number,
        }
    }

    /// The WAL file whose records this memtable holds.
    pub(crate) fn wal_number(&self) -> u64 {
        self.wal_number
    }

    /// Approximate memory held, in bytes.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Applies a sequence of writes under one lock acquisition.
    pub(crate) fn apply(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Entry)>,
        op: &dyn MergeOperator,
    ) {
        let mut map = self.map.write();
        let mut added = 0isize;
        for (key, entry) in ops {
            // One search when the key is present (the steady state of a
            // counter), two when it is new.
            let key = MemKey::new(&key);
            match map.get_mut(&key) {
                Some(existing) => {
                    let before = existing.value.len() as isize;
                    existing.absorb(key.bytes(), entry, op);
                    added += existing.value.len() as isize - before;
                }
                None => {
                    added += Entry::charge(key.bytes().len(), entry.value.len()) as isize;
                    map.insert(key, entry);
                }
            }
        }
        if added >= 0 {
            self.bytes.fetch_add(added as usize, Ordering::Relaxed);
        } else {
            self.bytes
                .fetch_sub(added.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The entry for `key`, if this memtable has one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.read().get(&MemKey::new(key)).cloned()
    }

    /// Copies the entries with keys in `[start, end)`, at most `limit`.
    pub(crate) fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Entry)> {
        let map = self.map.read();
        let start = MemKey::new(start);
        let upper = match end {
            Some(end) => Bound::Excluded(MemKey::new(end)),
            None => Bound::Unbounded,
        };
        if matches!(&upper, Bound::Excluded(end) if *end <= start) {
            return Vec::new();
        }
        map.range((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, e)| (k.bytes().to_vec(), e.clone()))
            .collect()
    }

    /// Visits every entry in key order without copying (for the flush of a
    /// frozen memtable, which nothing writes any more), stopping at the
    /// first error.
    pub(crate) fn try_for_each<E>(
        &self,
        mut visit: impl FnMut(&[u8], &Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let map = self.map.read();
        for (key, entry) in map.iter() {
            visit(key.bytes(), entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn test_key() -> impl Strategy<Value = Vec<u8>> {
        // Few byte values and lengths around eight, so that prefixes tie,
        // keys are prefixes of each other and zero bytes meet padding.
        // Some keys are long enough to be held on the heap, next to
        // inline ones with the same first bytes.
        let byte = || prop_oneof![Just(0u8), Just(1u8), Just(255u8)];
        prop_oneof![
            3 => proptest::collection::vec(byte(), 0..12),
            1 => (proptest::collection::vec(byte(), 0..4), 50..60usize).prop_map(|(head, len)| {
                let mut key = head;
                key.resize(len, 1);
                key
            }),
        ]
    }

    proptest! {
        #[test]
        fn mem_keys_order_exactly_as_their_bytes(a in test_key(), b in test_key()) {
            prop_assert_eq!(MemKey::new(&a).cmp(&MemKey::new(&b)), a.cmp(&b));
        }

        #[test]
        fn range_returns_the_keys_between_its_bounds(
            keys in proptest::collection::btree_set(test_key(), 0..40),
            start in test_key(),
            end in proptest::option::of(test_key()),
        ) {
            let mem = Memtable::new(1);
            mem.apply(
                keys.iter().map(|k| (k.clone(), Entry::put(vec![1]))),
                &crate::merge::AddI64,
            );
            let got: Vec<Vec<u8>> = mem
                .range(&start, end.as_deref(), usize::MAX)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let want: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| **k >= start && end.as_ref().is_none_or(|e| *k < e))
                .cloned()
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
