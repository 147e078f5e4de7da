//! [`Wal`]: the write-ahead log of one memtable.
//!
//! Each commit group appends its batches as records (see `record_log`) in
//! one write(2); in `sync` mode the group then shares one fdatasync. A WAL
//! file is retired once its memtable is in an SSTable named by the manifest.
//! On rotation the old file is fsynced before the new one is used, so only
//! the newest WAL can have a torn tail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile};
use crate::manifest::read_whole;
use crate::record_log::read_log_as;
use crate::write_batch::WriteBatch;

pub(crate) fn wal_name(number: u64) -> String {
    format!("{number:06}.log")
}

/// An open WAL file being appended to.
#[derive(Debug)]
pub(crate) struct Wal {
    number: u64,
    path: PathBuf,
    file: Arc<dyn FsFile>,
    written: AtomicU64,
    synced: AtomicU64,
}

impl Wal {
    /// Creates a new, empty WAL and makes its name durable.
    pub(crate) fn create(fs: &dyn Fs, dir: &Path, number: u64) -> Result<Wal> {
        let path = dir.join(wal_name(number));
        let file = fs
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("fsync dir", dir, e))?;
        Ok(Wal {
            number,
            path,
            file,
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        })
    }

    /// Appends framed records in one write.
    pub(crate) fn append(&self, records: &[u8]) -> Result<()> {
        self.file
            .append(records)
            .map_err(|e| Error::io("append", &self.path, e))?;
        self.written
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Bytes appended so far.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// The file number.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Bytes known to be on disk.
    pub(crate) fn bytes_synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// Fsyncs everything appended so far; returns false if nothing was new.
    pub(crate) fn sync(&self) -> Result<bool> {
        let written = self.written.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= written {
            return Ok(false);
        }
        self.file
            .sync()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        self.synced.fetch_max(written, Ordering::SeqCst);
        Ok(true)
    }
}

/// Appends the record a clean close ends the WAL with: an empty batch.
/// After it, damage to any earlier record has a valid record after it, so
/// recovery calls it corruption instead of taking it for a torn write.
pub(crate) fn close_record() -> Vec<u8> {
    let mut record = Vec::new();
    WriteBatch::new().encode_record(&mut record);
    record
}

/// Reads back the batches of a WAL file in order, handing each to `apply`.
/// A torn tail is accepted only when `is_last` (older WALs were fsynced
/// whole before the next one started), and logged with its file and
/// offset; a bad record with a valid one after it is corruption (a clean
/// close leaves one, [`close_record`]) unless `salvage` drops it and all
/// after it. Every record is checked before any is applied, so a damaged
/// WAL applies nothing.
pub(crate) fn replay(
    fs: &dyn Fs,
    path: &Path,
    is_last: bool,
    salvage: bool,
    mut apply: impl FnMut(WriteBatch) -> Result<()>,
) -> Result<()> {
    let data = read_whole(fs, path)?;
    let contents = read_log_as(path, &data, salvage && is_last)?;
    match (contents.torn_tail_at, is_last) {
        (Some(offset), false) => {
            return Err(Error::corruption(
                path,
                offset,
                "damaged record in a WAL that is not the newest",
            ))
        }
        (Some(offset), true) => tracing::warn!(
            file = %path.display(),
            offset,
            bytes_dropped = data.len() as u64 - offset,
            "the newest WAL ends in a damaged record: dropped as a write torn by a crash"
        ),
        (None, _) => {}
    }
    for (offset, payload) in contents.records {
        let batch = WriteBatch::decode(payload)
            .ok_or_else(|| Error::corruption(path, offset, "malformed write batch"))?;
        apply(batch)?;
    }
    Ok(())
}
