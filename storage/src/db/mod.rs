//! [`Db`]: the engine. Opening and recovery (`recovery.rs`), the
//! group-commit write path (`write.rs`), reads (`read.rs`), and the
//! background flush, compaction and WAL-sync threads (`background.rs`);
//! this file holds the API and the state they share.
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
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::block_cache::BlockCache;
use crate::compaction;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::merge::MergeOperator;
use crate::metrics::{LatencySnapshot, Metrics, MetricsSnapshot, SyncLatency};
use crate::options::Options;
use crate::table::Table;
use crate::table_builder::{TableBuilder, TableSummary};
use crate::version::{FileMeta, LiveTable, Version};
use crate::wal::{self, Wal};
use crate::write_batch::WriteBatch;

mod background;
mod read;
mod recovery;
mod write;

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
    /// How long WAL fsyncs take.
    sync_latency: SyncLatency,
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
    /// Applies a batch atomically. Returns once the batch is as durable as
    /// [`Options::durability`] promises.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch, true).map(|_| ())
    }

    /// Whether a write of up to `bytes` would go straight through: no
    /// memtable to rotate (a new WAL file, an fsync of the old one), no
    /// stall behind flushes and no slowdown for level 0. A caller that
    /// must not block (an async worker) writes itself only then. A hint,
    /// not a promise: another writer may fill the room first.
    pub fn writes_freely(&self, bytes: usize) -> bool {
        let inner = &self.inner;
        if inner.poisoned.load(Ordering::Relaxed) {
            return false;
        }
        let opts = &inner.opts;
        let state = inner.state.lock();
        state.active.approximate_bytes() + bytes < opts.memtable_bytes
            && state.wal.bytes_written() + bytes as u64 + 4096 < opts.max_wal_bytes
            && !(opts.background_work && state.version.levels[0].len() >= opts.l0_slowdown_trigger)
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

    /// How long this engine's WAL fsyncs took, as a histogram.
    pub fn wal_sync_latency(&self) -> LatencySnapshot {
        self.inner.sync_latency.snapshot()
    }

    /// Bytes held by memtables: the active one and those frozen and
    /// waiting for their flush.
    pub fn memtable_bytes(&self) -> u64 {
        let state = self.inner.state.lock();
        let frozen: usize = state.immutables.iter().map(|m| m.approximate_bytes()).sum();
        (state.active.approximate_bytes() + frozen) as u64
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
}
