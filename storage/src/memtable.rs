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

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::entry::Entry;
use crate::merge::MergeOperator;

/// An ordered in-memory table of entries.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<Vec<u8>, Entry>>,
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
            match map.get_mut(key.as_slice()) {
                Some(existing) => {
                    let before = existing.value.len() as isize;
                    existing.absorb(&key, entry, op);
                    added += existing.value.len() as isize - before;
                }
                None => {
                    added += Entry::charge(key.len(), entry.value.len()) as isize;
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
        self.map.read().get(key).cloned()
    }

    /// Copies the entries with keys in `[start, end)`, at most `limit`.
    pub(crate) fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Entry)> {
        let map = self.map.read();
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        map.range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, e)| (k.clone(), e.clone()))
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
            visit(key, entry)?;
        }
        Ok(())
    }
}
