//! [`SimFs`]: an in-memory file system that models what a power loss keeps.
//!
//! Each file remembers how many of its bytes were synced; each directory
//! remembers which names existed at its last `sync_dir`. [`SimFs::crash`]
//! rolls the disk back to exactly that durable state (keeping a random part
//! of each unsynced tail, as a torn write would) and cuts off every handle
//! opened before it, so the crashed engine can write nothing more. Tests then
//! reopen the engine on the same `SimFs` and check what survived.
//!
//! It also injects the faults a real disk produces rarely: a full disk
//! (`set_capacity`), a failing fsync (`fail_syncs`) and a process out of
//! file descriptors (`fail_creates`).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::fs::{Fs, FsFile};

/// A simulated disk; clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    names: Mutex<Names>,
    /// Bytes held by live files; appends beyond `capacity` fail with ENOSPC.
    used_bytes: AtomicU64,
    capacity_bytes: AtomicU64,
    fail_syncs: AtomicBool,
    fail_creates: AtomicBool,
    /// Extra latency of every `sync`, in microseconds (a slow disk).
    sync_delay_micros: AtomicU64,
    /// Bumped by every crash; handles from an older epoch fail with EIO.
    epoch: AtomicU64,
}

#[derive(Debug, Default)]
struct Names {
    dirs: BTreeSet<PathBuf>,
    live: BTreeMap<PathBuf, Arc<SimFileData>>,
    durable: BTreeMap<PathBuf, Arc<SimFileData>>,
    locks: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct SimFileData {
    bytes: Mutex<FileBytes>,
}

#[derive(Debug, Default)]
struct FileBytes {
    data: Vec<u8>,
    synced_len: usize,
}

#[derive(Debug)]
struct SimFile {
    data: Arc<SimFileData>,
    shared: Arc<Shared>,
    epoch: u64,
}

impl SimFile {
    fn check_epoch(&self) -> io::Result<()> {
        if self.shared.epoch.load(Ordering::SeqCst) != self.epoch {
            return Err(io::Error::other(
                "simulated crash: handle is from before the crash",
            ));
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.check_epoch()?;
        let capacity = self.shared.capacity_bytes.load(Ordering::SeqCst);
        let used = self
            .shared
            .used_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        if capacity != 0 && used + buf.len() as u64 > capacity {
            self.shared
                .used_bytes
                .fetch_sub(buf.len() as u64, Ordering::SeqCst);
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        // The epoch is checked again under the file's lock, which a crash
        // takes after bumping it: an append either lands before the crash
        // (and may be torn by it) or fails, never lands after it.
        let mut bytes = self.data.bytes.lock();
        if let Err(e) = self.check_epoch() {
            drop(bytes);
            self.shared
                .used_bytes
                .fetch_sub(buf.len() as u64, Ordering::SeqCst);
            return Err(e);
        }
        bytes.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.check_epoch()?;
        if self.shared.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated fsync failure"));
        }
        let delay = self.shared.sync_delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        // As in `append`: a sync that returns Ok completed before any crash
        // truncated this file. Checking the epoch only on entry let a sync
        // racing a crash mark the truncated length synced and report
        // success for bytes the crash had dropped (seen once in CI as an
        // acknowledged batch missing after a simulated power loss).
        let mut bytes = self.data.bytes.lock();
        self.check_epoch()?;
        bytes.synced_len = bytes.data.len();
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_epoch()?;
        let bytes = self.data.bytes.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = bytes
            .data
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.check_epoch()?;
        Ok(self.data.bytes.lock().data.len() as u64)
    }
}

#[derive(Debug)]
struct SimLock {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.shared.names.lock().locks.remove(&self.path);
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimFs {
    /// An empty simulated disk.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Simulates a power loss: every unsynced byte past a random torn prefix
    /// is lost, every name not made durable by `sync_dir` is rolled back, and
    /// handles opened before the crash fail from now on.
    pub fn crash(&self, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut names = self.shared.names.lock();
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        names.live = names.durable.clone();
        names.locks.clear();
        let mut used = 0;
        for file in names.live.values() {
            let mut bytes = file.bytes.lock();
            let unsynced = bytes.data.len() - bytes.synced_len;
            let kept = if unsynced == 0 {
                0
            } else {
                rng.random_range(0..=unsynced)
            };
            let new_len = bytes.synced_len + kept;
            bytes.data.truncate(new_len);
            bytes.synced_len = new_len;
            used += new_len as u64;
        }
        self.shared.used_bytes.store(used, Ordering::SeqCst);
    }

    /// Makes appends fail with ENOSPC once live files hold `bytes` in all
    /// (0 = unlimited).
    pub fn set_capacity(&self, bytes: u64) {
        self.shared.capacity_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Makes every `sync` fail (or succeed again).
    pub fn fail_syncs(&self, fail: bool) {
        self.shared.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Makes every file creation fail with EMFILE, as in a process out of
    /// file descriptors (or succeed again).
    pub fn fail_creates(&self, fail: bool) {
        self.shared.fail_creates.store(fail, Ordering::SeqCst);
    }

    /// Makes every file `sync` take `delay` longer (a slow disk).
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.shared
            .sync_delay_micros
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// An independent copy of the disk as it is now (live names and bytes;
    /// everything in the copy counts as durable).
    pub fn deep_copy(&self) -> SimFs {
        let names = self.shared.names.lock();
        let copy = SimFs::new();
        let mut copied = copy.shared.names.lock();
        copied.dirs = names.dirs.clone();
        let mut used = 0;
        for (path, data) in &names.live {
            let bytes = data.bytes.lock().data.clone();
            used += bytes.len() as u64;
            let len = bytes.len();
            let file = Arc::new(SimFileData {
                bytes: Mutex::new(FileBytes {
                    data: bytes,
                    synced_len: len,
                }),
            });
            copied.live.insert(path.clone(), file.clone());
            copied.durable.insert(path.clone(), file);
        }
        drop(copied);
        copy.shared.used_bytes.store(used, Ordering::SeqCst);
        copy
    }

    /// Names of the files in `dir` (for tests that pick a file to damage).
    pub fn files(&self, dir: &Path) -> Vec<PathBuf> {
        let names = self.shared.names.lock();
        names
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect()
    }

    /// Removes a file (for missing-file tests).
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.remove(path)
    }

    /// Whether a file exists (a convenience over [`Fs::exists`]).
    pub fn exists_file(&self, path: &Path) -> bool {
        self.shared.names.lock().live.contains_key(path)
    }

    /// Bytes held by live files.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used_bytes.load(Ordering::SeqCst)
    }

    /// Overwrites one byte of a file in place (for corruption tests).
    pub fn corrupt_byte(&self, path: &Path, offset: usize, xor: u8) -> io::Result<()> {
        let names = self.shared.names.lock();
        let file = names.live.get(path).ok_or_else(|| not_found(path))?;
        let mut bytes = file.bytes.lock();
        let byte = bytes
            .data
            .get_mut(offset)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        *byte ^= xor;
        Ok(())
    }

    /// Cuts a file to `len` bytes (for truncation tests).
    pub fn truncate(&self, path: &Path, len: usize) -> io::Result<()> {
        let names = self.shared.names.lock();
        let file = names.live.get(path).ok_or_else(|| not_found(path))?;
        let mut bytes = file.bytes.lock();
        let old = bytes.data.len();
        bytes.data.truncate(len);
        bytes.synced_len = bytes.synced_len.min(len);
        self.shared
            .used_bytes
            .fetch_sub((old - bytes.data.len()) as u64, Ordering::SeqCst);
        Ok(())
    }

    /// A copy of a file's current bytes.
    pub fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let names = self.shared.names.lock();
        let file = names.live.get(path).ok_or_else(|| not_found(path))?;
        let data = file.bytes.lock().data.clone();
        Ok(data)
    }

    fn handle(&self, data: Arc<SimFileData>) -> Arc<dyn FsFile> {
        Arc::new(SimFile {
            data,
            shared: self.shared.clone(),
            epoch: self.shared.epoch.load(Ordering::SeqCst),
        })
    }

    fn release(&self, data: &SimFileData) {
        let len = data.bytes.lock().data.len() as u64;
        self.shared.used_bytes.fetch_sub(len, Ordering::SeqCst);
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut names = self.shared.names.lock();
        for ancestor in dir.ancestors() {
            names.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        if self.shared.fail_creates.load(Ordering::SeqCst) {
            // EMFILE: the process has no file descriptor left.
            return Err(io::Error::from_raw_os_error(24));
        }
        let mut names = self.shared.names.lock();
        if !names.dirs.contains(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let data = Arc::new(SimFileData::default());
        if let Some(old) = names.live.insert(path.to_path_buf(), data.clone()) {
            self.release(&old);
        }
        Ok(self.handle(data))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let names = self.shared.names.lock();
        let data = names
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        Ok(self.handle(data))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut names = self.shared.names.lock();
        let data = names.live.remove(from).ok_or_else(|| not_found(from))?;
        if let Some(old) = names.live.insert(to.to_path_buf(), data) {
            self.release(&old);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut names = self.shared.names.lock();
        let data = names.live.remove(path).ok_or_else(|| not_found(path))?;
        self.release(&data);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let names = self.shared.names.lock();
        if !names.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(names
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.shared.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated fsync failure"));
        }
        let mut names = self.shared.names.lock();
        let Names { live, durable, .. } = &mut *names;
        durable.retain(|p, _| p.parent() != Some(dir));
        for (path, data) in live.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable.insert(path.clone(), data.clone());
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let names = self.shared.names.lock();
        names.live.contains_key(path) || names.dirs.contains(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut names = self.shared.names.lock();
        if !names.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held"));
        }
        Ok(Box::new(SimLock {
            shared: self.shared.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_durable_names() {
        let fs = SimFs::new();
        let dir = Path::new("/db");
        fs.create_dir_all(dir).unwrap();
        let a = fs.create(&dir.join("a")).unwrap();
        a.append(b"hello").unwrap();
        a.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        a.append(b" world").unwrap();
        let b = fs.create(&dir.join("b")).unwrap();
        b.append(b"lost").unwrap();
        b.sync().unwrap();
        fs.crash(7);
        let after = fs.read_all(&dir.join("a")).unwrap();
        assert!(after.starts_with(b"hello") && b"hello world".starts_with(&after[..]));
        assert!(
            !fs.exists(&dir.join("b")),
            "a name never made durable must vanish"
        );
        assert!(a.append(b"x").is_err(), "pre-crash handles must be dead");
    }

    #[test]
    fn full_disk_returns_storage_full() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.set_capacity(4);
        let f = fs.create(Path::new("/d/f")).unwrap();
        f.append(b"1234").unwrap();
        let err = f.append(b"5").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
