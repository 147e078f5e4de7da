//! [`Manifest`]: the durable log of changes to the set of live files.
//!
//! Each record (framed and checksummed like the WAL, see `record_log`) is a
//! [`VersionEdit`]: tables added and removed, the oldest WAL still needed,
//! the next file number. Replaying the edits rebuilds the live set. A flush
//! or compaction is installed by appending one edit and fsyncing it; only
//! then are obsolete files deleted, so a crash at any point leaves either
//! the old set or the new one, never a mix.
//!
//! The file `CURRENT` names the active manifest. Every open writes a fresh
//! manifest holding one snapshot edit and switches `CURRENT` atomically
//! (temporary file, fsync, rename, directory fsync), which also keeps the
//! log short.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decoder::{put_bytes, put_varint, Decoder};
use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile};
use crate::record_log::{encode_record, read_log};
use crate::version::{FileMeta, NUM_LEVELS};

const TAG_MERGE_OPERATOR: u8 = 1;
const TAG_LOG_NUMBER: u8 = 2;
const TAG_NEXT_FILE_NUMBER: u8 = 3;
const TAG_ADD_FILE: u8 = 4;
const TAG_DELETE_FILE: u8 = 5;

/// One atomic change to the live file set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    pub(crate) merge_operator: Option<String>,
    /// WAL files numbered below this are no longer needed.
    pub(crate) log_number: Option<u64>,
    pub(crate) next_file_number: Option<u64>,
    pub(crate) added: Vec<(usize, FileMeta)>,
    pub(crate) deleted: Vec<(usize, u64)>,
}

impl VersionEdit {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Some(name) = &self.merge_operator {
            buf.push(TAG_MERGE_OPERATOR);
            put_bytes(&mut buf, name.as_bytes());
        }
        if let Some(n) = self.log_number {
            buf.push(TAG_LOG_NUMBER);
            put_varint(&mut buf, n);
        }
        if let Some(n) = self.next_file_number {
            buf.push(TAG_NEXT_FILE_NUMBER);
            put_varint(&mut buf, n);
        }
        for (level, meta) in &self.added {
            buf.push(TAG_ADD_FILE);
            put_varint(&mut buf, *level as u64);
            meta.encode(&mut buf);
        }
        for (level, number) in &self.deleted {
            buf.push(TAG_DELETE_FILE);
            put_varint(&mut buf, *level as u64);
            put_varint(&mut buf, *number);
        }
        buf
    }

    pub(crate) fn decode(payload: &[u8]) -> Option<VersionEdit> {
        let mut d = Decoder::new(payload);
        let mut edit = VersionEdit::default();
        let level = |d: &mut Decoder<'_>| {
            usize::try_from(d.varint()?)
                .ok()
                .filter(|&l| l < NUM_LEVELS)
        };
        while !d.is_empty() {
            match d.u8()? {
                TAG_MERGE_OPERATOR => {
                    edit.merge_operator =
                        Some(String::from_utf8(d.length_prefixed()?.to_vec()).ok()?)
                }
                TAG_LOG_NUMBER => edit.log_number = Some(d.varint()?),
                TAG_NEXT_FILE_NUMBER => edit.next_file_number = Some(d.varint()?),
                TAG_ADD_FILE => {
                    let l = level(&mut d)?;
                    edit.added.push((l, FileMeta::decode(&mut d)?));
                }
                TAG_DELETE_FILE => {
                    let l = level(&mut d)?;
                    edit.deleted.push((l, d.varint()?));
                }
                _ => return None,
            }
        }
        Some(edit)
    }
}

/// The live file set as the manifest describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ManifestState {
    pub(crate) merge_operator: String,
    pub(crate) log_number: u64,
    pub(crate) next_file_number: u64,
    pub(crate) files: BTreeMap<u64, (usize, FileMeta)>,
}

impl ManifestState {
    /// Applies an edit; `Err` names what is inconsistent.
    pub(crate) fn apply(&mut self, edit: VersionEdit) -> std::result::Result<(), String> {
        if let Some(name) = edit.merge_operator {
            self.merge_operator = name;
        }
        if let Some(n) = edit.log_number {
            self.log_number = n;
        }
        if let Some(n) = edit.next_file_number {
            self.next_file_number = n;
        }
        for (level, number) in edit.deleted {
            match self.files.remove(&number) {
                Some((l, _)) if l == level => {}
                _ => {
                    return Err(format!(
                        "edit deletes table {number} at level {level}, which is not live"
                    ))
                }
            }
        }
        for (level, meta) in edit.added {
            if self.files.insert(meta.number, (level, meta)).is_some() {
                return Err("edit adds a table that is already live".to_owned());
            }
        }
        Ok(())
    }

    /// One edit that recreates this whole state.
    pub(crate) fn snapshot(&self) -> VersionEdit {
        VersionEdit {
            merge_operator: Some(self.merge_operator.clone()),
            log_number: Some(self.log_number),
            next_file_number: Some(self.next_file_number),
            added: self.files.values().cloned().collect(),
            deleted: Vec::new(),
        }
    }
}

pub(crate) fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// The manifest being appended to.
#[derive(Debug)]
pub(crate) struct Manifest {
    path: PathBuf,
    file: Arc<dyn FsFile>,
    number: u64,
}

impl Manifest {
    /// Reads `CURRENT` and replays the manifest it names. `None` for a new
    /// directory.
    pub(crate) fn recover(fs: &dyn Fs, dir: &Path) -> Result<Option<ManifestState>> {
        let current = dir.join("CURRENT");
        if !fs.exists(&current) {
            return Ok(None);
        }
        let raw = read_whole(fs, &current)?;
        let name = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.strip_suffix('\n'))
            .filter(|s| s.starts_with("MANIFEST-") && !s.contains('/'))
            .ok_or_else(|| Error::corruption(&current, 0, "CURRENT does not name a manifest"))?;
        let path = dir.join(name);
        if !fs.exists(&path) {
            return Err(Error::MissingFile { file: path });
        }
        let data = read_whole(fs, &path)?;
        let contents = read_log(&path, &data)?;
        let mut state = ManifestState::default();
        if contents.records.is_empty() {
            return Err(Error::corruption(&path, 0, "manifest holds no snapshot"));
        }
        for (offset, payload) in contents.records {
            let edit = VersionEdit::decode(payload)
                .ok_or_else(|| Error::corruption(&path, offset, "malformed version edit"))?;
            state
                .apply(edit)
                .map_err(|reason| Error::corruption(&path, offset, reason))?;
        }
        Ok(Some(state))
    }

    /// Writes a new manifest holding `state` and points `CURRENT` at it.
    pub(crate) fn create(
        fs: &dyn Fs,
        dir: &Path,
        number: u64,
        state: &ManifestState,
    ) -> Result<Manifest> {
        let path = dir.join(manifest_name(number));
        let file = fs
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let manifest = Manifest { path, file, number };
        manifest.append(&state.snapshot())?;

        let tmp = dir.join("CURRENT.tmp");
        let current = fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        current
            .append(format!("{}\n", manifest_name(number)).as_bytes())
            .map_err(|e| Error::io("append", &tmp, e))?;
        current.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs.rename(&tmp, &dir.join("CURRENT"))
            .map_err(|e| Error::io("rename", &tmp, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("fsync dir", dir, e))?;
        Ok(manifest)
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Appends an edit and fsyncs it. On error the engine must stop
    /// installing versions (the caller poisons it).
    pub(crate) fn append(&self, edit: &VersionEdit) -> Result<()> {
        let mut buf = Vec::new();
        encode_record(&mut buf, &edit.encode());
        self.file
            .append(&buf)
            .map_err(|e| Error::io("append", &self.path, e))?;
        self.file
            .sync()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }
}

/// Reads a whole file.
pub(crate) fn read_whole(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>> {
    let file = fs.open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.size().map_err(|e| Error::io("stat", path, e))?;
    let mut data = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut data, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn edits_round_trip(
            log in proptest::option::of(any::<u64>()),
            next in proptest::option::of(any::<u64>()),
            added in proptest::collection::vec((0usize..NUM_LEVELS, any::<u64>(), any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
            deleted in proptest::collection::vec((0usize..NUM_LEVELS, any::<u64>()), 0..4),
        ) {
            let edit = VersionEdit {
                merge_operator: Some("op".into()),
                log_number: log,
                next_file_number: next,
                added: added.into_iter().map(|(l, n, s, k)| (l, FileMeta {
                    number: n, size: s, entries: 1, smallest: k.clone(), largest: k,
                })).collect(),
                deleted,
            };
            prop_assert_eq!(VersionEdit::decode(&edit.encode()), Some(edit));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = VersionEdit::decode(&bytes);
        }
    }
}
