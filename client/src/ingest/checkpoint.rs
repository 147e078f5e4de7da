//! [`Checkpoint`]: how far into each source (a file, a stream, a log
//! partition) a consumer has read and handed its events on, in a small
//! state file replaced atomically.
//!
//! A consumer moves a source's checkpoint only after the sums of the
//! events before it are in the [`Spool`](super::Spool) (or acknowledged),
//! so after a crash it resumes from `max(checkpoint, spool high water)`
//! and no event is read into two different sums.
//!
//! The file is `TCKPT01\n`, a crc32 of the body in hex and a newline,
//! then the body: JSON `{"sources": {name: offset}}`. It is written to a
//! temporary file, fsynced, renamed over the old one, and the directory
//! fsynced, so a crash leaves either the old checkpoint or the new one. A
//! file that fails its checksum or does not parse is
//! [`CheckpointError::Corrupt`], never read as offset 0.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "TCKPT01\n";

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("checkpoint file {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    sources: BTreeMap<String, u64>,
}

/// The offsets reached per source, backed by one file.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    body: Body,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; a missing file is an empty one.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |offset: usize, reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint {
                    path: path.to_path_buf(),
                    body: Body::default(),
                })
            }
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
            return Err(corrupt(0, "not a tally checkpoint (bad header)".into()));
        };
        let at = MAGIC.len();
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            return Err(corrupt(at, "no checksum line".into()));
        };
        let crc = std::str::from_utf8(&rest[..newline])
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or_else(|| corrupt(at, "the checksum line is not hex".into()))?;
        let body = &rest[newline + 1..];
        let body_at = at + newline + 1;
        if crc32fast::hash(body) != crc {
            return Err(corrupt(body_at, "checksum mismatch".into()));
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| corrupt(body_at + e.column().saturating_sub(1), e.to_string()))?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            body,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The offset reached in `source` (0 if never checkpointed).
    pub fn offset(&self, source: &str) -> u64 {
        self.body.sources.get(source).copied().unwrap_or(0)
    }

    /// Every source and its offset.
    pub fn sources(&self) -> impl Iterator<Item = (&str, u64)> {
        self.body.sources.iter().map(|(s, &o)| (s.as_str(), o))
    }

    /// Sets `source`'s offset and writes the file atomically and durably.
    pub fn save(&mut self, source: &str, offset: u64) -> Result<(), CheckpointError> {
        self.body.sources.insert(source.to_owned(), offset);
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut text = Vec::with_capacity(body.len() + 32);
        text.extend_from_slice(MAGIC.as_bytes());
        text.extend_from_slice(format!("{:08x}\n", crc32fast::hash(&body)).as_bytes());
        text.extend_from_slice(&body);
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offsets_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let mut c = Checkpoint::open(&path).unwrap();
        assert_eq!(c.offset("a"), 0);
        c.save("a", 10).unwrap();
        c.save("b", 7).unwrap();
        c.save("a", 25).unwrap();
        let c = Checkpoint::open(&path).unwrap();
        assert_eq!(c.offset("a"), 25);
        assert_eq!(c.sources().collect::<Vec<_>>(), vec![("a", 25), ("b", 7)]);
    }

    #[test]
    fn a_damaged_file_is_corrupt_never_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let mut c = Checkpoint::open(&path).unwrap();
        c.save("views.jsonl", 123_456).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, u64)> = vec![
            // A digit of the offset changed: the checksum catches it.
            (
                String::from_utf8(good.clone())
                    .unwrap()
                    .replace("123456", "123457")
                    .into_bytes(),
                17,
            ),
            // Cut short.
            (good[..good.len() - 3].to_vec(), 17),
            // Not a checkpoint at all.
            (b"{\"sources\":{}}".to_vec(), 0),
            (Vec::new(), 0),
        ];
        for (bytes, offset) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match Checkpoint::open(&path) {
                Err(CheckpointError::Corrupt {
                    path: p, offset: o, ..
                }) => {
                    assert_eq!(p, path);
                    assert_eq!(o, offset, "{}", String::from_utf8_lossy(&bytes));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
