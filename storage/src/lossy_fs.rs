//! [`LossyFs`]: the real file system, except that appended bytes stay in
//! the process's memory until `sync` writes them through.
//!
//! A test mode, for the fault-injection harness: a kill -9 of a process
//! using it loses every byte appended since the file's last `sync`, as a
//! power loss would (the page cache would have survived a plain kill). In
//! `periodic` durability that is up to one sync interval of acknowledged
//! writes on that node, which is what a node must survive without losing
//! an increment acknowledged by a quorum (and what trap (b) of DESIGN.md
//! §3, the incarnation raised after an unclean stop, is for).
//!
//! Names (create, rename, remove) go through at once; the engine makes
//! them durable with `sync_dir` anyway. Never use this for real data.

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{Fs, FsFile};
use crate::real_fs::RealFs;

/// The real file system with unsynced appends held in memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct LossyFs;

#[derive(Debug)]
struct LossyFile {
    real: Arc<dyn FsFile>,
    state: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// Bytes on disk.
    durable: u64,
    /// Bytes appended after them, not yet written.
    bytes: Vec<u8>,
}

impl LossyFile {
    fn wrap(real: Arc<dyn FsFile>) -> io::Result<Arc<dyn FsFile>> {
        let durable = real.size()?;
        Ok(Arc::new(LossyFile {
            real,
            state: Mutex::new(Pending {
                durable,
                bytes: Vec::new(),
            }),
        }))
    }
}

impl FsFile for LossyFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.state.lock().bytes.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        if !state.bytes.is_empty() {
            self.real.append(&state.bytes)?;
            state.durable += state.bytes.len() as u64;
            state.bytes.clear();
        }
        self.real.sync()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.state.lock();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
        if end > state.durable + state.bytes.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        // The part on disk, then the part still in memory.
        let on_disk = state.durable.saturating_sub(offset).min(buf.len() as u64) as usize;
        if on_disk > 0 {
            self.real.read_exact_at(&mut buf[..on_disk], offset)?;
        }
        if on_disk == buf.len() {
            return Ok(());
        }
        // The read reaches past the disk, so it starts at or after it here.
        let from = (offset + on_disk as u64 - state.durable) as usize;
        let rest = buf.len() - on_disk;
        buf[on_disk..].copy_from_slice(&state.bytes[from..from + rest]);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let state = self.state.lock();
        Ok(state.durable + state.bytes.len() as u64)
    }
}

impl Fs for LossyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        LossyFile::wrap(RealFs.create(path)?)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        LossyFile::wrap(RealFs.open(path)?)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        RealFs.exists(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        RealFs.lock(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_are_readable_but_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = LossyFs.create(&path).unwrap();
        file.append(b"durable").unwrap();
        file.sync().unwrap();
        file.append(b"+lost").unwrap();
        assert_eq!(file.size().unwrap(), 12);
        let mut buf = [0u8; 8];
        file.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"able+los", "reads see both parts");
        assert!(file.read_exact_at(&mut buf, 5).is_err(), "past the end");
        let mut head = [0u8; 3];
        file.read_exact_at(&mut head, 1).unwrap();
        assert_eq!(&head, b"ura", "a read wholly on disk");
        // What a crash leaves: only the synced part.
        assert_eq!(std::fs::read(&path).unwrap(), b"durable");
        file.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable+lost");
    }
}
