//! Cursors: sorted, forward-only views over one source of entries (a
//! memtable snapshot, a table, a level) that lend their current entry
//! instead of allocating it.
//!
//! A range read of 1,440 counter buckets visits 1,440 entries; allocating a
//! key and a value for each would cost more than reading them. A table
//! cursor keeps the current data block in one buffer and hands out slices
//! of it, so iterating a table allocates once per block, not per entry.
//!
//! A cursor is bounded by an end key and can be sent forward to a later
//! range with [`Cursor::seek`]: a 30-day stats read is five ranges of one
//! counter's cells, which sit in the same block or two of each table, and
//! a seek within the current block costs neither an index search nor a
//! block fetch.

use std::path::Path;
use std::sync::Arc;

use crate::block::BlockEntries;
use crate::block_cache::Fill;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::table::Table;
use crate::version::LiveTable;

/// A forward cursor over sorted entries with unique keys, below an end
/// key.
pub(crate) trait Cursor: Send {
    /// The current entry, or `None` once exhausted or at the end key.
    fn current(&self) -> Option<(&[u8], Kind, &[u8])>;
    /// Moves to the next entry.
    fn advance(&mut self) -> Result<()>;
    /// Moves forward to the first entry `>= start` (never back: `start` is
    /// at least the previous end key) and bounds the cursor at `end`.
    fn seek(&mut self, start: &[u8], end: Option<&[u8]>) -> Result<()>;
}

/// Whether `key` is at or past `end`.
fn at_end(key: &[u8], end: Option<&[u8]>) -> bool {
    end.is_some_and(|end| key >= end)
}

/// Over owned entries (copied memtable ranges).
pub(crate) struct VecCursor {
    entries: Vec<(Vec<u8>, Entry)>,
    at: usize,
    end: Option<Vec<u8>>,
}

impl VecCursor {
    /// Over `entries`, sorted, below `end`.
    pub(crate) fn new(entries: Vec<(Vec<u8>, Entry)>, end: Option<&[u8]>) -> VecCursor {
        VecCursor {
            entries,
            at: 0,
            end: end.map(<[u8]>::to_vec),
        }
    }
}

impl Cursor for VecCursor {
    fn current(&self) -> Option<(&[u8], Kind, &[u8])> {
        self.entries
            .get(self.at)
            .filter(|(k, _)| !at_end(k, self.end.as_deref()))
            .map(|(k, e)| (k.as_slice(), e.kind, e.value.as_slice()))
    }

    fn advance(&mut self) -> Result<()> {
        self.at += 1;
        Ok(())
    }

    fn seek(&mut self, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        self.at += self.entries[self.at.min(self.entries.len())..]
            .partition_point(|(k, _)| k.as_slice() < start);
        self.end = end.map(<[u8]>::to_vec);
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
    /// The current entry; kept when it is at or past `end`, so that a
    /// seek can go on from it.
    slot: Option<Slot>,
    next_block: usize,
    end: Option<Vec<u8>>,
    /// Whether the current block reaches `end` (only then are keys compared
    /// with it).
    end_in_block: bool,
    /// Whether the current entry is at or past `end`.
    past_end: bool,
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
        let mut cursor = TableCursor {
            table,
            fill,
            block: Arc::from(&[][..]),
            block_offset: 0,
            slot: None,
            next_block: 0,
            end: None,
            end_in_block: false,
            past_end: false,
        };
        cursor.seek(start, end)?;
        Ok(cursor)
    }

    fn path(&self) -> &Path {
        self.table.path()
    }

    /// The current entry's key, whether or not it is past `end`.
    fn key(&self) -> Option<&[u8]> {
        self.slot.map(|slot| &self.block[slot.key.0..slot.key.1])
    }

    fn load_next_block(&mut self) -> Result<()> {
        self.slot = None;
        if self.next_block >= self.table.block_count() {
            return Ok(());
        }
        let (offset, body) = self.table.block(self.next_block, self.fill)?;
        self.next_block += 1;
        self.block = body;
        self.block_offset = offset;
        self.slot = self.parse_at(0)?;
        self.note_end();
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

    /// Works out `end_in_block` for the current block and `past_end` for
    /// the current entry.
    fn note_end(&mut self) {
        let block = self.next_block.wrapping_sub(1);
        self.end_in_block = self
            .end
            .as_deref()
            .is_some_and(|end| !self.table.block_ends_before(block, end));
        self.check_end();
    }

    fn check_end(&mut self) {
        self.past_end = self.end_in_block
            && self
                .key()
                .is_some_and(|key| at_end(key, self.end.as_deref()));
    }

    /// The next entry, whatever `end` says.
    fn step(&mut self) -> Result<()> {
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

impl Cursor for TableCursor {
    fn current(&self) -> Option<(&[u8], Kind, &[u8])> {
        if self.past_end {
            return None;
        }
        let slot = self.slot?;
        Some((
            &self.block[slot.key.0..slot.key.1],
            slot.kind,
            &self.block[slot.value.0..slot.value.1],
        ))
    }

    fn advance(&mut self) -> Result<()> {
        if self.past_end {
            return Ok(());
        }
        self.step()
    }

    fn seek(&mut self, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        self.end = end.map(<[u8]>::to_vec);
        // Stay in the current block when `start` is not past its last key;
        // otherwise the index names the block to go to.
        let in_block =
            self.slot.is_some() && !self.table.block_ends_before(self.next_block - 1, start);
        if in_block {
            self.note_end();
        } else {
            self.next_block = self.table.first_block_at_or_after(start);
            self.load_next_block()?;
        }
        while self.key().is_some_and(|key| key < start) {
            self.step()?;
        }
        Ok(())
    }
}

/// Over the tables of one sorted level, in key order.
pub(crate) struct LevelCursor {
    tables: Vec<Arc<LiveTable>>,
    /// The table `current` is over.
    at: usize,
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
            tables,
            at: 0,
            current: None,
            end: None,
            fill,
        };
        cursor.seek(start, end)?;
        Ok(cursor)
    }

    /// Opens table `at` at `start` (none past the last table).
    fn open(&mut self, start: &[u8]) -> Result<()> {
        self.current = match self.tables.get(self.at) {
            Some(table) => Some(TableCursor::new(
                table.table.clone(),
                start,
                self.end.as_deref(),
                self.fill,
            )?),
            None => None,
        };
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
        // A table run out (not stopped at `end`) hands over to the next.
        if cursor.key().is_none() {
            self.at += 1;
            self.open(&[])?;
        }
        Ok(())
    }

    fn seek(&mut self, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        self.end = end.map(<[u8]>::to_vec);
        // The first table from here whose keys reach `start` (the tables
        // do not overlap).
        let skip = self.tables[self.at.min(self.tables.len())..]
            .partition_point(|t| t.meta.largest.as_slice() < start);
        match self.current.as_mut() {
            Some(cursor) if skip == 0 => cursor.seek(start, end),
            _ => {
                self.at += skip;
                self.open(start)
            }
        }
    }
}
