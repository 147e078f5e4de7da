//! Opening the engine: lock the directory, recover the manifest, open and
//! verify every live table, replay the WALs it does not cover into L0
//! tables, write a fresh WAL and manifest, remove what they make obsolete,
//! start the background threads. Nothing on disk changes before every
//! check has passed: each step below is one function, in that order.

use std::any::Any;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::{classify, open_table, spawn, write_l0, Db, FileKind, Inner, State, WriteQueue};
use crate::block_cache::BlockCache;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::manifest::{Manifest, ManifestState};
use crate::memtable::Memtable;
use crate::merge::MergeOperator;
use crate::metrics::{Metrics, SyncLatency};
use crate::options::{Durability, Options};
use crate::real_fs::RealFs;
use crate::version::{LiveTable, Version, NUM_LEVELS};
use crate::wal::{self, Wal};

/// The files found in the directory, by name and kind.
type Listing = Vec<(String, FileKind)>;

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
        let lock = lock_dir(&*fs, dir)?;
        let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
        let listing: Listing = names
            .into_iter()
            .map(|n| (n.clone(), classify(&n)))
            .collect();
        let mut state = recover_manifest(&*fs, dir, &listing, &*op)?;
        let metrics = Arc::new(Metrics::default());
        let cache = Arc::new(BlockCache::new(opts.block_cache_bytes, metrics.clone()));
        let mut live = open_live_tables(&*fs, dir, &state, &cache)?;
        let next_number = AtomicU64::new(first_free_number(&state, &listing));
        let replay = Replay {
            fs: &fs,
            dir,
            opts: &opts,
            op: &*op,
            cache: &cache,
            next_number: &next_number,
        };
        let (recovered, mut recovered_keys) = replay.wals(&wals_to_replay(&state, &listing))?;
        for table in recovered {
            state
                .files
                .insert(table.meta.number, (0, table.meta.clone()));
            live.push((0, Arc::new(table)));
        }
        let version = Version::default().with_changes(&[], live);
        recovered_keys.sort_unstable();
        recovered_keys.dedup();

        // A fresh WAL and manifest; then remove what they make obsolete.
        let wal_number = next_number.fetch_add(1, Ordering::SeqCst);
        let manifest_number = next_number.fetch_add(1, Ordering::SeqCst);
        state.log_number = wal_number;
        state.next_file_number = next_number.load(Ordering::SeqCst);
        let wal = Wal::create(&*fs, dir, wal_number)?;
        let manifest = Manifest::create(&*fs, dir, manifest_number, &state)?;
        remove_obsolete(&*fs, dir, &listing, &state, wal_number, manifest.number());
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
            sync_latency: SyncLatency::default(),
            block_cache: cache,
            recovered_keys: Mutex::new(recovered_keys),
            _lock: lock,
        });
        let threads = start_background(&inner)?;
        Ok(Db { inner, threads })
    }
}

/// Takes the directory's lock: a second engine on it is refused.
fn lock_dir(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn Any + Send + Sync>> {
    fs.lock(&dir.join("LOCK")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            Error::io("lock", dir.join("LOCK"), e)
        }
    })
}

/// The manifest's state, or a new one for an empty directory; refused
/// when data files exist without a manifest, or the merge operator
/// differs from the one the data was written with.
fn recover_manifest(
    fs: &dyn Fs,
    dir: &Path,
    listing: &Listing,
    op: &dyn MergeOperator,
) -> Result<ManifestState> {
    let state = match Manifest::recover(fs, dir)? {
        Some(state) => state,
        None => {
            if let Some((name, _)) = listing
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
    Ok(state)
}

/// Opens and verifies every table the manifest names.
fn open_live_tables(
    fs: &dyn Fs,
    dir: &Path,
    state: &ManifestState,
    cache: &Arc<BlockCache>,
) -> Result<Vec<(usize, Arc<LiveTable>)>> {
    state
        .files
        .values()
        .map(|(level, meta)| Ok((*level, Arc::new(open_table(fs, dir, meta.clone(), cache)?))))
        .collect()
}

/// The first file number no file on disk or in the manifest uses.
fn first_free_number(state: &ManifestState, listing: &Listing) -> u64 {
    let max_on_disk = listing
        .iter()
        .filter_map(|(_, k)| match k {
            FileKind::Wal(n) | FileKind::Table(n) | FileKind::Manifest(n) => Some(*n),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    state.next_file_number.max(max_on_disk + 1)
}

/// The WALs the manifest does not cover, oldest first.
fn wals_to_replay(state: &ManifestState, listing: &Listing) -> Vec<u64> {
    let mut wals: Vec<u64> = listing
        .iter()
        .filter_map(|(_, k)| match k {
            FileKind::Wal(n) if *n >= state.log_number => Some(*n),
            _ => None,
        })
        .collect();
    wals.sort_unstable();
    wals
}

/// What WAL replay needs.
struct Replay<'a> {
    fs: &'a Arc<dyn Fs>,
    dir: &'a Path,
    opts: &'a Options,
    op: &'a dyn MergeOperator,
    cache: &'a Arc<BlockCache>,
    next_number: &'a AtomicU64,
}

impl Replay<'_> {
    /// Replays `wals` batch by batch into memtables written out as L0
    /// tables, and returns the tables and every key they hold. Nothing
    /// here changes the live set: if a WAL turns out damaged, the tables
    /// written so far are removed and the manifest still names the old
    /// set.
    fn wals(&self, wals: &[u64]) -> Result<(Vec<LiveTable>, Vec<Vec<u8>>)> {
        let mut memtable = Memtable::new(0);
        let mut tables: Vec<LiveTable> = Vec::new();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let replayed = wals.iter().enumerate().try_for_each(|(i, &n)| {
            wal::replay(
                &**self.fs,
                &self.dir.join(wal::wal_name(n)),
                i + 1 == wals.len(),
                self.opts.salvage_wal_tail,
                |batch| {
                    memtable.apply(batch.ops(), self.op);
                    if memtable.approximate_bytes() >= self.opts.memtable_bytes {
                        self.write_out(&memtable, &mut tables, &mut keys)?;
                        memtable = Memtable::new(0);
                    }
                    Ok(())
                },
            )
        });
        let replayed = replayed.and_then(|()| {
            if !memtable.is_empty() {
                self.write_out(&memtable, &mut tables, &mut keys)?;
            }
            Ok(())
        });
        if let Err(e) = replayed {
            for table in &tables {
                let _ = self.fs.remove(table.table.path());
            }
            return Err(e);
        }
        Ok((tables, keys))
    }

    /// Writes `memtable` out as an L0 table and notes its keys.
    fn write_out(
        &self,
        memtable: &Memtable,
        tables: &mut Vec<LiveTable>,
        keys: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        tables.push(write_l0(
            self.fs,
            self.dir,
            self.opts,
            self.next_number,
            memtable,
            self.cache,
        )?);
        memtable.try_for_each(|k, _| {
            keys.push(k.to_vec());
            Ok::<(), Error>(())
        })
    }
}

/// Removes the WALs, tables, manifests and temporary files the fresh WAL
/// and manifest made obsolete (a failure is logged: they are removed at
/// the next open).
fn remove_obsolete(
    fs: &dyn Fs,
    dir: &Path,
    listing: &Listing,
    state: &ManifestState,
    wal_number: u64,
    manifest_number: u64,
) {
    for (name, kind) in listing {
        let obsolete = match kind {
            FileKind::Wal(n) => *n < wal_number,
            FileKind::Table(n) => !state.files.contains_key(n),
            FileKind::Manifest(n) => *n != manifest_number,
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
}

/// Starts the flush and compaction threads (unless the options turn
/// background work off) and, in `periodic` mode, the WAL sync thread.
fn start_background(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
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
    Ok(threads)
}
