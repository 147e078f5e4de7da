//! [`Memtable`]: the in-memory, ordered write buffer in front of the
//! SSTables, with merges applied in place.
//!
//! A hot counter incremented a million times occupies one entry, not a
//! million operands: each merge is folded into the entry on arrival. Every
//! memtable belongs to one WAL file; when the memtable is flushed to an
//! SSTable, that WAL is no longer needed.
//!
//! A two-level ordered map under a reader-writer lock: only the
//! group-commit leader writes (so writers never contend with each other),
//! readers share the lock. Once frozen (immutable) it is only read, by
//! readers and the flush.
//!
//! The outer level maps a key's first eight bytes, as an integer, to the
//! [`Group`] of entries whose keys share them, in key order. Counter cell
//! keys start with their counter's 8-byte token, so the cells of one
//! counter (its rollups and buckets) sit together in one small sorted
//! vector. The outer map is a hash table: a write finds its group in one
//! probe. It was a `BTreeMap`, and descending it (a cache miss a level,
//! with a table of a few hundred thousand counters) was the largest single
//! item of a batched increment's profile after the group search itself.
//! Order across groups is needed only by the flush and by scans that span
//! several prefixes (anti-entropy, streaming), never by a write or by a
//! read of one counter: the prefixes are sorted lazily, when such a scan
//! asks, by merging the prefixes added since the last one into a sorted
//! list ([`Order`]). A group that grows past [`FEW`] entries (the op-id
//! keys all share one prefix, by the million) becomes a tree of its own.
//!
//! Walking the groups in prefix order and each group in byte order visits
//! keys in byte order (see [`crate::key_prefix`]).

use std::collections::{btree_map, hash_map, BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::entry::Entry;
use crate::inline_key::{mix64, InlineKey};
use crate::key_prefix::prefix_of;
use crate::merge::MergeOperator;
use crate::write_batch::Op;

/// Key bytes up to this length are held inline (in the group's vector).
const INLINE_KEY_BYTES: usize = 54;

/// A group holds up to this many entries in a sorted vector.
const FEW: usize = 64;

/// A key's bytes, inline when short (counter cell keys are about 40
/// bytes): a group's search compares bytes it already has in cache.
type KeyBytes = InlineKey<INLINE_KEY_BYTES>;

/// The entries whose keys share one prefix, in key order.
#[derive(Debug)]
enum Group {
    /// At most [`FEW`], sorted.
    Few(Vec<(KeyBytes, Entry)>),
    /// More.
    Many(BTreeMap<KeyBytes, Entry>),
}

impl Group {
    fn one(write: Op<'_>) -> Group {
        Group::Few(vec![(KeyBytes::new(write.key), new_entry(write))])
    }

    /// Folds `write` into the entry of its key or adds it; the memory this
    /// added (negative when a value shrank). `next` is where the previous
    /// write to this group landed plus one: a batch's writes come in key
    /// order, so a counter's next rollup is usually right there, and one
    /// comparison spares the binary search. Updated to this write's.
    fn apply(&mut self, write: Op<'_>, op: &dyn MergeOperator, next: &mut usize) -> isize {
        let key = write.key;
        let added = Entry::charge(key.len(), write.value.len()) as isize;
        match self {
            Group::Few(entries) => {
                let found = match entries.get(*next) {
                    Some((k, _)) if k.as_slice() == key => Ok(*next),
                    _ => entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)),
                };
                match found {
                    Ok(i) => {
                        *next = i + 1;
                        absorb(&mut entries[i].1, write, op)
                    }
                    Err(i) => {
                        let entry = new_entry(write);
                        *next = i + 1;
                        if entries.len() < FEW {
                            entries.insert(i, (KeyBytes::new(key), entry));
                        } else {
                            let mut tree: BTreeMap<KeyBytes, Entry> =
                                std::mem::take(entries).into_iter().collect();
                            tree.insert(KeyBytes::new(key), entry);
                            *self = Group::Many(tree);
                        }
                        added
                    }
                }
            }
            Group::Many(tree) => match tree.get_mut(key) {
                Some(existing) => absorb(existing, write, op),
                None => {
                    tree.insert(KeyBytes::new(key), new_entry(write));
                    added
                }
            },
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        match self {
            Group::Few(entries) => entries
                .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                .ok()
                .map(|i| &entries[i].1),
            Group::Many(tree) => tree.get(key),
        }
    }

    /// The entries with keys `>= start` (all of them without a start), in
    /// key order.
    fn from(&self, start: Option<&[u8]>) -> GroupIter<'_> {
        match self {
            Group::Few(entries) => {
                let first = start.map_or(0, |s| entries.partition_point(|(k, _)| k.as_slice() < s));
                GroupIter::Few(entries[first..].iter())
            }
            Group::Many(tree) => GroupIter::Many(match start {
                Some(s) => tree.range::<[u8], _>((Bound::Included(s), Bound::Unbounded)),
                None => tree.range::<[u8], _>(..),
            }),
        }
    }
}

/// The entry a write makes of a key the memtable does not hold yet.
fn new_entry(write: Op<'_>) -> Entry {
    Entry {
        kind: write.kind,
        value: write.value.to_vec(),
    }
}

/// Folds `write` into `existing` in place; the bytes this added.
fn absorb(existing: &mut Entry, write: Op<'_>, op: &dyn MergeOperator) -> isize {
    let before = existing.value.len() as isize;
    existing.absorb_op(write.key, write.kind, write.value, op);
    existing.value.len() as isize - before
}

/// A [`Group`]'s entries in key order.
enum GroupIter<'a> {
    Few(std::slice::Iter<'a, (KeyBytes, Entry)>),
    Many(btree_map::Range<'a, KeyBytes, Entry>),
}

impl<'a> Iterator for GroupIter<'a> {
    type Item = (&'a [u8], &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        let (k, e) = match self {
            GroupIter::Few(it) => it.next().map(|(k, e)| (k, e))?,
            GroupIter::Many(it) => it.next()?,
        };
        Some((k.as_slice(), e))
    }
}

/// Hashes a key prefix with [`mix64`]: counter prefixes are XXH64 tokens
/// already, but other keys (op ids, tests) may not be mixed.
#[derive(Debug, Default, Clone, Copy)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// The groups by prefix, and the prefixes in the order they came.
#[derive(Debug, Default)]
struct Groups {
    by_prefix: HashMap<u64, Group, BuildHasherDefault<PrefixHasher>>,
    /// Every prefix, in the order it was first written: [`Order`] sorts
    /// the ones it has not seen yet.
    added: Vec<u64>,
}

/// The prefixes sorted, as far as the last ordered scan needed them.
#[derive(Debug, Default)]
struct Order {
    sorted: Vec<u64>,
    /// How many of [`Groups::added`] are in `sorted`.
    merged: usize,
}

impl Order {
    /// Brings `sorted` up to date with `added`: the new prefixes sorted
    /// and merged in (linear in the table, and only when a scan spans
    /// several prefixes after writes).
    fn catch_up(&mut self, added: &[u64]) -> &[u64] {
        if self.merged < added.len() {
            let mut new = added[self.merged..].to_vec();
            new.sort_unstable();
            if self.sorted.is_empty() {
                self.sorted = new;
            } else {
                let old = std::mem::take(&mut self.sorted);
                self.sorted = Vec::with_capacity(old.len() + new.len());
                let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
                while let (Some(&x), Some(&y)) = (a.peek(), b.peek()) {
                    if x <= y {
                        self.sorted.extend(a.next());
                    } else {
                        self.sorted.extend(b.next());
                    }
                }
                self.sorted.extend(a);
                self.sorted.extend(b);
            }
            self.merged = added.len();
        }
        &self.sorted
    }
}

/// An ordered in-memory table of entries.
#[derive(Debug)]
pub(crate) struct Memtable {
    groups: RwLock<Groups>,
    order: Mutex<Order>,
    bytes: AtomicUsize,
    wal_number: u64,
}

impl Memtable {
    pub(crate) fn new(wal_number: u64) -> Memtable {
        Memtable {
            groups: RwLock::new(Groups::default()),
            order: Mutex::new(Order::default()),
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
        self.groups.read().added.is_empty()
    }

    /// Applies a sequence of writes under one lock acquisition.
    pub(crate) fn apply<'a>(
        &self,
        writes: impl IntoIterator<Item = Op<'a>>,
        op: &dyn MergeOperator,
    ) {
        let mut groups = self.groups.write();
        let Groups { by_prefix, added } = &mut *groups;
        let mut charged = 0isize;
        // The group of the previous write, and the position after it in
        // that group: a batch holds a counter's cells side by side (one
        // per rollup, in key order), so most writes find their group
        // without a probe, and their entry at that position.
        let mut last: Option<(u64, &mut Group, usize)> = None;
        for write in writes {
            let prefix = prefix_of(write.key);
            if let Some((last_prefix, group, next)) = &mut last {
                if *last_prefix == prefix {
                    charged += group.apply(write, op, next);
                    continue;
                }
            }
            let mut next = 0;
            let group = match by_prefix.entry(prefix) {
                hash_map::Entry::Occupied(slot) => {
                    let group = slot.into_mut();
                    charged += group.apply(write, op, &mut next);
                    group
                }
                hash_map::Entry::Vacant(slot) => {
                    charged += Entry::charge(write.key.len(), write.value.len()) as isize;
                    added.push(prefix);
                    next = 1;
                    slot.insert(Group::one(write))
                }
            };
            last = Some((prefix, group, next));
        }
        if charged >= 0 {
            self.bytes.fetch_add(charged as usize, Ordering::Relaxed);
        } else {
            self.bytes
                .fetch_sub(charged.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The entry for `key`, if this memtable has one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Entry> {
        self.groups
            .read()
            .by_prefix
            .get(&prefix_of(key))?
            .get(key)
            .cloned()
    }

    /// Copies the entries with keys in `[start, end)`, at most `limit`.
    pub(crate) fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Entry)> {
        if end.is_some_and(|end| end <= start) {
            return Vec::new();
        }
        let groups = self.groups.read();
        let first = prefix_of(start);
        let copy = |(k, e): (&[u8], &Entry)| (k.to_vec(), e.clone());
        let below_end = |(k, _): &(&[u8], &Entry)| end.is_none_or(|end| *k < end);
        if end.is_some_and(|end| prefix_of(end) == first) {
            // Within one prefix (a read of one counter's buckets): that
            // group alone, no order needed.
            return match groups.by_prefix.get(&first) {
                Some(group) => group
                    .from(Some(start))
                    .take_while(below_end)
                    .take(limit)
                    .map(copy)
                    .collect(),
                None => Vec::new(),
            };
        }
        let mut order = self.order.lock();
        let sorted = order.catch_up(&groups.added);
        let from = sorted.partition_point(|&p| p < first);
        sorted[from..]
            .iter()
            .filter_map(|p| Some((*p, groups.by_prefix.get(p)?)))
            .flat_map(|(prefix, group)| group.from((prefix == first).then_some(start)))
            .take_while(below_end)
            .take(limit)
            .map(copy)
            .collect()
    }

    /// Visits every entry in key order without copying (for the flush of a
    /// frozen memtable, which nothing writes any more), stopping at the
    /// first error.
    pub(crate) fn try_for_each<E>(
        &self,
        mut visit: impl FnMut(&[u8], &Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let groups = self.groups.read();
        let mut order = self.order.lock();
        let sorted = order.catch_up(&groups.added);
        for group in sorted.iter().filter_map(|p| groups.by_prefix.get(p)) {
            for (key, entry) in group.from(None) {
                visit(key, entry)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Kind;
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

    /// Keys sharing one 8-byte head and differing after it, enough of
    /// them to push a group past `FEW` into a tree of its own.
    fn crowded_key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..4, 1..6).prop_map(|tail| {
            let mut key = vec![7u8; 8];
            key.extend(tail);
            key
        })
    }

    fn any_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![test_key(), crowded_key()]
    }

    /// Puts the value `[1]` under each of `keys`.
    fn put_ones<'a>(mem: &Memtable, keys: impl IntoIterator<Item = &'a Vec<u8>>) {
        let ops = keys.into_iter().map(|k| Op {
            kind: Kind::Put,
            key: k,
            value: &[1],
        });
        mem.apply(ops, &crate::merge::AddI64);
    }

    fn op_of((key, entry): &(Vec<u8>, Entry)) -> Op<'_> {
        Op {
            kind: entry.kind,
            key,
            value: &entry.value,
        }
    }

    fn write() -> impl Strategy<Value = (Vec<u8>, Entry)> {
        let entry = prop_oneof![
            1 => (-5i64..5).prop_map(|v| Entry::put(v.to_le_bytes().to_vec())),
            3 => (-5i64..5).prop_map(|v| Entry::merge(v.to_le_bytes().to_vec())),
            1 => Just(Entry::delete()),
        ];
        (any_key(), entry)
    }

    #[test]
    fn a_crowded_prefix_becomes_a_tree_and_stays_in_order() {
        let mem = Memtable::new(1);
        let keys: Vec<Vec<u8>> = (0u16..200)
            .rev()
            .map(|i| [&[7u8; 8][..], &i.to_be_bytes()].concat())
            .collect();
        put_ones(&mem, &keys);
        assert!(matches!(
            mem.groups.read().by_prefix.get(&prefix_of(&keys[0])),
            Some(Group::Many(tree)) if tree.len() == 200
        ));
        // keys[100] is key 99; the next two are 100 and 101.
        let from_middle: Vec<Vec<u8>> = mem
            .range(&keys[100], None, 3)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            from_middle,
            keys[98..=100].iter().rev().cloned().collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn the_memtable_holds_what_a_sorted_map_of_whole_keys_holds(
            batches in proptest::collection::vec(proptest::collection::vec(write(), 0..120), 1..4),
            probes in proptest::collection::vec(any_key(), 0..20),
        ) {
            let mem = Memtable::new(1);
            let mut model: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            for batch in batches {
                for (key, entry) in &batch {
                    match model.get_mut(key) {
                        Some(existing) => existing.absorb(key, entry.clone(), &crate::merge::AddI64),
                        None => {
                            model.insert(key.clone(), entry.clone());
                        }
                    }
                }
                mem.apply(batch.iter().map(op_of), &crate::merge::AddI64);
            }
            let mut seen = Vec::new();
            mem.try_for_each(|k, e| {
                seen.push((k.to_vec(), e.clone()));
                Ok::<(), ()>(())
            }).unwrap();
            let want: Vec<(Vec<u8>, Entry)> = model.clone().into_iter().collect();
            prop_assert_eq!(&seen, &want);
            for probe in probes.iter().chain(model.keys()) {
                prop_assert_eq!(mem.get(probe), model.get(probe).cloned());
            }
            let charged: usize =
                model.iter().map(|(k, e)| Entry::charge(k.len(), e.value.len())).sum();
            prop_assert_eq!(mem.approximate_bytes(), charged);
            prop_assert_eq!(mem.is_empty(), model.is_empty());
        }

        /// Scans between writes: the order merged at one scan, and the
        /// prefixes added after it, must make the next scan's order.
        #[test]
        fn scans_between_writes_see_every_key_in_order(
            batches in proptest::collection::vec(proptest::collection::vec(any_key(), 0..40), 1..6),
            start in any_key(),
        ) {
            let mem = Memtable::new(1);
            let mut model = std::collections::BTreeSet::new();
            for batch in &batches {
                put_ones(&mem, batch);
                model.extend(batch.iter().cloned());
                let got: Vec<Vec<u8>> =
                    mem.range(&start, None, usize::MAX).into_iter().map(|(k, _)| k).collect();
                let want: Vec<Vec<u8>> = model.range(start.clone()..).cloned().collect();
                prop_assert_eq!(got, want);
                let mut all = Vec::new();
                mem.try_for_each(|k, _| {
                    all.push(k.to_vec());
                    Ok::<(), ()>(())
                }).unwrap();
                prop_assert_eq!(all, model.iter().cloned().collect::<Vec<_>>());
            }
        }

        #[test]
        fn range_returns_the_keys_between_its_bounds(
            keys in proptest::collection::btree_set(any_key(), 0..150),
            start in any_key(),
            end in proptest::option::of(any_key()),
            limit in 0usize..200,
        ) {
            let mem = Memtable::new(1);
            put_ones(&mem, &keys);
            let got: Vec<Vec<u8>> = mem
                .range(&start, end.as_deref(), limit)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let want: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| **k >= start && end.as_ref().is_none_or(|e| *k < e))
                .take(limit)
                .cloned()
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
