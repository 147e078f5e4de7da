//! [`Db`]: the engine. Opening and recovery, the group-commit write path,
//! reads, and the background flush, compaction and WAL-sync threads.
//!
//! # Write path
//! Writers queue their batches. The first writer to find no leader becomes
//! the leader: it takes every queued batch (up to `MAX_GROUP_BYTES`), makes
//! room (rotating the memtable, stalling if flushes are behind), appends all
//! of them to the WAL in one write(2), fsyncs once in `sync` mode, applies
//! them to the memtable in order, then wakes the others with the group's
//! result. Only the leader touches the WAL and the active memtable, so they
//! need no other lock. A WAL write or fsync error poisons the engine.
//! `write_unsynced` skips the fsync and returns a `SyncPoint`;
//! `wait_durable` fsyncs through it later (unless an fsync already did),
//! so a caller can overlap its next write with the fsync of the last.
//!
//! # Read path
//! A read takes the active memtable, the frozen ones and the current
//! version under a short lock, then reads without locks: memtables newest
//! first, L0 tables newest first, then one table per deeper level, stopping
//! at the first complete entry and merging the operands above it.
//!
//! # Files in the directory
//! `CURRENT`, `MANIFEST-NNNNNN`, `NNNNNN.log` (WAL), `NNNNNN.sst`, `LOCK`.
//! All numbers come from one counter recorded in the manifest.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::block_cache::{BlockCache, Fill};
use crate::bloom::hash64;
use crate::compaction::{self, OutputSink, Plan};
use crate::cursor::{Cursor, LevelCursor, TableCursor, VecCursor};
use crate::entry::{resolve_newest_first, Entry, Kind};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::manifest::{Manifest, ManifestState, VersionEdit};
use crate::memtable::Memtable;
use crate::merge::MergeOperator;
use crate::merger::Merger;
use crate::metrics::{add, Metrics, MetricsSnapshot};
use crate::options::{Durability, Options};
use crate::real_fs::RealFs;
use crate::record_log::MAX_PAYLOAD_LEN;
use crate::table::Table;
use crate::table_builder::{TableBuilder, TableSummary};
use crate::version::{FileMeta, LiveTable, Version, NUM_LEVELS};
use crate::wal::{self, Wal};
use crate::write_batch::{Op, WriteBatch};

/// A commit group stops growing at this many bytes.
const MAX_GROUP_BYTES: usize = 4 << 20;
/// Whether an engine takes writes ([`Db::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It does.
    Ok,
    /// A write or fsync failed (see [`Error::Poisoned`]): reads work,
    /// writes fail until the engine is reopened.
    Poisoned {
        /// The failure, with its file.
        reason: String,
    },
    /// Poisoned by a full disk: free space (about [`Db::wal_bytes`] more
    /// than the data needs) and reopen.
    DiskFull {
        /// The failure, with its file.
        reason: String,
    },
}

/// Wait before retrying a background job that failed without poisoning.
const BACKGROUND_RETRY: Duration = Duration::from_secs(1);

/// An open storage engine. Cheap to share: wrap it in an `Arc`; every
/// method takes `&self` and is safe to call from many threads.
#[derive(Debug)]
pub struct Db {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

struct Inner {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    opts: Options,
    op: Arc<dyn MergeOperator>,
    state: Mutex<State>,
    /// Signals state changes: a flush or compaction finished, work arrived,
    /// shutdown, poisoning.
    state_changed: Condvar,
    queue: Mutex<WriteQueue>,
    queue_changed: Condvar,
    /// Held while a memtable is flushed: one flush at a time.
    flushing: Mutex<()>,
    /// Serializes version installs (flush and compaction).
    manifest: Mutex<Manifest>,
    /// Held while a compaction runs; holds each level's round-robin pointer.
    compaction: Mutex<Vec<Vec<u8>>>,
    next_file_number: AtomicU64,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    /// The first failure that poisoned the engine was a full disk.
    poisoned_by_full_disk: AtomicBool,
    shutdown: AtomicBool,
    metrics: Arc<Metrics>,
    /// Data blocks recently read by users, shared by every table.
    block_cache: Arc<BlockCache>,
    /// Keys replayed from the WAL at open, until taken.
    recovered_keys: Mutex<Vec<Vec<u8>>>,
    _lock: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.dir)
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

struct State {
    active: Arc<Memtable>,
    wal: Arc<Wal>,
    /// Frozen memtables waiting for flush, oldest first.
    immutables: Vec<Arc<Memtable>>,
    version: Arc<Version>,
}

/// Where a write's WAL record ends: the write is durable once the WAL
/// numbered `wal` is synced through `end` (see [`Db::write_unsynced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SyncPoint {
    wal: u64,
    end: u64,
}

#[derive(Default)]
struct WriteQueue {
    /// Ticket, batch, and whether its writer waits for the fsync.
    pending: Vec<(u64, WriteBatch, bool)>,
    results: std::collections::HashMap<u64, Result<SyncPoint>>,
    next_ticket: u64,
    leader_active: bool,
}

/// Files in the data directory, by name.
#[derive(Debug, PartialEq, Eq)]
enum FileKind {
    Wal(u64),
    Table(u64),
    Manifest(u64),
    Temp,
    Other,
}

fn classify(name: &str) -> FileKind {
    let number = |s: &str| s.parse::<u64>().ok();
    if let Some(n) = name.strip_suffix(".log").and_then(number) {
        FileKind::Wal(n)
    } else if let Some(n) = name.strip_suffix(".sst").and_then(number) {
        FileKind::Table(n)
    } else if let Some(n) = name.strip_prefix("MANIFEST-").and_then(number) {
        FileKind::Manifest(n)
    } else if name.ends_with(".tmp") {
        FileKind::Temp
    } else {
        FileKind::Other
    }
}

fn table_name(number: u64) -> String {
    format!("{number:06}.sst")
}

impl Db {
    /// Opens (or creates) the engine in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: Options, op: Arc<dyn MergeOperator>) -> Result<Db> {
        Db::open_with_fs(Arc::new(RealFs), dir.as_ref(), opts, op)
    }

    /// Opens (or creates) the engine in `dir` on the given file system.
    ///
    /// Recovery: replays the manifest, opens and verifies every live table,
    /// replays the WALs the manifest does not cover into new L0 tables,
    /// writes a fresh manifest, then removes obsolete files. Nothing is
    /// changed on disk before every check has passed.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: &Path,
        opts: Options,
        op: Arc<dyn MergeOperator>,
    ) -> Result<Db> {
        opts.validate().map_err(Error::InvalidArgument)?;
        fs.create_dir_all(dir)
            .map_err(|e| Error::io("mkdir", dir, e))?;
        let lock = fs.lock(&dir.join("LOCK")).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                Error::io("lock", dir.join("LOCK"), e)
            }
        })?;
        let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
        let kinds: Vec<(String, FileKind)> = names
            .into_iter()
            .map(|n| (n.clone(), classify(&n)))
            .collect();

        let mut state = match Manifest::recover(&*fs, dir)? {
            Some(state) => state,
            None => {
                if let Some((name, _)) = kinds
                    .iter()
                    .find(|(_, k)| matches!(k, FileKind::Table(_) | FileKind::Manifest(_)))
                {
                    return Err(Error::corruption(
                        dir.join(name),
                        0,
                        "CURRENT is missing but data files exist",
                    ));
                }
                ManifestState {
                    merge_operator: op.name().to_owned(),
                    next_file_number: 1,
                    ..Default::default()
                }
            }
        };
        if state.merge_operator != op.name() {
            return Err(Error::MergeOperatorMismatch {
                on_disk: state.merge_operator.clone(),
                given: op.name().to_owned(),
            });
        }

        // Open and verify every live table.
        let metrics = Arc::new(Metrics::default());
        let cache = Arc::new(BlockCache::new(opts.block_cache_bytes, metrics.clone()));
        let mut version = Version::default();
        let mut live = Vec::new();
        for (level, meta) in state.files.values() {
            live.push((
                *level,
                Arc::new(open_table(&*fs, dir, meta.clone(), &cache)?),
            ));
        }

        // Replay every WAL the manifest does not cover, batch by batch, into
        // memtables written out as L0 tables. Nothing here changes the live
        // set: if a WAL turns out damaged, the tables written so far are
        // removed and the manifest still names the old set.
        let mut wals: Vec<u64> = kinds
            .iter()
            .filter_map(|(_, k)| match k {
                FileKind::Wal(n) if *n >= state.log_number => Some(*n),
                _ => None,
            })
            .collect();
        wals.sort_unstable();
        let max_on_disk = kinds
            .iter()
            .filter_map(|(_, k)| match k {
                FileKind::Wal(n) | FileKind::Table(n) | FileKind::Manifest(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let next_number = AtomicU64::new(state.next_file_number.max(max_on_disk + 1));
        let mut memtable = Memtable::new(0);
        let mut recovered_tables: Vec<LiveTable> = Vec::new();
        let mut recovered_keys: Vec<Vec<u8>> = Vec::new();
        let replayed = wals.iter().enumerate().try_for_each(|(i, &n)| {
            wal::replay(
                &*fs,
                &dir.join(wal::wal_name(n)),
                i + 1 == wals.len(),
                opts.salvage_wal_tail,
                |batch| {
                    memtable.apply(batch.ops(), &*op);
                    if memtable.approximate_bytes() >= opts.memtable_bytes {
                        recovered_tables.push(write_l0(
                            &fs,
                            dir,
                            &opts,
                            &next_number,
                            &memtable,
                            &cache,
                        )?);
                        memtable.try_for_each(|k, _| {
                            recovered_keys.push(k.to_vec());
                            Ok::<(), Error>(())
                        })?;
                        memtable = Memtable::new(0);
                    }
                    Ok(())
                },
            )
        });
        let replayed = replayed.and_then(|()| {
            if !memtable.is_empty() {
                recovered_tables.push(write_l0(&fs, dir, &opts, &next_number, &memtable, &cache)?);
                memtable.try_for_each(|k, _| {
                    recovered_keys.push(k.to_vec());
                    Ok::<(), Error>(())
                })?;
            }
            Ok(())
        });
        if let Err(e) = replayed {
            for table in &recovered_tables {
                let _ = fs.remove(table.table.path());
            }
            return Err(e);
        }
        for table in recovered_tables {
            state
                .files
                .insert(table.meta.number, (0, table.meta.clone()));
            live.push((0, Arc::new(table)));
        }
        version = version.with_changes(&[], live);
        recovered_keys.sort_unstable();
        recovered_keys.dedup();

        // A fresh WAL and manifest; then remove what they make obsolete.
        let wal_number = next_number.fetch_add(1, Ordering::SeqCst);
        let manifest_number = next_number.fetch_add(1, Ordering::SeqCst);
        state.log_number = wal_number;
        state.next_file_number = next_number.load(Ordering::SeqCst);
        let wal = Wal::create(&*fs, dir, wal_number)?;
        let manifest = Manifest::create(&*fs, dir, manifest_number, &state)?;
        for (name, kind) in &kinds {
            let obsolete = match kind {
                FileKind::Wal(n) => *n < wal_number,
                FileKind::Table(n) => !state.files.contains_key(n),
                FileKind::Manifest(n) => *n != manifest.number(),
                FileKind::Temp => true,
                FileKind::Other => false,
            };
            if obsolete {
                let path = dir.join(name);
                if let Err(e) = fs.remove(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove obsolete file");
                }
            }
        }
        tracing::info!(dir = %dir.display(), tables = state.files.len(), wal = wal_number, "storage engine opened");

        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            fs,
            opts,
            op,
            state: Mutex::new(State {
                active: Arc::new(Memtable::new(wal_number)),
                wal: Arc::new(wal),
                immutables: Vec::new(),
                version: Arc::new(version),
            }),
            state_changed: Condvar::new(),
            queue: Mutex::new(WriteQueue::default()),
            queue_changed: Condvar::new(),
            flushing: Mutex::new(()),
            manifest: Mutex::new(manifest),
            compaction: Mutex::new(vec![Vec::new(); NUM_LEVELS]),
            next_file_number: next_number,
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            poisoned_by_full_disk: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            metrics,
            block_cache: cache,
            recovered_keys: Mutex::new(recovered_keys),
            _lock: lock,
        });
        let mut threads = Vec::new();
        if inner.opts.background_work {
            let i = inner.clone();
            threads.push(spawn("tally-flush", move || i.flush_loop())?);
            let i = inner.clone();
            threads.push(spawn("tally-compact", move || i.compaction_loop())?);
        }
        if let Durability::Periodic { interval } = inner.opts.durability {
            let i = inner.clone();
            threads.push(spawn("tally-wal-sync", move || i.sync_loop(interval))?);
        }
        Ok(Db { inner, threads })
    }

    /// Applies a batch atomically. Returns once the batch is as durable as
    /// [`Options::durability`] promises.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch, true).map(|_| ())
    }

    /// Applies a batch atomically like [`Db::write`], but in `sync` mode
    /// returns once the batch is written to the WAL, before the fsync: it
    /// is visible to reads but durable only after
    /// [`Db::wait_durable`] with the returned point. This lets a caller
    /// prepare its next write while the fsync of this one runs (pipelined
    /// group commit); one fsync covers every write before it.
    pub fn write_unsynced(&self, batch: WriteBatch) -> Result<SyncPoint> {
        self.inner.write(batch, false)
    }

    /// Returns once everything written up to `point` is as durable as
    /// [`Options::durability`] promises: in `sync` mode it fsyncs the WAL
    /// unless an earlier fsync (another caller's, or a rotation's)
    /// already covered `point`; in `periodic` mode it returns at once. A
    /// failed fsync poisons the engine, as in [`Db::write`].
    pub fn wait_durable(&self, point: SyncPoint) -> Result<()> {
        self.inner.wait_durable(point)
    }

    /// Sets one key.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Merges one operand into a key.
    pub fn merge(&self, key: &[u8], operand: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.merge(key, operand);
        self.write(batch)
    }

    /// Deletes one key.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }

    /// The value of `key`, merged across every layer.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    /// Up to `limit` live key-value pairs with keys in `[start, end)`
    /// (`end = None`: no upper bound), in key order.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit > 0 {
            self.inner.scan_ranges_with(&[(start, end)], |key, value| {
                out.push((key.to_vec(), value.to_vec()));
                out.len() < limit
            })?;
        }
        Ok(out)
    }

    /// Calls `visit(key, value)` for each live pair with a key in
    /// `[start, end)`, in key order, until it returns `false`. The slices
    /// are borrowed from the engine's buffers: nothing is allocated per
    /// entry read from an SSTable.
    pub fn scan_with(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.inner.scan_ranges_with(&[(start, end)], visit)
    }

    /// [`Db::scan_with`] over several ranges `[start, end)` in one pass:
    /// each table is searched once and its cursor moves on from range to
    /// range (a range in the block the last one ended in costs no index
    /// search). The ranges must be sorted, each starting at or after the
    /// previous one's end (`InvalidArgument` otherwise); `visit` returning
    /// `false` ends the whole scan.
    pub fn scan_ranges_with(
        &self,
        ranges: &[(&[u8], Option<&[u8]>)],
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.inner.scan_ranges_with(ranges, visit)
    }

    /// Freezes the active memtable and waits until every frozen memtable is
    /// in an SSTable.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Flushes, then merges every table into one sorted run at the deepest
    /// level (a full compaction, running the compaction filter everywhere).
    pub fn compact(&self) -> Result<()> {
        self.inner.flush()?;
        let _running = self.inner.compaction.lock();
        let version = self.inner.state.lock().version.clone();
        match compaction::full(&version) {
            Some(plan) => self.inner.run_compaction(plan),
            None => Ok(()),
        }
    }

    /// Runs background-style compactions inline until no level needs one
    /// (for engines opened with `background_work = false`).
    pub fn compact_pending(&self) -> Result<()> {
        loop {
            let mut pointers = self.inner.compaction.lock();
            let version = self.inner.state.lock().version.clone();
            let Some(plan) = compaction::pick(&version, &self.inner.opts, &mut pointers) else {
                return Ok(());
            };
            self.inner.run_compaction(plan)?;
        }
    }

    /// The keys of the writes this engine replayed from its WAL when it
    /// opened (sorted, each once): the newest writes before the last stop.
    /// A replicated store uses them to re-send what may not have reached
    /// other replicas before a crash. Returns them once; later calls get
    /// an empty list.
    pub fn take_recovered_keys(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.inner.recovered_keys.lock())
    }

    /// The engine's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Tables and bytes per level, L0 first.
    pub fn level_summary(&self) -> Vec<(usize, u64)> {
        let version = self.inner.state.lock().version.clone();
        version
            .levels
            .iter()
            .map(|l| (l.len(), l.iter().map(|t| t.meta.size).sum()))
            .collect()
    }

    /// Bytes on disk: tables and WAL files.
    pub fn disk_bytes(&self) -> u64 {
        let tables: u64 = self.level_summary().iter().map(|(_, bytes)| bytes).sum();
        tables + self.wal_bytes()
    }

    /// Whether the engine takes writes, and if not, why.
    pub fn health(&self) -> Health {
        if !self.inner.poisoned.load(Ordering::SeqCst) {
            return Health::Ok;
        }
        let reason = self.inner.poison_reason.lock().clone().unwrap_or_default();
        if self.inner.poisoned_by_full_disk.load(Ordering::SeqCst) {
            Health::DiskFull { reason }
        } else {
            Health::Poisoned { reason }
        }
    }

    /// Bytes of the WAL files on disk (the active one and those of frozen
    /// memtables not yet flushed). Recovery writes them out as tables
    /// before it deletes them, so a restart needs about this much free
    /// space.
    pub fn wal_bytes(&self) -> u64 {
        let dir = &self.inner.dir;
        let Ok(names) = self.inner.fs.list(dir) else {
            return 0;
        };
        names
            .iter()
            .filter(|n| matches!(classify(n), FileKind::Wal(_)))
            .filter_map(|n| self.inner.fs.open(&dir.join(n)).ok())
            .filter_map(|f| f.size().ok())
            .sum()
    }

    /// Stops background work and fsyncs the WAL. Dropping the `Db` does the
    /// same but cannot report an error.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the background threads and ends the WAL with the clean-close
    /// record, fsynced. A poisoned engine is not closed cleanly: it says so
    /// (its caller must not record a clean stop). Only the first call does
    /// anything.
    fn shutdown(&mut self) -> Result<()> {
        if self.inner.shutdown.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let _state = self.inner.state.lock();
            self.inner.state_changed.notify_all();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.inner.check_poisoned()?;
        let wal = self.inner.state.lock().wal.clone();
        let closed = wal.append(&wal::close_record()).and_then(|()| wal.sync());
        if let Err(e) = &closed {
            self.inner.poison(e);
        }
        closed.map(|_| ())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the storage engine failed");
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| Error::io("spawn thread", PathBuf::from(name), e))
}

fn open_table(
    fs: &dyn Fs,
    dir: &Path,
    meta: FileMeta,
    cache: &Arc<BlockCache>,
) -> Result<LiveTable> {
    let path = dir.join(table_name(meta.number));
    if !fs.exists(&path) {
        return Err(Error::MissingFile { file: path });
    }
    let file = fs.open(&path).map_err(|e| Error::io("open", &path, e))?;
    let table = Table::open(path.clone(), meta.number, file, cache.clone())?;
    if table.entries() != meta.entries {
        return Err(Error::corruption(
            &path,
            0,
            "entry count disagrees with the manifest",
        ));
    }
    Ok(LiveTable {
        meta,
        table: Arc::new(table),
    })
}

/// Writes a memtable as one L0 table.
fn write_l0(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    opts: &Options,
    numbers: &AtomicU64,
    mem: &Memtable,
    cache: &Arc<BlockCache>,
) -> Result<LiveTable> {
    let number = numbers.fetch_add(1, Ordering::SeqCst);
    let path = dir.join(table_name(number));
    let mut builder =
        TableBuilder::create(fs.clone(), path, opts.block_bytes, opts.bloom_bits_per_key)?;
    if let Err(e) = mem.try_for_each(|key, entry| builder.add(key, entry.kind, &entry.value)) {
        builder.abandon();
        return Err(e);
    }
    let summary = builder.finish()?;
    open_table(&**fs, dir, meta_of(number, summary), cache)
}

fn meta_of(number: u64, s: TableSummary) -> FileMeta {
    FileMeta {
        number,
        size: s.size,
        entries: s.entries,
        smallest: s.smallest,
        largest: s.largest,
    }
}

impl Inner {
    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            let reason = self.poison_reason.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { reason });
        }
        Ok(())
    }

    fn poison(&self, error: &Error) {
        tracing::error!(error = %error, "storage engine poisoned; reopen to recover");
        {
            let mut reason = self.poison_reason.lock();
            if reason.is_none() {
                *reason = Some(error.to_string());
                self.poisoned_by_full_disk
                    .store(matches!(error, Error::NoSpace { .. }), Ordering::SeqCst);
            }
        }
        self.poisoned.store(true, Ordering::SeqCst);
        let _state = self.state.lock();
        self.state_changed.notify_all();
    }

    fn validate(&self, batch: &WriteBatch) -> Result<()> {
        if batch.approximate_size() > MAX_PAYLOAD_LEN / 2 {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes exceeds {} bytes",
                batch.approximate_size(),
                MAX_PAYLOAD_LEN / 2
            )));
        }
        for Op { kind, key, value } in batch.ops() {
            if key.is_empty() || key.len() > self.opts.max_key_bytes {
                return Err(Error::InvalidArgument(format!(
                    "key of {} bytes: keys must be 1..={} bytes",
                    key.len(),
                    self.opts.max_key_bytes
                )));
            }
            if value.len() > self.opts.max_value_bytes {
                return Err(Error::InvalidArgument(format!(
                    "value of {} bytes exceeds {} bytes",
                    value.len(),
                    self.opts.max_value_bytes
                )));
            }
            if kind == Kind::Merge {
                self.op.check(value).map_err(Error::InvalidArgument)?;
            }
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<SyncPoint> {
        self.validate(&batch)?;
        if batch.is_empty() {
            return Ok(SyncPoint::default());
        }
        self.check_poisoned()?;
        add(&self.metrics.user_bytes, batch.approximate_size() as u64);
        let mut queue = self.queue.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, batch, sync));
        loop {
            if let Some(result) = queue.results.remove(&ticket) {
                return result;
            }
            if !queue.leader_active {
                break;
            }
            self.queue_changed.wait(&mut queue);
        }
        // Lead one group; our own batch is in it (it is still pending, and
        // groups are taken from the front).
        queue.leader_active = true;
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut rest = std::mem::take(&mut queue.pending).into_iter();
        let mut sync_group = false;
        for (t, b, sync) in rest.by_ref() {
            bytes += b.approximate_size();
            sync_group |= sync;
            group.push((t, b));
            if bytes >= MAX_GROUP_BYTES && group.iter().any(|(t, _)| *t == ticket) {
                break;
            }
        }
        queue.pending = rest.collect();
        drop(queue);

        let tickets: Vec<u64> = group.iter().map(|(t, _)| *t).collect();
        let result = self.commit_group(group.into_iter().map(|(_, b)| b).collect(), sync_group);

        let mut queue = self.queue.lock();
        for t in tickets {
            if t != ticket {
                let r = match &result {
                    Ok(point) => Ok(*point),
                    Err(e) => Err(e.duplicate()),
                };
                queue.results.insert(t, r);
            }
        }
        queue.leader_active = false;
        self.queue_changed.notify_all();
        result
    }

    /// Writes one group to the WAL and the memtable; fsyncs first when
    /// `sync` and the engine is in `sync` mode.
    fn commit_group(&self, group: Vec<WriteBatch>, sync: bool) -> Result<SyncPoint> {
        let (memtable, wal) = self.make_room()?;
        let mut records = Vec::with_capacity(group.iter().map(|b| b.approximate_size() + 16).sum());
        for batch in &group {
            batch.encode_record(&mut records);
        }
        if let Err(e) = wal.append(&records) {
            self.poison(&e);
            return Err(e);
        }
        add(&self.metrics.wal_bytes, records.len() as u64);
        let point = SyncPoint {
            wal: wal.number(),
            end: wal.bytes_written(),
        };
        if sync && self.opts.durability == Durability::Sync {
            self.sync_wal(&wal)?;
        }
        add(&self.metrics.commit_groups, 1);
        add(&self.metrics.batches, group.len() as u64);
        memtable.apply(group.iter().flat_map(WriteBatch::ops), &*self.op);
        Ok(point)
    }

    /// Fsyncs `wal` (a no-op when nothing new was written); a failure
    /// poisons the engine.
    fn sync_wal(&self, wal: &Wal) -> Result<()> {
        match wal.sync() {
            Ok(synced) => {
                if synced {
                    add(&self.metrics.wal_syncs, 1);
                }
                Ok(())
            }
            Err(e) => {
                self.poison(&e);
                Err(e)
            }
        }
    }

    fn wait_durable(&self, point: SyncPoint) -> Result<()> {
        if self.opts.durability != Durability::Sync || point == SyncPoint::default() {
            return Ok(());
        }
        let wal = self.state.lock().wal.clone();
        if wal.number() != point.wal {
            // `point`'s WAL was rotated out, and rotation fsyncs the old
            // WAL before replacing it, unless that failed and poisoned us.
            return self.check_poisoned();
        }
        if wal.bytes_synced() >= point.end {
            return Ok(());
        }
        self.check_poisoned()?;
        self.sync_wal(&wal)
    }

    /// Returns the memtable and WAL to write to, rotating a full memtable
    /// and waiting (bounded) while flushes or compactions are behind. Called
    /// only by the group leader.
    fn make_room(&self) -> Result<(Arc<Memtable>, Arc<Wal>)> {
        let started = Instant::now();
        let mut stalled = false;
        let mut state = self.state.lock();
        loop {
            self.check_poisoned()?;
            let l0 = state.version.levels[0].len();
            let l0_blocked = self.opts.background_work && l0 >= self.opts.l0_stop_trigger;
            let full = state.active.approximate_bytes() >= self.opts.memtable_bytes
                || state.wal.bytes_written() >= self.opts.max_wal_bytes;
            let can_rotate = state.immutables.len() < self.opts.max_immutable_memtables;
            if !full && !l0_blocked {
                break;
            }
            if full && can_rotate && !l0_blocked {
                drop(state);
                self.rotate()?;
                state = self.state.lock();
                continue;
            }
            if !self.opts.background_work {
                drop(state);
                self.flush_oldest()?;
                state = self.state.lock();
                continue;
            }
            stalled = true;
            let waited = started.elapsed();
            let Some(remaining) = self.opts.write_stall_timeout.checked_sub(waited) else {
                self.note_stall(started);
                return Err(Error::WriteStall { waited });
            };
            self.state_changed
                .wait_for(&mut state, remaining.min(Duration::from_millis(100)));
        }
        if stalled {
            self.note_stall(started);
        }
        let slowdown = self.opts.background_work
            && state.version.levels[0].len() >= self.opts.l0_slowdown_trigger;
        let result = (state.active.clone(), state.wal.clone());
        drop(state);
        if slowdown {
            add(&self.metrics.write_slowdowns, 1);
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(result)
    }

    fn note_stall(&self, started: Instant) {
        add(&self.metrics.write_stalls, 1);
        add(
            &self.metrics.write_stall_micros,
            started.elapsed().as_micros() as u64,
        );
    }

    /// Freezes the active memtable and starts a new one with a new WAL.
    /// Called only by the group leader (or with leadership held).
    fn rotate(&self) -> Result<()> {
        let old_wal = self.state.lock().wal.clone();
        // Only the newest WAL may have a torn tail: finish the old one first.
        if let Err(e) = old_wal.sync() {
            self.poison(&e);
            return Err(e);
        }
        let number = self.next_file_number.fetch_add(1, Ordering::SeqCst);
        let wal = match Wal::create(&*self.fs, &self.dir, number) {
            Ok(wal) => wal,
            // No file was made (out of file descriptors, or of space for a
            // name): nothing is lost, the active memtable and its WAL stay,
            // and the next write tries again. Anything else (the directory
            // fsync) poisons.
            Err(e) if e.nothing_written() => {
                tracing::warn!(error = %e, "could not start a new WAL; writes wait for it");
                return Err(e);
            }
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        let mut state = self.state.lock();
        let frozen = std::mem::replace(&mut state.active, Arc::new(Memtable::new(number)));
        state.immutables.push(frozen);
        state.wal = Arc::new(wal);
        self.state_changed.notify_all();
        Ok(())
    }

    /// Takes write leadership, so that memtable rotation cannot race a group.
    fn with_leadership<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut queue = self.queue.lock();
        while queue.leader_active {
            self.queue_changed.wait(&mut queue);
        }
        queue.leader_active = true;
        drop(queue);
        let result = f();
        let mut queue = self.queue.lock();
        queue.leader_active = false;
        self.queue_changed.notify_all();
        result
    }

    fn flush(&self) -> Result<()> {
        self.check_poisoned()?;
        self.with_leadership(|| {
            if self.state.lock().active.is_empty() {
                Ok(())
            } else {
                self.rotate()
            }
        })?;
        // Flush inline (serialized with the flush thread by `flushing`), so
        // a failure is reported to the caller instead of retried forever.
        while !self.state.lock().immutables.is_empty() {
            self.check_poisoned()?;
            self.flush_oldest()?;
        }
        Ok(())
    }

    /// Flushes the oldest frozen memtable to an L0 table and installs it.
    fn flush_oldest(&self) -> Result<()> {
        let _flushing = self.flushing.lock();
        let Some(mem) = self.state.lock().immutables.first().cloned() else {
            return Ok(());
        };
        let table = if mem.is_empty() {
            None
        } else {
            let table = write_l0(
                &self.fs,
                &self.dir,
                &self.opts,
                &self.next_file_number,
                &mem,
                &self.block_cache,
            )?;
            add(&self.metrics.flushes, 1);
            add(&self.metrics.flush_bytes, table.meta.size);
            Some(Arc::new(table))
        };
        let manifest = self.manifest.lock();
        let log_number = {
            let state = self.state.lock();
            state
                .immutables
                .get(1)
                .map_or(state.active.wal_number(), |m| m.wal_number())
        };
        let edit = VersionEdit {
            log_number: Some(log_number),
            next_file_number: Some(self.next_file_number.load(Ordering::SeqCst)),
            added: table.iter().map(|t| (0, t.meta.clone())).collect(),
            ..Default::default()
        };
        if let Err(e) = manifest.append(&edit) {
            self.poison(&e);
            return Err(e);
        }
        {
            let mut state = self.state.lock();
            state.version = Arc::new(
                state
                    .version
                    .with_changes(&[], table.into_iter().map(|t| (0, t)).collect()),
            );
            state.immutables.remove(0);
            self.state_changed.notify_all();
        }
        drop(manifest);
        self.remove_file(&self.dir.join(wal::wal_name(mem.wal_number())));
        Ok(())
    }

    fn remove_file(&self, path: &Path) {
        if let Err(e) = self.fs.remove(path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove obsolete file");
        }
    }

    fn run_compaction(&self, plan: Plan) -> Result<()> {
        let started = Instant::now();
        let description = compaction::describe(&plan);
        let deleted: Vec<(usize, u64)> = plan
            .inputs
            .iter()
            .map(|(l, t)| (*l, t.meta.number))
            .collect();
        let added: Vec<(usize, Arc<LiveTable>)> = if plan.trivial_move {
            plan.inputs
                .iter()
                .map(|(_, t)| (plan.output_level, t.clone()))
                .collect()
        } else {
            let mut sink = CompactionOutput {
                inner: self,
                builder: None,
                outputs: Vec::new(),
            };
            let merged = compaction::merge_into(
                &plan,
                self.op.clone(),
                self.opts.compaction_filter.as_deref(),
                &mut sink,
            )
            .and_then(|()| sink.finish_table());
            if let Err(e) = merged {
                if let Some((_, builder)) = sink.builder.take() {
                    builder.abandon();
                }
                for table in &sink.outputs {
                    self.remove_file(table.table.path());
                }
                return Err(e);
            }
            add(
                &self.metrics.compaction_read_bytes,
                compaction::input_bytes(&plan),
            );
            sink.outputs
                .into_iter()
                .map(|t| (plan.output_level, t))
                .collect()
        };
        let written: u64 = if plan.trivial_move {
            0
        } else {
            added.iter().map(|(_, t)| t.meta.size).sum()
        };
        add(&self.metrics.compaction_write_bytes, written);
        add(&self.metrics.compactions, 1);

        let manifest = self.manifest.lock();
        let edit = VersionEdit {
            next_file_number: Some(self.next_file_number.load(Ordering::SeqCst)),
            added: added.iter().map(|(l, t)| (*l, t.meta.clone())).collect(),
            deleted: deleted.clone(),
            ..Default::default()
        };
        if let Err(e) = manifest.append(&edit) {
            self.poison(&e);
            return Err(e);
        }
        {
            let mut state = self.state.lock();
            state.version = Arc::new(state.version.with_changes(&deleted, added));
            self.state_changed.notify_all();
        }
        drop(manifest);
        if !plan.trivial_move {
            for (_, table) in &plan.inputs {
                self.remove_file(table.table.path());
            }
        }
        tracing::info!(
            compaction = %description,
            written_bytes = written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction finished"
        );
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        add(&self.metrics.gets, 1);
        let (active, immutables, version) = {
            let state = self.state.lock();
            (
                state.active.clone(),
                state.immutables.clone(),
                state.version.clone(),
            )
        };
        let mut found: Vec<Entry> = Vec::new();
        for mem in std::iter::once(&active).chain(immutables.iter().rev()) {
            if let Some(entry) = mem.get(key) {
                let complete = entry.is_complete();
                found.push(entry);
                if complete {
                    return Ok(resolve_newest_first(key, found, &*self.op));
                }
            }
        }
        let hash = hash64(key);
        let candidates = version.levels[0]
            .iter()
            .filter(|t| t.meta.overlaps(key, key))
            .chain((1..NUM_LEVELS).filter_map(|level| version.table_for_key(level, key)));
        for table in candidates {
            if !table.table.may_contain(hash) {
                add(&self.metrics.bloom_skips, 1);
                continue;
            }
            if let Some(entry) = table.table.get(key)? {
                let complete = entry.is_complete();
                found.push(entry);
                if complete {
                    break;
                }
            }
        }
        Ok(resolve_newest_first(key, found, &*self.op))
    }

    fn scan_ranges_with(
        &self,
        ranges: &[(&[u8], Option<&[u8]>)],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let sorted = ranges
            .windows(2)
            .all(|w| w[0].1.is_some_and(|end| end <= w[1].0));
        if !sorted {
            return Err(Error::InvalidArgument(
                "scan ranges must be sorted, each starting at or after the previous end".into(),
            ));
        }
        let (Some(&(start, first_end)), Some(&(_, end))) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let (active, immutables, version) = {
            let state = self.state.lock();
            (
                state.active.clone(),
                state.immutables.clone(),
                state.version.clone(),
            )
        };
        // Cursors over the first range, later sent forward to each next one.
        let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
        for mem in std::iter::once(&active).chain(immutables.iter().rev()) {
            let mut entries = Vec::new();
            for &(from, to) in ranges {
                entries.extend(mem.range(from, to, usize::MAX));
            }
            if !entries.is_empty() {
                cursors.push(Box::new(VecCursor::new(entries, first_end)));
            }
        }
        let hi = end.unwrap_or(&[]);
        let meets = |t: &Arc<LiveTable>| {
            t.meta.largest.as_slice() >= start && (end.is_none() || t.meta.smallest.as_slice() < hi)
        };
        for table in version.levels[0].iter().filter(|t| meets(t)) {
            cursors.push(Box::new(TableCursor::new(
                table.table.clone(),
                start,
                first_end,
                Fill::Yes,
            )?));
        }
        for level in &version.levels[1..] {
            let tables: Vec<Arc<LiveTable>> = level.iter().filter(|t| meets(t)).cloned().collect();
            if !tables.is_empty() {
                cursors.push(Box::new(LevelCursor::new(
                    tables,
                    start,
                    first_end,
                    Fill::Yes,
                )?));
            }
        }
        let mut merger = Merger::new(cursors, self.op.clone());
        for (i, &(from, to)) in ranges.iter().enumerate() {
            if i > 0 {
                merger.seek(from, to)?;
            }
            let mut stopped = false;
            merger.visit(|key, kind, value| {
                let go = kind == Kind::Delete || visit(key, value);
                stopped = !go;
                Ok(go)
            })?;
            if stopped {
                break;
            }
        }
        Ok(())
    }

    fn flush_loop(&self) {
        loop {
            {
                let mut state = self.state.lock();
                while state.immutables.is_empty() && !self.shutdown.load(Ordering::SeqCst) {
                    self.state_changed.wait(&mut state);
                }
            }
            if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.flush_oldest() {
                tracing::error!(error = %e, "memtable flush failed; retrying");
                self.pause_after_error();
            }
        }
    }

    fn compaction_loop(&self) {
        loop {
            {
                let mut state = self.state.lock();
                while !compaction::needs_compaction(&state.version, &self.opts)
                    && !self.shutdown.load(Ordering::SeqCst)
                {
                    self.state_changed.wait(&mut state);
                }
            }
            if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                return;
            }
            let mut pointers = self.compaction.lock();
            let version = self.state.lock().version.clone();
            let Some(plan) = compaction::pick(&version, &self.opts, &mut pointers) else {
                continue;
            };
            if let Err(e) = self.run_compaction(plan) {
                drop(pointers);
                tracing::error!(error = %e, "compaction failed; retrying");
                self.pause_after_error();
            }
        }
    }

    fn pause_after_error(&self) {
        let mut state = self.state.lock();
        if !self.shutdown.load(Ordering::SeqCst) {
            self.state_changed.wait_for(&mut state, BACKGROUND_RETRY);
        }
    }

    fn sync_loop(&self, interval: Duration) {
        loop {
            let wal = {
                let mut state = self.state.lock();
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                self.state_changed.wait_for(&mut state, interval);
                if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                    return;
                }
                state.wal.clone()
            };
            match wal.sync() {
                Ok(true) => add(&self.metrics.wal_syncs, 1),
                Ok(false) => {}
                Err(e) => {
                    self.poison(&e);
                    return;
                }
            }
        }
    }
}

/// Receives compaction output, cutting tables at the target size.
struct CompactionOutput<'a> {
    inner: &'a Inner,
    builder: Option<(u64, TableBuilder)>,
    outputs: Vec<Arc<LiveTable>>,
}

impl CompactionOutput<'_> {
    fn finish_table(&mut self) -> Result<()> {
        if let Some((number, builder)) = self.builder.take() {
            let summary = builder.finish()?;
            let table = open_table(
                &*self.inner.fs,
                &self.inner.dir,
                meta_of(number, summary),
                &self.inner.block_cache,
            )?;
            self.outputs.push(Arc::new(table));
        }
        Ok(())
    }
}

impl OutputSink for CompactionOutput<'_> {
    fn add(&mut self, key: &[u8], kind: Kind, value: &[u8]) -> Result<()> {
        if self.builder.is_none() {
            let number = self.inner.next_file_number.fetch_add(1, Ordering::SeqCst);
            let path = self.inner.dir.join(table_name(number));
            let opts = &self.inner.opts;
            let builder = TableBuilder::create(
                self.inner.fs.clone(),
                path,
                opts.block_bytes,
                opts.bloom_bits_per_key,
            )?;
            self.builder = Some((number, builder));
        }
        if let Some((_, builder)) = self.builder.as_mut() {
            builder.add(key, kind, value)?;
            if builder.approximate_size() >= self.inner.opts.target_file_bytes {
                self.finish_table()?;
            }
        }
        Ok(())
    }
}
