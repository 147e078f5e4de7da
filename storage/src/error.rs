//! The engine's one error type.
//!
//! Every variant says what happened and what the caller can do about it. The
//! split that matters most: `Corruption` (the bytes on disk are not what the
//! engine wrote; never retried, never papered over) is distinct from `Io`
//! (the operating system refused an operation).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. For a write or fsync of the WAL this also
    /// poisons the engine (see [`Error::Poisoned`]). State: the operation
    /// did not happen, or (for the WAL) its durability is unknown.
    #[error("I/O error during {op} on {}: {source}", file.display())]
    Io {
        /// What the engine was doing (`"append"`, `"fsync"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory involved.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The disk is full (ENOSPC). Writes that reported this were not
    /// acknowledged; free space and reopen the engine.
    #[error("no space left on device while writing {}", file.display())]
    NoSpace {
        /// The file being written.
        file: PathBuf,
    },

    /// Bytes on disk fail a checksum, a magic number, a bound or a decoder.
    /// The engine refuses to open (or the read fails) rather than return a
    /// wrong value. An operator must restore the file or the node.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record, block or footer.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// The manifest names a file that does not exist. The engine refuses to
    /// open: serving without it would return wrong (too small) values.
    #[error("file named by the manifest is missing: {}", file.display())]
    MissingFile {
        /// The missing file.
        file: PathBuf,
    },

    /// An earlier WAL write or fsync failed, so the durability of everything
    /// after it is unknown. Every later write fails with this error; reads
    /// still work. Reopen the engine (recovery trusts only what is on disk).
    /// A failed fsync is never retried: the kernel may have dropped the dirty
    /// pages, so a second fsync could "succeed" without the data.
    #[error("engine poisoned by an earlier failure: {reason}")]
    Poisoned {
        /// The failure that poisoned the engine.
        reason: String,
    },

    /// A write waited for a flush or compaction to make room for longer than
    /// [`crate::Options::write_stall_timeout`]. Nothing was written; retry
    /// later (this is back-pressure, not a failure of the data).
    #[error("write stalled for {waited:?} waiting for flush/compaction")]
    WriteStall {
        /// How long the write waited.
        waited: Duration,
    },

    /// The request itself is invalid (key or value too large, empty key).
    /// Nothing was written; fix the request.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The data directory was created with a different merge operator, whose
    /// operands this one may misread. Open it with the right operator.
    #[error("merge operator mismatch: directory uses {on_disk:?}, opened with {given:?}")]
    MergeOperatorMismatch {
        /// The name recorded in the manifest.
        on_disk: String,
        /// The name of the operator passed to `open`.
        given: String,
    },

    /// Another process (or another `Db` in this process) holds the
    /// directory's lock. Stop it first.
    #[error("data directory {} is locked by another process", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
}

impl Error {
    /// Whether the failed call certainly wrote nothing: back-pressure, a
    /// poisoned or invalid request, or a file that could not be created
    /// (out of file descriptors), all refused before any byte of the
    /// caller's write reached a file.
    pub fn nothing_written(&self) -> bool {
        match self {
            Error::WriteStall { .. } | Error::Poisoned { .. } | Error::InvalidArgument(_) => true,
            Error::Io { op, .. } => *op == "create",
            _ => false,
        }
    }

    /// Wraps an `io::Error`, turning ENOSPC into [`Error::NoSpace`].
    pub(crate) fn io(op: &'static str, file: impl Into<PathBuf>, source: io::Error) -> Error {
        let file = file.into();
        if source.kind() == io::ErrorKind::StorageFull {
            Error::NoSpace { file }
        } else {
            Error::Io { op, file, source }
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy of this error for every writer of a commit group (io::Error is
    /// not `Clone`, so the copy keeps its kind and message).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { op, file, source } => Error::Io {
                op,
                file: file.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::NoSpace { file } => Error::NoSpace { file: file.clone() },
            Error::Corruption {
                file,
                offset,
                reason,
            } => Error::Corruption {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::MissingFile { file } => Error::MissingFile { file: file.clone() },
            Error::Poisoned { reason } => Error::Poisoned {
                reason: reason.clone(),
            },
            Error::WriteStall { waited } => Error::WriteStall { waited: *waited },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::MergeOperatorMismatch { on_disk, given } => Error::MergeOperatorMismatch {
                on_disk: on_disk.clone(),
                given: given.clone(),
            },
            Error::Locked { dir } => Error::Locked { dir: dir.clone() },
        }
    }
}
