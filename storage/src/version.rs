//! [`Version`]: the set of live SSTables, by level, at one moment.
//!
//! Versions are immutable and shared behind `Arc`: a reader takes the
//! current one and reads it without locks while flushes and compactions
//! install new ones. A table deleted by a compaction stays readable through
//! the open handle an older version holds.
//!
//! Level 0 holds flushed memtables, which may overlap; they are kept newest
//! first. Levels 1 and deeper each hold one sorted run of non-overlapping
//! tables ordered by key. For any key, an entry in a lower-numbered level is
//! newer than one in a higher-numbered level.

use std::sync::Arc;

use crate::decoder::{put_bytes, put_varint, Decoder};
use crate::table::Table;

/// Number of levels, L0 through L6.
pub(crate) const NUM_LEVELS: usize = 7;

/// What the manifest records about one SSTable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub(crate) number: u64,
    pub(crate) size: u64,
    pub(crate) entries: u64,
    pub(crate) smallest: Vec<u8>,
    pub(crate) largest: Vec<u8>,
}

impl FileMeta {
    pub(crate) fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.smallest.as_slice() <= largest && self.largest.as_slice() >= smallest
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.number);
        put_varint(buf, self.size);
        put_varint(buf, self.entries);
        put_bytes(buf, &self.smallest);
        put_bytes(buf, &self.largest);
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Option<FileMeta> {
        Some(FileMeta {
            number: d.varint()?,
            size: d.varint()?,
            entries: d.varint()?,
            smallest: d.length_prefixed()?.to_vec(),
            largest: d.length_prefixed()?.to_vec(),
        })
    }
}

/// An SSTable that is part of a version: its metadata and open handle.
#[derive(Debug)]
pub(crate) struct LiveTable {
    pub(crate) meta: FileMeta,
    pub(crate) table: Arc<Table>,
}

/// The live tables by level.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) levels: Vec<Vec<Arc<LiveTable>>>,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
        }
    }
}

impl Version {
    /// A new version with `deleted` removed and `added` inserted in order.
    pub(crate) fn with_changes(
        &self,
        deleted: &[(usize, u64)],
        added: Vec<(usize, Arc<LiveTable>)>,
    ) -> Version {
        let mut next = self.clone();
        for &(level, number) in deleted {
            next.levels[level].retain(|t| t.meta.number != number);
        }
        for (level, table) in added {
            next.levels[level].push(table);
        }
        next.levels[0].sort_by_key(|t| std::cmp::Reverse(t.meta.number));
        for level in next.levels.iter_mut().skip(1) {
            level.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }
        next
    }

    pub(crate) fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|t| t.meta.size).sum()
    }

    /// Tables of `level` whose key range meets `[smallest, largest]`.
    pub(crate) fn overlapping(
        &self,
        level: usize,
        smallest: &[u8],
        largest: &[u8],
    ) -> Vec<Arc<LiveTable>> {
        self.levels[level]
            .iter()
            .filter(|t| t.meta.overlaps(smallest, largest))
            .cloned()
            .collect()
    }

    /// The table of a sorted level (1+) that may hold `key`.
    pub(crate) fn table_for_key(&self, level: usize, key: &[u8]) -> Option<&Arc<LiveTable>> {
        let run = &self.levels[level];
        let i = run.partition_point(|t| t.meta.largest.as_slice() < key);
        run.get(i).filter(|t| t.meta.smallest.as_slice() <= key)
    }

    pub(crate) fn all_tables(&self) -> impl Iterator<Item = (usize, &Arc<LiveTable>)> {
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(level, tables)| tables.iter().map(move |t| (level, t)))
    }
}
