//! [`Table`]: an open, immutable SSTable.
//!
//! Opening reads and verifies the footer, the bloom filter and the index and
//! keeps them in memory; data blocks are read on demand with positional
//! reads and verified against their crc every time. Every length and offset
//! read from the file is bounds-checked: damaged bytes give `Corruption`,
//! never a panic and never a wrong value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{decode_index, unseal, BlockEntries, BlockHandle, IndexEntry};
use crate::bloom::Bloom;
use crate::decoder::Decoder;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::fs::FsFile;
use crate::table_builder::{FOOTER_LEN, TABLE_FORMAT_VERSION, TABLE_MAGIC};

/// An open SSTable.
#[derive(Debug)]
pub(crate) struct Table {
    path: PathBuf,
    file: Arc<dyn FsFile>,
    index: Vec<IndexEntry>,
    bloom: Bloom,
    entries: u64,
}

fn read_block(file: &dyn FsFile, path: &Path, handle: BlockHandle) -> Result<Vec<u8>> {
    let mut raw = vec![0u8; handle.len as usize];
    file.read_exact_at(&mut raw, handle.offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(
                path,
                handle.offset,
                "block extends past the end of the file",
            )
        } else {
            Error::io("read", path, e)
        }
    })?;
    Ok(raw)
}

impl Table {
    /// Opens and verifies an SSTable's footer, bloom filter and index.
    pub(crate) fn open(path: PathBuf, file: Arc<dyn FsFile>) -> Result<Table> {
        let size = file.size().map_err(|e| Error::io("stat", &path, e))?;
        if size < FOOTER_LEN as u64 {
            return Err(Error::corruption(
                &path,
                0,
                format!("file of {size} bytes has no footer"),
            ));
        }
        let footer_at = size - FOOTER_LEN as u64;
        let footer = read_block(
            &*file,
            &path,
            BlockHandle {
                offset: footer_at,
                len: FOOTER_LEN as u32,
            },
        )?;
        let bad_footer = |reason: &str| Error::corruption(&path, footer_at, reason.to_owned());
        let mut d = Decoder::new(&footer);
        let (index_handle, bloom_handle, entries, version, crc, magic) = (|| {
            let index = BlockHandle {
                offset: d.u64()?,
                len: d.u32()?,
            };
            let bloom = BlockHandle {
                offset: d.u64()?,
                len: d.u32()?,
            };
            Some((index, bloom, d.u64()?, d.u32()?, d.u32()?, d.u64()?))
        })()
        .ok_or_else(|| bad_footer("short footer"))?;
        if magic != TABLE_MAGIC {
            return Err(bad_footer("bad magic number: not a tally SSTable"));
        }
        if crc != crc32fast::hash(&footer[..FOOTER_LEN - 12]) {
            return Err(bad_footer("footer checksum mismatch"));
        }
        if version != TABLE_FORMAT_VERSION {
            return Err(bad_footer(&format!("unsupported format version {version}")));
        }
        for handle in [index_handle, bloom_handle] {
            if handle.offset.saturating_add(u64::from(handle.len)) > footer_at {
                return Err(bad_footer("block handle points past the data"));
            }
        }

        let raw = read_block(&*file, &path, bloom_handle)?;
        let bloom = Bloom::decode(unseal(&path, bloom_handle.offset, &raw)?).ok_or_else(|| {
            Error::corruption(&path, bloom_handle.offset, "malformed bloom filter")
        })?;

        let raw = read_block(&*file, &path, index_handle)?;
        let index = decode_index(unseal(&path, index_handle.offset, &raw)?).ok_or_else(|| {
            Error::corruption(&path, index_handle.offset, "malformed index block")
        })?;
        let mut data_end = 0u64;
        for (i, entry) in index.iter().enumerate() {
            let h = entry.handle;
            let in_order = i == 0 || index[i - 1].last_key < entry.last_key;
            if h.offset != data_end || h.len < 4 || !in_order {
                return Err(Error::corruption(
                    &path,
                    index_handle.offset,
                    "index entries out of order",
                ));
            }
            data_end = h.offset + u64::from(h.len);
        }
        if data_end > bloom_handle.offset.min(index_handle.offset) {
            return Err(Error::corruption(
                &path,
                index_handle.offset,
                "index overlaps the meta blocks",
            ));
        }
        Ok(Table {
            path,
            file,
            index,
            bloom,
            entries,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// False when the bloom filter rules `hash64(key)` out.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        self.bloom.may_contain(hash)
    }

    /// The entry for `key`, if this table has one (call `may_contain` first).
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let block_idx = self.index.partition_point(|e| e.last_key.as_slice() < key);
        let Some(entry) = self.index.get(block_idx) else {
            return Ok(None);
        };
        let raw = read_block(&*self.file, &self.path, entry.handle)?;
        let body = unseal(&self.path, entry.handle.offset, &raw)?;
        for item in BlockEntries::new(&self.path, entry.handle.offset, body) {
            let (k, kind, v) = item?;
            if k == key {
                return Ok(Some(Entry {
                    kind,
                    value: v.to_vec(),
                }));
            }
            if k > key {
                break;
            }
        }
        Ok(None)
    }

    /// Decodes data block `i` into owned entries.
    fn block_entries(&self, i: usize) -> Result<Vec<(Vec<u8>, Entry)>> {
        let handle = self.index[i].handle;
        let raw = read_block(&*self.file, &self.path, handle)?;
        let body = unseal(&self.path, handle.offset, &raw)?;
        let mut out = Vec::new();
        let mut last: Option<&[u8]> = None;
        for item in BlockEntries::new(&self.path, handle.offset, body) {
            let (k, kind, v) = item?;
            if last.is_some_and(|last| last >= k) {
                return Err(Error::corruption(
                    &self.path,
                    handle.offset,
                    "block keys out of order",
                ));
            }
            last = Some(k);
            out.push((
                k.to_vec(),
                Entry {
                    kind,
                    value: v.to_vec(),
                },
            ));
        }
        if last != Some(self.index[i].last_key.as_slice()) {
            return Err(Error::corruption(
                &self.path,
                handle.offset,
                "block disagrees with the index",
            ));
        }
        Ok(out)
    }
}

/// Iterates a table's entries with keys in `[start, end)`, reading one block
/// at a time.
#[derive(Debug)]
pub(crate) struct TableIter {
    table: Arc<Table>,
    next_block: usize,
    buffered: std::vec::IntoIter<(Vec<u8>, Entry)>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    done: bool,
}

impl TableIter {
    pub(crate) fn new(table: Arc<Table>, start: &[u8], end: Option<&[u8]>) -> TableIter {
        let next_block = table
            .index
            .partition_point(|e| e.last_key.as_slice() < start);
        TableIter {
            table,
            next_block,
            buffered: Vec::new().into_iter(),
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            done: false,
        }
    }
}

impl Iterator for TableIter {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some((key, entry)) = self.buffered.next() {
                if key < self.start {
                    continue;
                }
                if self.end.as_deref().is_some_and(|end| key.as_slice() >= end) {
                    self.done = true;
                    return None;
                }
                return Some(Ok((key, entry)));
            }
            if self.next_block >= self.table.index.len() {
                self.done = true;
                return None;
            }
            match self.table.block_entries(self.next_block) {
                Ok(entries) => {
                    self.next_block += 1;
                    self.buffered = entries.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
