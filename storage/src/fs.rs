//! The file-system seam.
//!
//! The engine touches the disk only through [`Fs`] and [`FsFile`], so the same
//! code runs on real files ([`crate::RealFs`]) and on a simulated disk that
//! loses unsynced writes at a crash ([`crate::SimFs`]). The surface is what an
//! append-only LSM needs and no more: create-and-append, positional reads,
//! fdatasync, rename, remove, list, directory fsync and a lock file.
//!
//! Semantics the engine relies on (and `SimFs` models): appended bytes are
//! durable only after `sync`; a created, renamed or removed name is durable
//! only after `sync_dir` on its directory.

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// An open file. Writers only append; readers use positional reads, so one
/// handle can be shared between threads.
pub trait FsFile: Send + Sync + Debug {
    /// Appends `buf` at the end of the file.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The current length in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// A file system rooted wherever the paths point.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for appending and reading.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reading (and appending).
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on `path` (created if missing), held until the
    /// returned guard is dropped. `WouldBlock` when someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}
