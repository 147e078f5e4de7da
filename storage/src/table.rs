//! [`Table`]: an open, immutable SSTable.
//!
//! Opening reads and verifies the footer, the bloom filter and the index and
//! keeps them in memory; data blocks are read on demand with positional
//! reads, verified against their crc, and kept in the engine's
//! [`BlockCache`] for the next read. Every length and offset
//! read from the file is bounds-checked: damaged bytes give `Corruption`,
//! never a panic and never a wrong value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{decode_index, unseal, BlockEntries, BlockHandle, IndexEntry};
use crate::block_cache::{BlockCache, Fill};
use crate::bloom::Bloom;
use crate::decoder::Decoder;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::fs::FsFile;
use crate::key_prefix::prefix_of;
use crate::table_builder::{FOOTER_LEN, TABLE_FORMAT_VERSION, TABLE_MAGIC};

/// An open SSTable.
#[derive(Debug)]
pub(crate) struct Table {
    path: PathBuf,
    /// The file number: the block cache's name for this table.
    number: u64,
    file: Arc<dyn FsFile>,
    cache: Arc<BlockCache>,
    index: Vec<IndexEntry>,
    /// Each index entry's last key's [`prefix_of`], packed: the index
    /// search compares these first.
    index_prefixes: Vec<u64>,
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
    pub(crate) fn open(
        path: PathBuf,
        number: u64,
        file: Arc<dyn FsFile>,
        cache: Arc<BlockCache>,
    ) -> Result<Table> {
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
            number,
            file,
            cache,
            index_prefixes: index.iter().map(|e| prefix_of(&e.last_key)).collect(),
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
        let block_idx = self.first_block_at_or_after(key);
        if block_idx >= self.block_count() {
            return Ok(None);
        }
        let (offset, body) = self.block(block_idx, Fill::Yes)?;
        for item in BlockEntries::new(&self.path, offset, &body) {
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

    /// Number of data blocks.
    pub(crate) fn block_count(&self) -> usize {
        self.index.len()
    }

    /// The first data block whose last key is `>= key`.
    pub(crate) fn first_block_at_or_after(&self, key: &[u8]) -> usize {
        // Blocks ending in a smaller prefix end below `key`, a larger one
        // above it; only those ending in `key`'s own prefix need bytes.
        let prefix = prefix_of(key);
        let lo = self.index_prefixes.partition_point(|&p| p < prefix);
        let ties = self.index_prefixes[lo..].partition_point(|&p| p == prefix);
        lo + self.index[lo..lo + ties].partition_point(|e| e.last_key.as_slice() < key)
    }

    /// Whether every key of block `i` is below `key`.
    pub(crate) fn block_ends_before(&self, i: usize, key: &[u8]) -> bool {
        self.index
            .get(i)
            .is_some_and(|e| e.last_key.as_slice() < key)
    }

    /// Whether `key` is what the index says block `i` ends with.
    pub(crate) fn is_last_key_of_block(&self, i: usize, key: &[u8]) -> bool {
        self.index.get(i).is_some_and(|e| e.last_key == key)
    }

    /// Data block `i`'s offset and body: from the cache, or read, checked
    /// against its crc and (with `Fill::Yes`) cached.
    pub(crate) fn block(&self, i: usize, fill: Fill) -> Result<(u64, Arc<[u8]>)> {
        let handle = self.index[i].handle;
        if let Some(body) = self.cache.get(self.number, handle.offset) {
            return Ok((handle.offset, body));
        }
        let raw = read_block(&*self.file, &self.path, handle)?;
        let body: Arc<[u8]> = unseal(&self.path, handle.offset, &raw)?.into();
        if fill == Fill::Yes {
            self.cache.insert(self.number, handle.offset, body.clone());
        }
        Ok((handle.offset, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Fs;
    use crate::sim_fs::SimFs;
    use proptest::prelude::*;

    proptest! {
        /// The index search by packed prefixes finds the block the plain
        /// search of whole keys finds, with keys that tie on their first
        /// eight bytes, are shorter than eight, or are prefixes of others.
        #[test]
        fn the_prefix_search_agrees_with_the_key_search(
            keys in proptest::collection::btree_set(proptest::collection::vec(0u8..3, 0..12), 1..200),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 1..50),
        ) {
            let fs: Arc<dyn Fs> = Arc::new(SimFs::new());
            fs.create_dir_all(Path::new("/t")).unwrap();
            let path = PathBuf::from("/t/000001.sst");
            let mut builder = crate::table_builder::TableBuilder::create(fs.clone(), path.clone(), 64, 10).unwrap();
            for key in &keys {
                builder.add(key, crate::entry::Kind::Put, b"v").unwrap();
            }
            builder.finish().unwrap();
            let cache = Arc::new(BlockCache::new(0, Default::default()));
            let table = Table::open(path.clone(), 1, fs.open(&path).unwrap(), cache).unwrap();
            prop_assert!(table.block_count() > 1 || keys.len() < 40, "several blocks");
            for probe in probes.iter().chain(&keys) {
                let want = table.index.partition_point(|e| e.last_key.as_slice() < probe.as_slice());
                prop_assert_eq!(table.first_block_at_or_after(probe), want);
            }
        }

        /// Whatever bytes a file holds, opening it as a table and reading
        /// every block never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), tail in any::<bool>()) {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/t")).unwrap();
            let path = Path::new("/t/000001.sst");
            let file = fs.create(path).unwrap();
            file.append(&bytes).unwrap();
            if tail {
                // A plausible footer, so the checks behind it run too.
                let mut footer = vec![0u8; 36];
                footer[4] = 16;
                let crc = crc32fast::hash(&footer);
                file.append(&footer).unwrap();
                file.append(&crc.to_le_bytes()).unwrap();
                file.append(&TABLE_MAGIC.to_le_bytes()).unwrap();
            }
            let cache = Arc::new(BlockCache::new(1 << 20, Default::default()));
            if let Ok(table) = Table::open(path.to_path_buf(), 1, fs.open(path).unwrap(), cache) {
                for i in 0..table.block_count() {
                    let _ = table.block(i, Fill::Yes);
                }
                let _ = table.get(b"key");
            }
        }
    }
}
