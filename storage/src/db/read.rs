//! The read path: memtables newest first, L0 tables newest first, then one
//! table per deeper level, stopping at the first complete entry and
//! merging the operands above it; and range scans over all of them.

use std::sync::Arc;

use super::Inner;
use crate::block_cache::Fill;
use crate::bloom::hash64;
use crate::cursor::{Cursor, LevelCursor, TableCursor, VecCursor};
use crate::entry::{resolve_newest_first, Entry, Kind};
use crate::error::{Error, Result};
use crate::merger::Merger;
use crate::metrics::add;
use crate::version::{LiveTable, NUM_LEVELS};

impl Inner {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        add(&self.metrics.gets, 1);
        let (active, immutables, version) = {
            let state = self.state.lock();
            (
                state.active.clone(),
                state.immutables.clone(),
                state.version.clone(),
            )
        };
        let mut found: Vec<Entry> = Vec::new();
        for mem in std::iter::once(&active).chain(immutables.iter().rev()) {
            if let Some(entry) = mem.get(key) {
                let complete = entry.is_complete();
                found.push(entry);
                if complete {
                    return Ok(resolve_newest_first(key, found, &*self.op));
                }
            }
        }
        let hash = hash64(key);
        let candidates = version.levels[0]
            .iter()
            .filter(|t| t.meta.overlaps(key, key))
            .chain((1..NUM_LEVELS).filter_map(|level| version.table_for_key(level, key)));
        for table in candidates {
            if !table.table.may_contain(hash) {
                add(&self.metrics.bloom_skips, 1);
                continue;
            }
            if let Some(entry) = table.table.get(key)? {
                let complete = entry.is_complete();
                found.push(entry);
                if complete {
                    break;
                }
            }
        }
        Ok(resolve_newest_first(key, found, &*self.op))
    }

    pub(super) fn scan_ranges_with(
        &self,
        ranges: &[(&[u8], Option<&[u8]>)],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let sorted = ranges
            .windows(2)
            .all(|w| w[0].1.is_some_and(|end| end <= w[1].0));
        if !sorted {
            return Err(Error::InvalidArgument(
                "scan ranges must be sorted, each starting at or after the previous end".into(),
            ));
        }
        let (Some(&(start, first_end)), Some(&(_, end))) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let (active, immutables, version) = {
            let state = self.state.lock();
            (
                state.active.clone(),
                state.immutables.clone(),
                state.version.clone(),
            )
        };
        // Cursors over the first range, later sent forward to each next one.
        let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
        for mem in std::iter::once(&active).chain(immutables.iter().rev()) {
            let mut entries = Vec::new();
            for &(from, to) in ranges {
                entries.extend(mem.range(from, to, usize::MAX));
            }
            if !entries.is_empty() {
                cursors.push(Box::new(VecCursor::new(entries, first_end)));
            }
        }
        let hi = end.unwrap_or(&[]);
        let meets = |t: &Arc<LiveTable>| {
            t.meta.largest.as_slice() >= start && (end.is_none() || t.meta.smallest.as_slice() < hi)
        };
        for table in version.levels[0].iter().filter(|t| meets(t)) {
            cursors.push(Box::new(TableCursor::new(
                table.table.clone(),
                start,
                first_end,
                Fill::Yes,
            )?));
        }
        for level in &version.levels[1..] {
            let tables: Vec<Arc<LiveTable>> = level.iter().filter(|t| meets(t)).cloned().collect();
            if !tables.is_empty() {
                cursors.push(Box::new(LevelCursor::new(
                    tables,
                    start,
                    first_end,
                    Fill::Yes,
                )?));
            }
        }
        let mut merger = Merger::new(cursors, self.op.clone());
        for (i, &(from, to)) in ranges.iter().enumerate() {
            if i > 0 {
                merger.seek(from, to)?;
            }
            let mut stopped = false;
            merger.visit(|key, kind, value| {
                let go = kind == Kind::Delete || visit(key, value);
                stopped = !go;
                Ok(go)
            })?;
            if stopped {
                break;
            }
        }
        Ok(())
    }
}
