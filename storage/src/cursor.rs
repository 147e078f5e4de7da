//! Cursors: sorted, forward-only views over one source of entries (a
//! memtable snapshot, a table, a level) that lend their current entry
//! instead of allocating it.
//!
//! A range read of 1,440 counter buckets visits 1,440 entries; allocating a
//! key and a value for each would cost more than reading them. A table
//! cursor keeps the current data block in one buffer and hands out slices
//! of it, so iterating a table allocates once per block, not per entry.

use std::path::Path;
use std::sync::Arc;

use crate::block::BlockEntries;
use crate::block_cache::Fill;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::table::Table;
use crate::version::LiveTable;

/// A forward cursor over sorted entries with unique keys.
pub(crate) trait Cursor: Send {
    /// The current entry, or `None` once exhausted.
    fn current(&self) -> Option<(&[u8], Kind, &[u8])>;
    /// Moves to the next entry.
    fn advance(&mut self) -> Result<()>;
}

/// Over owned entries (a copied memtable range).
pub(crate) struct VecCursor {
    entries: Vec<(Vec<u8>, Entry)>,
    at: usize,
}

impl VecCursor {
    pub(crate) fn new(entries: Vec<(Vec<u8>, Entry)>) -> VecCursor {
        VecCursor { entries, at: 0 }
    }
}

impl Cursor for VecCursor {
    fn current(&self) -> Option<(&[u8], Kind, &[u8])> {
        self.entries
            .get(self.at)
            .map(|(k, e)| (k.as_slice(), e.kind, e.value.as_slice()))
    }

    fn advance(&mut self) -> Result<()> {
        self.at += 1;
        Ok(())
    }
}

/// Byte ranges of the current entry inside the block buffer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: (usize, usize),
    kind: Kind,
    value: (usize, usize),
    next: usize,
}

/// Over one table's entries in `[start, end)`.
pub(crate) struct TableCursor {
    table: Arc<Table>,
    fill: Fill,
    /// The current block's body (crc checked and stripped).
    block: Arc<[u8]>,
    block_offset: u64,
    slot: Option<Slot>,
    next_block: usize,
    end: Option<Vec<u8>>,
    /// Whether the current block reaches `end` (only then are keys compared
    /// with it).
    end_in_block: bool,
}

impl TableCursor {
    /// Positions at the first key `>= start`; `fill` says whether the
    /// blocks it reads stay in the block cache.
    pub(crate) fn new(
        table: Arc<Table>,
        start: &[u8],
        end: Option<&[u8]>,
        fill: Fill,
    ) -> Result<TableCursor> {
        let first_block = table.first_block_at_or_after(start);
        let mut cursor = TableCursor {
            table,
            fill,
            block: Arc::from(&[][..]),
            block_offset: 0,
            slot: None,
            next_block: first_block,
            end: end.map(<[u8]>::to_vec),
            end_in_block: false,
        };
        cursor.load_next_block()?;
        while let Some((key, _, _)) = cursor.current() {
            if key >= start {
                break;
            }
            cursor.advance()?;
        }
        Ok(cursor)
    }

    fn path(&self) -> &Path {
        self.table.path()
    }

    fn load_next_block(&mut self) -> Result<()> {
        self.slot = None;
        if self.next_block >= self.table.block_count() {
            return Ok(());
        }
        let (offset, body) = self.table.block(self.next_block, self.fill)?;
        self.end_in_block = self
            .end
            .as_deref()
            .is_some_and(|end| !self.table.block_ends_before(self.next_block, end));
        self.next_block += 1;
        self.block = body;
        self.block_offset = offset;
        self.slot = self.parse_at(0)?;
        self.check_end();
        Ok(())
    }

    /// Parses the entry at `pos`; `None` at the end of the block.
    fn parse_at(&self, pos: usize) -> Result<Option<Slot>> {
        let rest = self.block.get(pos..).unwrap_or_default();
        let mut entries = BlockEntries::new(self.path(), self.block_offset + pos as u64, rest);
        let Some(item) = entries.next() else {
            return Ok(None);
        };
        let (key, kind, value) = item?;
        let offset_of = |s: &[u8]| s.as_ptr() as usize - self.block.as_ptr() as usize;
        let key_at = offset_of(key);
        let value_at = offset_of(value);
        Ok(Some(Slot {
            key: (key_at, key_at + key.len()),
            kind,
            value: (value_at, value_at + value.len()),
            next: value_at + value.len(),
        }))
    }

    fn check_end(&mut self) {
        if !self.end_in_block {
            return;
        }
        if let (Some(end), Some((key, _, _))) = (self.end.as_deref(), self.current()) {
            if key >= end {
                self.slot = None;
                self.next_block = usize::MAX;
            }
        }
    }
}

impl Cursor for TableCursor {
    fn current(&self) -> Option<(&[u8], Kind, &[u8])> {
        let slot = self.slot?;
        Some((
            &self.block[slot.key.0..slot.key.1],
            slot.kind,
            &self.block[slot.value.0..slot.value.1],
        ))
    }

    fn advance(&mut self) -> Result<()> {
        let Some(slot) = self.slot else { return Ok(()) };
        match self.parse_at(slot.next)? {
            Some(next) => {
                if self.block[next.key.0..next.key.1] <= self.block[slot.key.0..slot.key.1] {
                    return Err(Error::corruption(
                        self.path(),
                        self.block_offset,
                        "block keys out of order",
                    ));
                }
                self.slot = Some(next);
                self.check_end();
                Ok(())
            }
            None => {
                let block = self.next_block - 1;
                if !self
                    .table
                    .is_last_key_of_block(block, &self.block[slot.key.0..slot.key.1])
                {
                    return Err(Error::corruption(
                        self.path(),
                        self.block_offset,
                        "block disagrees with the index",
                    ));
                }
                self.load_next_block()
            }
        }
    }
}

/// Over the tables of one sorted level, in key order.
pub(crate) struct LevelCursor {
    tables: std::vec::IntoIter<Arc<LiveTable>>,
    current: Option<TableCursor>,
    end: Option<Vec<u8>>,
    fill: Fill,
}

impl LevelCursor {
    pub(crate) fn new(
        tables: Vec<Arc<LiveTable>>,
        start: &[u8],
        end: Option<&[u8]>,
        fill: Fill,
    ) -> Result<LevelCursor> {
        let mut cursor = LevelCursor {
            tables: tables.into_iter(),
            current: None,
            end: end.map(<[u8]>::to_vec),
            fill,
        };
        cursor.open_next(start)?;
        Ok(cursor)
    }

    /// Opens tables until one has an entry (or none are left).
    fn open_next(&mut self, start: &[u8]) -> Result<()> {
        self.current = None;
        for table in self.tables.by_ref() {
            let cursor =
                TableCursor::new(table.table.clone(), start, self.end.as_deref(), self.fill)?;
            if cursor.current().is_some() {
                self.current = Some(cursor);
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Cursor for LevelCursor {
    fn current(&self) -> Option<(&[u8], Kind, &[u8])> {
        self.current.as_ref()?.current()
    }

    fn advance(&mut self) -> Result<()> {
        let Some(cursor) = self.current.as_mut() else {
            return Ok(());
        };
        cursor.advance()?;
        if cursor.current().is_none() {
            self.open_next(&[])?;
        }
        Ok(())
    }
}
