//! [`TableBuilder`]: writes one SSTable from entries in key order.
//!
//! The file is written under a temporary name, fsynced, renamed to its final
//! name and the directory fsynced, so an SSTable either exists whole and
//! durable or not at all. Layout (see `docs/format.md`): data blocks, bloom
//! filter block, index block, fixed 48-byte footer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{encode_entry, encode_index, seal, BlockHandle, IndexEntry};
use crate::bloom::{hash64, Bloom};
use crate::entry::Kind;
use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile};

/// Identifies SSTable files ("tallySST" read as a little-endian u64).
pub(crate) const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"tallySST");
/// The SSTable format version this code writes and reads.
pub(crate) const TABLE_FORMAT_VERSION: u32 = 1;
/// Bytes in the footer.
pub(crate) const FOOTER_LEN: usize = 48;

/// Summary of a finished SSTable, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableSummary {
    pub(crate) size: u64,
    pub(crate) entries: u64,
    pub(crate) smallest: Vec<u8>,
    pub(crate) largest: Vec<u8>,
}

/// Builds an SSTable.
#[derive(Debug)]
pub(crate) struct TableBuilder {
    fs: Arc<dyn Fs>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    file: Arc<dyn FsFile>,
    block_size: usize,
    bloom_bits_per_key: usize,
    pending: Vec<u8>,
    block: Vec<u8>,
    offset: u64,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    last_key: Vec<u8>,
    smallest: Option<Vec<u8>>,
    entries: u64,
}

const WRITE_CHUNK: usize = 256 << 10;

impl TableBuilder {
    pub(crate) fn create(
        fs: Arc<dyn Fs>,
        final_path: PathBuf,
        block_size: usize,
        bloom_bits_per_key: usize,
    ) -> Result<TableBuilder> {
        let tmp_path = final_path.with_extension("sst.tmp");
        let file = fs
            .create(&tmp_path)
            .map_err(|e| Error::io("create", &tmp_path, e))?;
        Ok(TableBuilder {
            fs,
            tmp_path,
            final_path,
            file,
            block_size,
            bloom_bits_per_key,
            pending: Vec::with_capacity(WRITE_CHUNK),
            block: Vec::with_capacity(block_size + 1024),
            offset: 0,
            index: Vec::new(),
            hashes: Vec::new(),
            last_key: Vec::new(),
            smallest: None,
            entries: 0,
        })
    }

    /// Bytes written or buffered so far.
    pub(crate) fn approximate_size(&self) -> u64 {
        self.offset + self.block.len() as u64
    }

    /// Adds an entry; keys must strictly increase.
    pub(crate) fn add(&mut self, key: &[u8], kind: Kind, value: &[u8]) -> Result<()> {
        debug_assert!(
            self.smallest.is_none() || key > self.last_key.as_slice(),
            "keys out of order"
        );
        if self.smallest.is_none() {
            self.smallest = Some(key.to_vec());
        }
        encode_entry(&mut self.block, key, kind, value);
        self.hashes.push(hash64(key));
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        if self.block.len() >= self.block_size {
            self.finish_block()?;
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        seal(&mut self.block);
        let handle = BlockHandle {
            offset: self.offset,
            len: self.block.len() as u32,
        };
        self.index.push(IndexEntry {
            last_key: self.last_key.clone(),
            handle,
        });
        let block = std::mem::take(&mut self.block);
        self.write(&block)?;
        self.block = block;
        self.block.clear();
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        self.offset += bytes.len() as u64;
        if self.pending.len() >= WRITE_CHUNK {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.file
                .append(&self.pending)
                .map_err(|e| Error::io("append", &self.tmp_path, e))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes the bloom filter, index and footer, makes the file durable
    /// under its final name, and returns its summary. The caller must not
    /// call `finish` on a builder with no entries.
    pub(crate) fn finish(mut self) -> Result<TableSummary> {
        let result = self.write_tail_and_install();
        if result.is_err() {
            let _ = self.fs.remove(&self.tmp_path);
        }
        result
    }

    fn write_tail_and_install(&mut self) -> Result<TableSummary> {
        debug_assert!(self.entries > 0);
        self.finish_block()?;

        let mut bloom_block = Vec::new();
        Bloom::build(&self.hashes, self.bloom_bits_per_key).encode(&mut bloom_block);
        seal(&mut bloom_block);
        let bloom_handle = BlockHandle {
            offset: self.offset,
            len: bloom_block.len() as u32,
        };
        self.write(&bloom_block)?;

        let mut index_block = Vec::new();
        encode_index(&mut index_block, &self.index);
        seal(&mut index_block);
        let index_handle = BlockHandle {
            offset: self.offset,
            len: index_block.len() as u32,
        };
        self.write(&index_block)?;

        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&index_handle.offset.to_le_bytes());
        footer.extend_from_slice(&index_handle.len.to_le_bytes());
        footer.extend_from_slice(&bloom_handle.offset.to_le_bytes());
        footer.extend_from_slice(&bloom_handle.len.to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        debug_assert_eq!(footer.len(), FOOTER_LEN);
        self.write(&footer)?;
        self.flush_pending()?;

        self.file
            .sync()
            .map_err(|e| Error::io("fsync", &self.tmp_path, e))?;
        self.fs
            .rename(&self.tmp_path, &self.final_path)
            .map_err(|e| Error::io("rename", &self.tmp_path, e))?;
        let dir = self.final_path.parent().unwrap_or(Path::new("."));
        self.fs
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync dir", dir, e))?;
        Ok(TableSummary {
            size: self.offset,
            entries: self.entries,
            smallest: self.smallest.take().unwrap_or_default(),
            largest: std::mem::take(&mut self.last_key),
        })
    }

    /// Removes the temporary file of a table that will not be finished.
    pub(crate) fn abandon(self) {
        let _ = self.fs.remove(&self.tmp_path);
    }
}
