//! [`CounterStore`]: time-bucketed counters on top of the storage engine.
//!
//! An increment at time `t` updates one cell per resolution its namespace
//! keeps (minute, hour, day, total). This node's shard of each cell is
//! read, raised (`clock + 1`, `sum + delta`, `count + n`) and written back
//! as a one-shard state that the engine merges with the CRDT rule, all
//! cells of a batch in one atomic write batch.
//!
//! Trap (a) of DESIGN.md §3, two concurrent increments both reading clock
//! `c` and both writing `c + 1`, is closed by striped locks: the cells of a
//! batch are locked (in stripe order, so batches cannot deadlock) from the
//! read of the shard until the write is acknowledged.
//!
//! Retention is enforced twice: reads skip buckets past retention, and the
//! compaction filter drops them from disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tally_client::message::MAX_CELLS;
use tally_client::{CellState, ErrorCode, Increment, ItemResult, KeyRange, Response};
use tally_storage::{CompactionFilter, Db, FilterDecision, SyncPoint, WriteBatch};

use crate::clock::Clock;
use crate::counter::cell_key;
use crate::counter::limits::{refuse, RequestError, StoreLimits};
use crate::counter::namespace::{Namespace, Namespaces};
use crate::counter::op_id::{self, OpWindowLimits};
use crate::counter::read_plan::{self, ReadPlan};
use crate::counter::shard_set::{CounterMerge, Shard, ShardSet, MAX_CLOCK};
use crate::log_limit::LogLimit;
use crate::replica::identity::Identity;
use crate::replica::op_window::{self, OpWindow};

const LOCK_STRIPES: usize = 4096;
/// Own shards remembered per stripe (about a million cells in all).
const CACHED_SHARDS_PER_STRIPE: usize = 256;

/// One lock stripe: it serializes updates of its cells, and remembers this
/// node's shard of recently updated cells so that an increment need not
/// read the cell back from storage. Only this node writes its own shard,
/// and only under this lock, so a remembered shard is always current.
#[derive(Debug, Default)]
struct Stripe {
    own_shards: HashMap<Vec<u8>, Shard, BuildHasherDefault<CellHasher>>,
}

/// FxHash-style hasher for cell keys in the own-shard cache: SipHash
/// showed up in the write path's profile. Cell keys start with the key's
/// XXH64 token, and a stripe's map is bounded, so hash flooding can at
/// worst slow one stripe's 256 entries.
#[derive(Debug, Default, Clone, Copy)]
struct CellHasher(u64);

impl Hasher for CellHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64: the table uses both the low bits (bucket) and
        // the top seven (tag), and the multiply alone mixes neither well.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// One cell's share of a write: the summed delta and event count, and
/// the shard state it produced.
#[derive(Debug, Default)]
struct CellUpdate {
    /// Widened: a write group's deltas never overflow while summed.
    delta: i128,
    events: u64,
    state: Vec<u8>,
    /// The lead batches touching the cell, in order, each once.
    batches: Batches,
}

/// A cell's lead batches: nearly always one, so that one is inline (an
/// allocation per cell showed in the write path's profile).
#[derive(Debug, Default)]
struct Batches {
    first: Option<u32>,
    more: Vec<u32>,
}

impl Batches {
    /// Records `b` unless it is the last one recorded.
    fn note(&mut self, b: u32) {
        match self.first {
            None => self.first = Some(b),
            Some(first) if self.more.last().copied().unwrap_or(first) != b => self.more.push(b),
            Some(_) => {}
        }
    }

    /// All but the last, and the last.
    fn split_last(&self) -> Option<(u32, impl Iterator<Item = u32> + '_)> {
        let first = self.first?;
        let last = self.more.last().copied().unwrap_or(first);
        let rest = self.more.len();
        Some((
            last,
            std::iter::once(first)
                .chain(self.more.iter().copied())
                .take(rest),
        ))
    }
}

/// What leading one batch did.
#[derive(Debug, Default)]
pub struct Led {
    /// One result per item, in order.
    pub results: Vec<ItemResult>,
    /// The new state of this node's shard of every cell the batch touched,
    /// for the other replicas (empty unless the batch was applied).
    pub cells: Vec<CellState>,
}

/// Turns every `Ok` in `results` into `Indeterminate(code)`: the write
/// happened but did not reach the durability or the acknowledgements an
/// `Ok` promises.
pub fn unconfirmed(results: &mut [ItemResult], code: ErrorCode) {
    for r in results {
        if *r == ItemResult::Ok {
            *r = ItemResult::Indeterminate(code);
        }
    }
}

/// Whether a cell state from the network may be merged: a well-formed
/// cell key and shard set.
pub fn valid_cell(cell: &CellState) -> bool {
    if op_window::led_op_of_key(&cell.key).is_some() {
        return cell.value == op_window::LED_OP_VALUE;
    }
    cell_key::is_valid(&cell.key)
        && ShardSet::is_valid(&cell.value)
        && ShardSet::clocks_have_room(&cell.value)
}

/// Counters of one node.
#[derive(Debug)]
pub struct CounterStore {
    db: Db,
    /// `sync` durability: a write is acknowledged only after
    /// [`CounterStore::wait_durable`].
    syncs: bool,
    namespaces: Arc<RwLock<Namespaces>>,
    identity: Identity,
    clock: Arc<dyn Clock>,
    limits: StoreLimits,
    stripes: Vec<Mutex<Stripe>>,
    increments: AtomicU64,
    /// The op ids this node led that are still live. Held for a whole
    /// write group, so that an id is looked up and recorded atomically
    /// with the write that applies it.
    ops: Mutex<OpWindow>,
    duplicates: AtomicU64,
    /// Reads too large for an async worker run on the blocking pool, this
    /// many at a time (a few clients' range reads must not take every
    /// core, nor start hundreds of threads).
    heavy_reads: tokio::sync::Semaphore,
    /// Set after an unclean stop until this node has learned back, from
    /// the other replicas, the op ids its previous incarnation applied:
    /// op ids made at or before this time (ms) that it does not hold are
    /// refused meanwhile (see [`CounterStore::start_relearning`]).
    relearning_before_ms: Mutex<Option<i64>>,
}

/// Drops buckets past their namespace's retention during compaction.
#[derive(Debug)]
struct RetentionFilter {
    namespaces: Arc<RwLock<Namespaces>>,
    clock: Arc<dyn Clock>,
    op_window: OpWindowLimits,
}

impl CompactionFilter for RetentionFilter {
    fn decide(&self, key: &[u8], _value: &[u8]) -> FilterDecision {
        let op =
            op_window::op_of_key(key).or_else(|| op_window::led_op_of_key(key).map(|(_, id)| id));
        if let Some(id) = op {
            // An op id is refused once it is not live, so its records (the
            // leader's, and the ones replicas keep for it) can go.
            let now_ms = self.clock.now_ms();
            return if op_id::made_ms(id).saturating_add(self.op_window.span.as_millis() as i64)
                < now_ms
            {
                FilterDecision::Remove
            } else {
                FilterDecision::Keep
            };
        }
        let Some(cell) = cell_key::decode(key) else {
            return FilterDecision::Keep;
        };
        let namespaces = self.namespaces.read();
        match namespaces.get(&cell.namespace) {
            Some(ns) if ns.expired(cell.resolution, cell.bucket_start_ms, self.clock.now_ms()) => {
                FilterDecision::Remove
            }
            _ => FilterDecision::Keep,
        }
    }
}

/// `old` raised by one update: the next clock, the sums added; `None`
/// when the sum would leave the `i64` range or the clock pass
/// [`MAX_CLOCK`] (never wrapped: a wrapped shard would lose against the
/// one the replicas hold, and the increment would count nowhere).
fn raised(old: Shard, update: &CellUpdate) -> Option<Shard> {
    Some(Shard {
        id: old.id,
        clock: old.clock.checked_add(1).filter(|c| *c <= MAX_CLOCK)?,
        sum: i64::try_from(i128::from(old.sum) + update.delta).ok()?,
        count: old.count.checked_add(update.events)?,
    })
}

/// Why [`CounterStore::apply`] wrote nothing (or may not have).
#[derive(Debug)]
enum Applied {
    /// Nothing written: these cells' shards cannot take their updates
    /// (sum past the `i64` range, or clock past [`MAX_CLOCK`]).
    Overflow(HashSet<Vec<u8>>),
    /// The write failed; `maybe_applied` when it may have reached the WAL.
    Failed {
        code: ErrorCode,
        maybe_applied: bool,
    },
}

/// A cell's lock stripe, from its counter's token (the key's first eight
/// bytes): the cells of one counter, which an increment updates together,
/// share one stripe and one lock.
fn stripe_of(cell: &[u8]) -> usize {
    (crc32fast::hash(&cell[..cell.len().min(8)]) as usize) % LOCK_STRIPES
}

/// The op ids recorded in `db` that are live at `now_ms`.
fn applied_op_ids(db: &Db, limits: OpWindowLimits, now_ms: i64) -> tally_storage::Result<OpWindow> {
    let mut window = OpWindow::new(limits);
    let mut ids = Vec::new();
    db.scan_with(&op_window::OP_KEY_PREFIX, None, |k, _| {
        if let Some(id) = op_window::op_of_key(k) {
            if limits.is_live(id, now_ms, i64::MAX) {
                ids.push(id);
            }
        }
        true
    })?;
    // In time order, so that they expire from the front.
    ids.sort_unstable_by_key(|&id| op_id::made_ms(id));
    for id in ids {
        // Past the bound too (it may have been lowered): forgetting a live
        // id could count its retry twice; new ids wait for room instead.
        window.restore(id);
    }
    Ok(window)
}

fn decode_cell(value: &[u8]) -> Result<ShardSet, RequestError> {
    ShardSet::decode(value)
        .ok_or_else(|| refuse(ErrorCode::Storage, "stored counter cell is malformed"))
}

pub(crate) fn storage_error(e: tally_storage::Error) -> RequestError {
    refuse(ErrorCode::Storage, e.to_string())
}

impl CounterStore {
    /// Opens the store in `dir` on the real file system.
    pub fn open(
        dir: &Path,
        opts: tally_storage::Options,
        namespaces: Namespaces,
        identity: Identity,
        clock: Arc<dyn Clock>,
        limits: StoreLimits,
    ) -> tally_storage::Result<CounterStore> {
        CounterStore::open_with_fs(
            Arc::new(tally_storage::RealFs),
            dir,
            opts,
            namespaces,
            identity,
            clock,
            limits,
        )
    }

    /// Opens the store in `dir` on `fs`.
    pub fn open_with_fs(
        fs: Arc<dyn tally_storage::Fs>,
        dir: &Path,
        mut opts: tally_storage::Options,
        namespaces: Namespaces,
        identity: Identity,
        clock: Arc<dyn Clock>,
        limits: StoreLimits,
    ) -> tally_storage::Result<CounterStore> {
        let namespaces = Arc::new(RwLock::new(namespaces));
        opts.compaction_filter = Some(Arc::new(RetentionFilter {
            namespaces: namespaces.clone(),
            clock: clock.clone(),
            op_window: limits.op_window,
        }));
        let syncs = opts.durability == tally_storage::Durability::Sync;
        let db = Db::open_with_fs(fs, dir, opts, Arc::new(CounterMerge))?;
        let ops = Mutex::new(applied_op_ids(&db, limits.op_window, clock.now_ms())?);
        Ok(CounterStore {
            db,
            syncs,
            namespaces,
            identity,
            clock,
            limits,
            stripes: (0..LOCK_STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            increments: AtomicU64::new(0),
            ops,
            duplicates: AtomicU64::new(0),
            heavy_reads: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            ),
            relearning_before_ms: Mutex::new(None),
        })
    }

    /// The storage engine (for metrics and shutdown).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether writes must wait for an fsync ([`CounterStore::wait_durable`])
    /// before they are acknowledged (`sync` durability).
    pub fn syncs_writes(&self) -> bool {
        self.syncs
    }

    /// Returns once every write up to `point` is durable (an fsync, unless
    /// another already covered it; at once in `periodic` mode).
    pub fn wait_durable(&self, point: SyncPoint) -> Result<(), ErrorCode> {
        self.db.wait_durable(point).map_err(|e| {
            static NOT_DURABLE: LogLimit = LogLimit::every(Duration::from_secs(1));
            if let Some(held_back) = NOT_DURABLE.allow() {
                tracing::warn!(error = %e, held_back, "counter write could not be made durable");
            }
            ErrorCode::Storage
        })
    }

    /// Closes the engine (fsyncs the WAL).
    pub fn close(self) -> tally_storage::Result<()> {
        self.db.close()
    }

    /// This node's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Increments applied since start.
    pub fn increments(&self) -> u64 {
        self.increments.load(Ordering::Relaxed)
    }

    /// Increments since start whose op id had been applied already (each
    /// counted once, by its first attempt).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Live op ids this node holds.
    pub fn live_op_ids(&self) -> usize {
        self.ops.lock().len()
    }

    /// Replaces the namespaces (the metadata created one).
    pub fn set_namespaces(&self, namespaces: Namespaces) {
        *self.namespaces.write() = namespaces;
    }

    /// The namespaces (a copy).
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces.read().clone()
    }

    /// The namespaces, borrowed (do not hold across an `.await`).
    pub fn namespaces_read(&self) -> parking_lot::RwLockReadGuard<'_, Namespaces> {
        self.namespaces.read()
    }

    /// The clock the store checks timestamps and retention with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Request limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    fn check_key(&self, key: &[u8]) -> Result<(), RequestError> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes {
            return Err(refuse(
                ErrorCode::InvalidKey,
                format!(
                    "key of {} bytes; keys must be 1..={} bytes",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    fn check_increment<'n>(
        &self,
        namespaces: &'n Namespaces,
        item: &Increment,
        now_ms: i64,
    ) -> Result<&'n Namespace, RequestError> {
        let ns = namespaces.get(&item.namespace).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownNamespace,
                format!("unknown namespace {:?}", item.namespace),
            )
        })?;
        self.check_key(&item.key)?;
        let latest = now_ms.saturating_add(self.limits.max_future_skew.as_millis() as i64);
        if item.timestamp_ms < 0 || item.timestamp_ms > latest {
            return Err(refuse(
                ErrorCode::TimestampOutOfRange,
                format!(
                    "timestamp {} is before 1970 or more than {:?} ahead of this node's clock",
                    item.timestamp_ms, self.limits.max_future_skew
                ),
            ));
        }
        if let Some(id) = item.op_id {
            let skew = self.limits.max_future_skew.as_millis() as i64;
            if !self.limits.op_window.is_live(id, now_ms, skew) {
                return Err(refuse(
                    ErrorCode::OpIdExpired,
                    format!(
                        "op id {id:032x} was made at {} ms, not within {:?} before this node's clock \
                         nor {:?} after it (op ids carry their making time: see new_op_id)",
                        op_id::made_ms(id),
                        self.limits.op_window.span,
                        self.limits.max_future_skew
                    ),
                ));
            }
        }
        Ok(ns)
    }

    /// Checks one increment against the namespaces and limits, as of
    /// `now_ms`. Coordinators call it before routing; the leader checks
    /// again when it applies.
    pub fn check(&self, item: &Increment, now_ms: i64) -> Result<(), RequestError> {
        self.check_increment(&self.namespaces.read(), item, now_ms)
            .map(|_| ())
    }

    /// Applies a batch this node leads; one result per item, in order.
    /// Invalid items are refused alone; the valid ones are applied
    /// together, atomically.
    pub fn increment(&self, items: &[Increment]) -> Led {
        let (mut led, written) = self.write_group(&[items], Vec::new());
        let mut led = led.pop().unwrap_or_default();
        if let Err(code) = written.and_then(|point| self.wait_durable(point)) {
            unconfirmed(&mut led.results, code);
            led.cells.clear();
        }
        led
    }

    /// One storage write (one WAL record) for everything the write
    /// pipeline has queued: `leads`, batches this node leads (it raises its
    /// own shard of each cell), and `merges`, cell states from other nodes
    /// (replication, hints, read repair) merged blindly by the CRDT rule.
    /// Returns what each lead did, and whether the write happened
    /// (`Err(code)`: maybe not). The write is visible at once but, in
    /// `sync` mode, durable only after [`CounterStore::wait_durable`] with
    /// the returned point: the caller acknowledges nothing before.
    ///
    /// Callers validate merge cells first ([`valid_cell`]): one bad cell
    /// would fail the whole write.
    pub fn write_group(
        &self,
        leads: &[&[Increment]],
        merges: Vec<Vec<CellState>>,
    ) -> (Vec<Led>, Result<SyncPoint, ErrorCode>) {
        let now_ms = self.clock.now_ms();
        let mut led: Vec<Led> = leads
            .iter()
            .map(|b| Led {
                results: vec![ItemResult::Ok; b.len()],
                cells: Vec::new(),
            })
            .collect();
        // Op ids: one held already marks a retry, which raises its cells by
        // nothing, so that this node's current shards go to the replicas
        // again and the retry's acknowledgement means what the first one
        // would have; a new one is written with the cells it raised. The
        // window stays locked until the write is done.
        let mut ops = self.ops.lock();
        ops.expire(now_ms);
        // Items refused because they would overflow a cell: the group is
        // built again without them (rare: a sum near the i64 bounds).
        let mut overflowing: HashSet<(usize, usize)> = HashSet::new();
        let relearning_before_ms = *self.relearning_before_ms.lock();
        let (cells, valid, fresh, retries, outcome) = loop {
            let mut fresh: HashSet<u128> = HashSet::new();
            let mut retries = 0u64;
            // Same-cell deltas are summed: one shard update per cell per write.
            let mut cells: BTreeMap<Vec<u8>, CellUpdate> = BTreeMap::new();
            let mut valid = Vec::new();
            let namespaces = self.namespaces.read();
            for (b, items) in leads.iter().enumerate() {
                for (i, item) in items.iter().enumerate() {
                    if overflowing.contains(&(b, i)) {
                        led[b].results[i] = ItemResult::Failed(ErrorCode::Overflow);
                        continue;
                    }
                    match self.check_increment(&namespaces, item, now_ms) {
                        Ok(ns) => {
                            let retry = match item.op_id {
                                None => false,
                                Some(id) if ops.contains(id) || fresh.contains(&id) => true,
                                // Maybe applied by the previous incarnation,
                                // whose record of it was lost: not until the
                                // other replicas told.
                                Some(id)
                                    if relearning_before_ms
                                        .is_some_and(|t| op_id::made_ms(id) <= t) =>
                                {
                                    led[b].results[i] = ItemResult::Failed(ErrorCode::Unavailable);
                                    continue;
                                }
                                Some(id) => {
                                    if !ops.has_room(fresh.len() + 1) {
                                        led[b].results[i] =
                                            ItemResult::Failed(ErrorCode::Overloaded);
                                        continue;
                                    }
                                    fresh.insert(id);
                                    false
                                }
                            };
                            retries += u64::from(retry);
                            valid.push((b, i));
                            for (res, _) in &ns.resolutions {
                                let bucket = res.bucket_start(item.timestamp_ms);
                                let cell = cell_key::encode(&ns.name, &item.key, *res, bucket);
                                let e = cells.entry(cell).or_default();
                                if !retry {
                                    e.delta += i128::from(item.delta);
                                    e.events += u64::from(item.events);
                                }
                                e.batches.note(b as u32);
                            }
                        }
                        Err(e) => led[b].results[i] = ItemResult::Failed(e.code),
                    }
                }
            }
            drop(namespaces);
            if cells.is_empty() && merges.iter().all(|m| m.is_empty()) {
                return (led, Ok(SyncPoint::default()));
            }
            match self.apply(&mut cells, &merges, &fresh) {
                Err(Applied::Overflow(bad)) => {
                    let namespaces = self.namespaces.read();
                    for &(b, i) in &valid {
                        let item = &leads[b][i];
                        let Some(ns) = namespaces.get(&item.namespace) else {
                            continue;
                        };
                        let touches = ns.resolutions.iter().any(|(res, _)| {
                            let bucket = res.bucket_start(item.timestamp_ms);
                            bad.contains(&cell_key::encode(&ns.name, &item.key, *res, bucket))
                        });
                        if touches {
                            overflowing.insert((b, i));
                        }
                    }
                }
                Err(Applied::Failed {
                    code,
                    maybe_applied,
                }) => break (cells, valid, fresh, retries, Err((code, maybe_applied))),
                Ok(point) => break (cells, valid, fresh, retries, Ok(point)),
            }
        };
        if !matches!(outcome, Err((_, false))) {
            // Applied, or maybe: either way a retry must not count again.
            for id in fresh {
                // Room was checked above, under the same lock.
                let _ = ops.insert(id);
            }
        }
        drop(ops);
        for &(b, i) in &valid {
            led[b].results[i] = match &outcome {
                Ok(_) => ItemResult::Ok,
                Err((code, false)) => ItemResult::Failed(*code),
                Err((code, true)) => ItemResult::Indeterminate(*code),
            };
        }
        if outcome.is_ok() {
            self.increments
                .fetch_add(valid.len() as u64 - retries, Ordering::Relaxed);
            self.duplicates.fetch_add(retries, Ordering::Relaxed);
            // Each batch gets the states of its cells, in key order; the
            // keys move out of the map (copied only for cells shared by
            // several batches).
            for (key, update) in cells {
                let Some((last, rest)) = update.batches.split_last() else {
                    continue;
                };
                for b in rest {
                    led[b as usize].cells.push(CellState {
                        key: key.clone(),
                        value: update.state.clone(),
                    });
                }
                led[last as usize].cells.push(CellState {
                    key,
                    value: update.state,
                });
            }
            // The op ids travel with the states they raised (a retry's
            // too), so that the other replicas can tell this node which
            // ones it applied should it lose its own record.
            let leader = u64::from(self.identity.host_id);
            for &(b, i) in &valid {
                if let Some(id) = leads[b][i].op_id {
                    led[b].cells.push(CellState {
                        key: op_window::led_op_key(leader, id).to_vec(),
                        value: op_window::LED_OP_VALUE.to_vec(),
                    });
                }
            }
        }
        (led, outcome.map_err(|(code, _)| code))
    }

    /// The live op ids this replica holds as applied by host `leader`.
    pub fn led_op_ids(&self, leader: u64) -> Result<Vec<u128>, RequestError> {
        let now_ms = self.clock.now_ms();
        let skew = self.limits.max_future_skew.as_millis() as i64;
        let prefix = op_window::led_op_prefix(leader);
        let mut ids = Vec::new();
        self.db
            .scan_with(&prefix, None, |k, _| {
                if !k.starts_with(&prefix) {
                    return false;
                }
                if let Some((_, id)) = op_window::led_op_of_key(k) {
                    if self.limits.op_window.is_live(id, now_ms, skew) {
                        ids.push(id);
                    }
                }
                true
            })
            .map_err(storage_error)?;
        Ok(ids)
    }

    /// After an unclean stop: until [`CounterStore::finish_relearning`],
    /// op ids made at or before `before_ms` that this node does not hold
    /// are refused with `Unavailable` (nothing applied; the client retries
    /// with backoff). The previous incarnation may have applied one and
    /// lost its record with an unsynced WAL tail, while the other replicas
    /// already hold the states it raised: counting it again would count it
    /// twice.
    pub fn start_relearning(&self, before_ms: i64) {
        *self.relearning_before_ms.lock() = Some(before_ms);
    }

    /// Whether op ids are still being learned back.
    pub fn relearning(&self) -> bool {
        self.relearning_before_ms.lock().is_some()
    }

    /// Adds op ids another replica holds as applied by this node to the
    /// window, durably (one write), so that their retries count nothing.
    pub fn learn_op_ids(&self, ids: &[u128]) -> Result<usize, RequestError> {
        let now_ms = self.clock.now_ms();
        let skew = self.limits.max_future_skew.as_millis() as i64;
        let mut ops = self.ops.lock();
        let mut batch = WriteBatch::new();
        let mut learned = Vec::new();
        for &id in ids {
            if self.limits.op_window.is_live(id, now_ms, skew) && !ops.contains(id) {
                batch.put(op_window::op_key(id), op_window::OP_VALUE);
                learned.push(id);
            }
        }
        if learned.is_empty() {
            return Ok(0);
        }
        let point = self.db.write_unsynced(batch).map_err(storage_error)?;
        self.wait_durable(point)
            .map_err(|code| refuse(code, "learned op ids not durable"))?;
        for &id in &learned {
            // Past the bound too: forgetting an applied id could count it twice.
            ops.restore(id);
        }
        Ok(learned.len())
    }

    /// Ends [`CounterStore::start_relearning`]: every other replica told.
    pub fn finish_relearning(&self) {
        *self.relearning_before_ms.lock() = None;
    }

    /// Raises this node's shard of every cell under the cells' locks, and
    /// merges `merges`, in one storage write that also records the op ids
    /// `applied`. Fills in each cell's new state.
    /// `Err((code, maybe_applied))`.
    fn apply(
        &self,
        cells: &mut BTreeMap<Vec<u8>, CellUpdate>,
        merges: &[Vec<CellState>],
        applied: &HashSet<u128>,
    ) -> Result<SyncPoint, Applied> {
        // Locks taken in stripe order, so two groups cannot deadlock.
        let cell_stripes: Vec<usize> = cells.keys().map(|c| stripe_of(c)).collect();
        let mut stripes = cell_stripes.clone();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards: Vec<_> = stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let shard_id = self.identity.shard_id();
        let mut batch = WriteBatch::new();
        // The cache takes each new shard before the write, in the same
        // lookup that found the old one: the stripes stay locked until
        // the write is done, and a failed write takes them out again.
        let mut guard_of = Vec::with_capacity(cells.len());
        let mut unreadable = None;
        let mut overflowing = HashSet::new();
        for ((cell, update), stripe) in cells.iter_mut().zip(cell_stripes) {
            // Every cell's stripe is locked: the search cannot miss.
            let g = stripes.binary_search(&stripe).unwrap_or_default();
            guard_of.push(g);
            let own = &mut guards[g].own_shards;
            let new = match own.get_mut(cell) {
                Some(cached) => match raised(*cached, update) {
                    Some(new) => {
                        *cached = new;
                        new
                    }
                    None => {
                        overflowing.insert(cell.clone());
                        continue;
                    }
                },
                None => {
                    let stored = match self.stored_shard(cell, shard_id) {
                        Ok(stored) => stored,
                        Err(code) => {
                            unreadable = Some(code);
                            break;
                        }
                    };
                    let old = stored.unwrap_or(Shard {
                        id: shard_id,
                        clock: 0,
                        sum: 0,
                        count: 0,
                    });
                    let Some(new) = raised(old, update) else {
                        overflowing.insert(cell.clone());
                        continue;
                    };
                    if own.len() >= CACHED_SHARDS_PER_STRIPE {
                        own.clear();
                    }
                    own.insert(cell.clone(), new);
                    new
                }
            };
            update.state = ShardSet::encode_single(&new);
            batch.merge(cell, &update.state);
        }
        let outcome = match unreadable {
            Some(code) => Err(Applied::Failed {
                code,
                maybe_applied: false,
            }),
            None if !overflowing.is_empty() => Err(Applied::Overflow(overflowing)),
            None => {
                for cell in merges.iter().flatten() {
                    batch.merge(&cell.key, &cell.value);
                }
                for &id in applied {
                    batch.put(op_window::op_key(id), op_window::OP_VALUE);
                }
                self.db.write_unsynced(batch).map_err(|e| {
                    static FAILED: LogLimit = LogLimit::every(Duration::from_secs(1));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %e, held_back, "counter write failed");
                    }
                    let maybe_applied = !e.nothing_written();
                    let code = if matches!(e, tally_storage::Error::WriteStall { .. }) {
                        ErrorCode::Overloaded
                    } else {
                        ErrorCode::Storage
                    };
                    Applied::Failed {
                        code,
                        maybe_applied,
                    }
                })
            }
        };
        if outcome.is_err() {
            // Not written, or not known to be: the raised shards leave the
            // cache, and the next write reads the cell back.
            for (cell, g) in cells.keys().zip(guard_of) {
                guards[g].own_shards.remove(cell);
            }
        }
        outcome
    }

    /// Shard `shard_id` of `cell` as storage holds it.
    fn stored_shard(&self, cell: &[u8], shard_id: u64) -> Result<Option<Shard>, ErrorCode> {
        match self.db.get(cell) {
            Ok(Some(bytes)) => Ok(decode_cell(&bytes).map_err(|e| e.code)?.shard(shard_id)),
            Ok(None) => Ok(None),
            Err(e) => {
                static UNREADABLE: LogLimit = LogLimit::every(Duration::from_secs(1));
                if let Some(held_back) = UNREADABLE.allow() {
                    tracing::error!(error = %e, held_back, "reading a counter cell failed");
                }
                Err(ErrorCode::Storage)
            }
        }
    }

    /// The replica's cells in `ranges`, in key order, at most `max_cells`
    /// (more is an `InvalidRange` error: the caller asked for too much).
    /// A point range (one key, see `read_plan::point`) is one `get`, which
    /// the bloom filters make cheap; any other range is one scan.
    pub fn read_cells(
        &self,
        ranges: &[KeyRange],
        max_cells: usize,
    ) -> Result<Vec<CellState>, RequestError> {
        self.read_cells_up_to(ranges, max_cells)?.ok_or_else(|| {
            refuse(
                ErrorCode::InvalidRange,
                format!("the read spans more than {max_cells} cells"),
            )
        })
    }

    /// Like [`CounterStore::read_cells`], but `Ok(None)` past `max_cells`.
    pub fn read_cells_up_to(
        &self,
        ranges: &[KeyRange],
        max_cells: usize,
    ) -> Result<Option<Vec<CellState>>, RequestError> {
        let mut out = Vec::new();
        let mut spans: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for range in ranges {
            if read_plan::is_point(range) {
                if let Some(value) = self.db.get(&range.start).map_err(storage_error)? {
                    if !ShardSet::is_valid(&value) {
                        return Err(malformed_cell());
                    }
                    out.push(CellState {
                        key: range.start.clone(),
                        value,
                    });
                }
            } else if range.start < range.end {
                spans.push((&range.start, Some(&range.end)));
            }
        }
        if out.len() > max_cells {
            return Ok(None);
        }
        // The ranges of one plan are disjoint; in key order they make one
        // pass over each table.
        spans.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut bad = false;
        self.db
            .scan_ranges_with(&spans, |k, v| {
                if cell_key::is_system(k) {
                    return true;
                }
                if !ShardSet::is_valid(v) {
                    bad = true;
                    return false;
                }
                out.push(CellState {
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
                out.len() <= max_cells
            })
            .map_err(storage_error)?;
        if bad {
            return Err(malformed_cell());
        }
        if out.len() > max_cells {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// Cells a replica read gathers on the async worker itself: enough for a
/// total (one cell) or a 30-day stats (about 200), which come from
/// memtables and cached blocks in microseconds, where a hop to the
/// blocking pool and back costs two thread wake-ups. A larger read is
/// redone on the blocking pool so that it never holds a worker for long.
const INLINE_READ_CELLS: usize = 512;

/// The replica's cells in `ranges` (see [`CounterStore::read_cells`]),
/// on the worker when they are few, else on the blocking pool.
pub async fn read_cells_async(
    store: &Arc<CounterStore>,
    ranges: Vec<KeyRange>,
) -> Result<Vec<CellState>, RequestError> {
    if let Some(cells) = store.read_cells_up_to(&ranges, INLINE_READ_CELLS)? {
        return Ok(cells);
    }
    heavy_read(store, move |store| store.read_cells(&ranges, MAX_CELLS))
        .await
        .and_then(|r| r)
}

/// Runs `read` on the blocking pool once one of the store's heavy-read
/// slots is free. Cancel-safe: a caller that goes away before its turn
/// never starts the read.
pub async fn heavy_read<T: Send + 'static>(
    store: &Arc<CounterStore>,
    read: impl FnOnce(&CounterStore) -> T + Send + 'static,
) -> Result<T, RequestError> {
    let _slot = store
        .heavy_reads
        .acquire()
        .await
        .map_err(|_| refuse(ErrorCode::ShuttingDown, "the store is closing"))?;
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| refuse(ErrorCode::Internal, format!("read task failed: {e}")))
}

impl CounterStore {
    /// Deletes every cell whose token `keep` refuses (`tally cleanup`:
    /// the ranges this node no longer replicates after a join). Scans in
    /// chunks of 10,000 keys, each deleted in one write; returns how many.
    pub fn cleanup(&self, keep: impl Fn(u64) -> bool) -> Result<u64, RequestError> {
        const CHUNK: usize = 10_000;
        let mut from: Vec<u8> = Vec::new();
        let mut deleted = 0u64;
        loop {
            let mut doomed: Vec<Vec<u8>> = Vec::new();
            let mut seen = 0usize;
            let mut last: Option<Vec<u8>> = None;
            self.db
                .scan_with(&from, None, |k, _| {
                    seen += 1;
                    if let Some(token) = cell_key::token_of(k) {
                        if !keep(token) {
                            doomed.push(k.to_vec());
                        }
                    }
                    if seen >= CHUNK {
                        last = Some(k.to_vec());
                        return false;
                    }
                    true
                })
                .map_err(storage_error)?;
            if !doomed.is_empty() {
                let mut batch = WriteBatch::new();
                for k in &doomed {
                    batch.delete(k.as_slice());
                }
                self.db.write(batch).map_err(storage_error)?;
                deleted += doomed.len() as u64;
            }
            match last {
                Some(mut k) => {
                    k.push(0);
                    from = k;
                }
                None => return Ok(deleted),
            }
        }
    }

    /// Answers `plan` from this node's cells alone (no other replica).
    pub fn read_local(&self, plan: &ReadPlan) -> Result<Response, RequestError> {
        let cells = self.read_cells(&plan.ranges, MAX_CELLS)?;
        let sets: Vec<(&[u8], ShardSet)> = cells
            .iter()
            .map(|c| Ok((c.key.as_slice(), decode_cell(&c.value)?)))
            .collect::<Result<_, RequestError>>()?;
        Ok(plan.answer(sets.iter().map(|(k, s)| (*k, s)), self.clock.now_ms()))
    }
}

fn malformed_cell() -> RequestError {
    refuse(ErrorCode::Storage, "stored counter cell is malformed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn a_cell_names_each_of_its_batches_once_in_order() {
        let batches = |seq: &[u32]| {
            let mut b = Batches::default();
            for &x in seq {
                b.note(x);
            }
            b.split_last()
                .map(|(last, rest)| (rest.collect::<Vec<_>>(), last))
        };
        assert_eq!(batches(&[]), None);
        assert_eq!(batches(&[3, 3]), Some((vec![], 3)));
        assert_eq!(batches(&[0, 0, 1, 2, 2]), Some((vec![0, 1], 2)));
    }
    use tally_client::Resolution;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    #[derive(Debug)]
    struct ManualClock(std::sync::atomic::AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn expired_buckets_vanish_from_reads_and_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(100 * DAY)));
        let ns = Namespace::parse("short", "minute:1h, hour:2d, total").unwrap();
        let identity = Identity {
            host_id: 1,
            incarnation: 1,
        };
        let opts = tally_storage::Options {
            background_work: false,
            ..Default::default()
        };
        let store = CounterStore::open(
            dir.path(),
            opts,
            Namespaces::with([ns]),
            identity,
            clock.clone(),
            StoreLimits::default(),
        )
        .unwrap();
        let at = 100 * DAY - 10 * MIN;
        let item = Increment {
            namespace: "short".into(),
            key: b"k".to_vec(),
            timestamp_ms: at,
            delta: 3,
            events: 1,
            op_id: None,
        };
        assert_eq!(store.increment(&[item]).results, vec![ItemResult::Ok]);
        let points = |res: Resolution, from: i64, to: i64| {
            let plan = ReadPlan::range(
                &store.namespaces(),
                store.limits(),
                "short",
                b"k",
                res,
                from,
                to,
            )
            .unwrap();
            match store.read_local(&plan).unwrap() {
                Response::Range(points) => points.len(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(points(Resolution::Minute, at - HOUR, at + HOUR), 1);
        // Three hours later the minute bucket is past its 1 h retention.
        clock.0.store(100 * DAY + 3 * HOUR, Ordering::SeqCst);
        assert_eq!(points(Resolution::Minute, at - HOUR, at + HOUR), 0);
        assert_eq!(points(Resolution::Hour, at - DAY, at + DAY), 1);
        store.db().compact().unwrap();
        let minute_cell = cell_key::encode(
            "short",
            b"k",
            Resolution::Minute,
            Resolution::Minute.bucket_start(at),
        );
        let hour_cell = cell_key::encode(
            "short",
            b"k",
            Resolution::Hour,
            Resolution::Hour.bucket_start(at),
        );
        assert_eq!(
            store.db().get(&minute_cell).unwrap(),
            None,
            "compaction dropped the expired bucket"
        );
        assert!(store.db().get(&hour_cell).unwrap().is_some());
        let plan = ReadPlan::total(&store.namespaces(), store.limits(), "short", b"k", 0).unwrap();
        assert_eq!(
            store.read_local(&plan).unwrap(),
            Response::Total(tally_client::Count { sum: 3, count: 1 }),
            "total is kept forever"
        );
    }

    #[test]
    fn op_ids_count_once_survive_a_reopen_stay_out_of_cell_scans_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(100 * DAY)));
        let limits = StoreLimits {
            op_window: OpWindowLimits {
                span: Duration::from_secs(600),
                max_ids: 3,
            },
            ..StoreLimits::default()
        };
        let open = || {
            CounterStore::open(
                dir.path(),
                tally_storage::Options {
                    background_work: false,
                    ..Default::default()
                },
                Namespaces::with([Namespace::parse("t", "total").unwrap()]),
                Identity {
                    host_id: 1,
                    incarnation: 1,
                },
                clock.clone(),
                limits.clone(),
            )
            .unwrap()
        };
        let id = |n: u128| ((100 * DAY) as u128) << 80 | n;
        let item = |delta, op: u128| Increment {
            namespace: "t".into(),
            key: b"k".to_vec(),
            timestamp_ms: 100 * DAY,
            delta,
            events: 1,
            op_id: Some(op),
        };
        let total = |store: &CounterStore| {
            let plan = ReadPlan::total(&store.namespaces(), store.limits(), "t", b"k", 0).unwrap();
            match store.read_local(&plan).unwrap() {
                Response::Total(count) => (count.sum, count.count),
                other => panic!("{other:?}"),
            }
        };
        let store = open();
        // A retry in the same batch and in a later one: counted once.
        let led = store.increment(&[item(5, id(1)), item(5, id(1))]);
        assert_eq!(led.results, vec![ItemResult::Ok; 2]);
        assert_eq!(
            store.increment(&[item(5, id(1))]).results,
            vec![ItemResult::Ok]
        );
        assert_eq!(total(&store), (5, 1));
        assert_eq!((store.increments(), store.duplicates()), (1, 2));
        // The window holds three ids: a fourth waits for room.
        let led = store.increment(&[item(10, id(2)), item(100, id(3)), item(1000, id(4))]);
        assert_eq!(
            led.results,
            vec![
                ItemResult::Ok,
                ItemResult::Ok,
                ItemResult::Failed(ErrorCode::Overloaded)
            ]
        );
        assert_eq!(total(&store), (115, 3));
        // The op id records are no cells: a scan of every key sees the one
        // cell, and cleanup leaves them.
        let everything = KeyRange {
            start: Vec::new(),
            end: vec![0xFF; 64],
        };
        assert_eq!(store.read_cells(&[everything], 100).unwrap().len(), 1);
        assert_eq!(store.merkle_leaves(0, 0, 2).unwrap().len(), 4);
        drop(store);
        // Reopened, the window is read back: the retries still count once.
        let store = open();
        assert_eq!(store.live_op_ids(), 3);
        let led = store.increment(&[item(5, id(1)), item(10, id(2)), item(100, id(3))]);
        assert_eq!(led.results, vec![ItemResult::Ok; 3]);
        assert_eq!(total(&store), (115, 3));
        assert_eq!(
            store.cleanup(|_| false).unwrap(),
            1,
            "the cell, not the op ids"
        );
        assert!(store.db().get(&op_window::op_key(id(1))).unwrap().is_some());
        // Eleven minutes on, the ids are refused and compaction drops them.
        clock.0.store(100 * DAY + 11 * MIN, Ordering::SeqCst);
        assert_eq!(
            store.increment(&[item(5, id(1))]).results,
            vec![ItemResult::Failed(ErrorCode::OpIdExpired)]
        );
        store.db().compact().unwrap();
        assert_eq!(store.db().get(&op_window::op_key(id(1))).unwrap(), None);
        assert_eq!(store.live_op_ids(), 0);
    }

    #[test]
    fn sums_and_clocks_never_wrap_and_an_increment_that_cannot_raise_its_shard_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            host_id: 1,
            incarnation: 1,
        };
        let store = CounterStore::open(
            dir.path(),
            tally_storage::Options::default(),
            Namespaces::with([Namespace::parse("t", "minute:1d, total").unwrap()]),
            identity,
            Arc::new(SystemClock),
            StoreLimits::default(),
        )
        .unwrap();
        let item = |key: &str, delta| Increment {
            namespace: "t".into(),
            key: key.as_bytes().to_vec(),
            timestamp_ms: SystemClock.now_ms(),
            delta,
            events: 1,
            op_id: None,
        };
        let total = |key: &str| {
            let plan = ReadPlan::total(&store.namespaces(), store.limits(), "t", key.as_bytes(), 0)
                .unwrap();
            store.read_local(&plan).unwrap()
        };
        let sum_of = |key: &str| match total(key) {
            Response::Total(count) => count.sum,
            other => panic!("{other:?}"),
        };
        let overflow = vec![ItemResult::Failed(ErrorCode::Overflow)];

        // A sum at i64::MAX takes no more; once it wrapped to i64::MIN.
        assert_eq!(
            store.increment(&[item("k", i64::MAX)]).results,
            vec![ItemResult::Ok]
        );
        assert_eq!(store.increment(&[item("k", 1)]).results, overflow);
        assert_eq!(
            sum_of("k"),
            i64::MAX,
            "the refused increment changed nothing"
        );
        assert_eq!(
            store.increment(&[item("k", -1)]).results,
            vec![ItemResult::Ok]
        );
        // In one batch only the items of the cell that overflows are
        // refused; a batch's deltas are summed without wrapping (two
        // i64::MIN once summed to 0 and were acknowledged as no change).
        let led = store.increment(&[item("k", 5), item("other", 7)]);
        assert_eq!(
            led.results,
            vec![ItemResult::Failed(ErrorCode::Overflow), ItemResult::Ok]
        );
        let led = store.increment(&[item("k", i64::MIN), item("k", i64::MIN)]);
        assert_eq!(led.results, [overflow.clone(), overflow.clone()].concat());
        let led = store.increment(&[item("k", i64::MIN), item("k", i64::MAX)]);
        assert_eq!(led.results, vec![ItemResult::Ok, ItemResult::Ok]);
        assert_eq!(sum_of("k"), i64::MAX - 2);
        assert_eq!(sum_of("other"), 7);

        // A forged state that leaves this node's shard no clock room is
        // refused on the wire; one already stored makes increments fail,
        // never be acknowledged and counted nowhere.
        let now = SystemClock.now_ms();
        let cell = |key: &str| {
            cell_key::encode(
                "t",
                key.as_bytes(),
                Resolution::Total,
                Resolution::Total.bucket_start(now),
            )
        };
        let forged = |key: &str, clock| CellState {
            key: cell(key),
            value: ShardSet::encode_single(&Shard {
                id: identity.shard_id(),
                clock,
                sum: 0,
                count: 0,
            }),
        };
        assert!(!valid_cell(&forged("c", u64::MAX)));
        assert!(!valid_cell(&forged("c", MAX_CLOCK)));
        assert!(valid_cell(&forged("c", MAX_CLOCK - 1)));
        let (_, written) = store.write_group(&[], vec![vec![forged("c", MAX_CLOCK - 1)]]);
        written.unwrap();
        assert_eq!(
            store.increment(&[item("c", 1)]).results,
            vec![ItemResult::Ok]
        );
        assert_eq!(store.increment(&[item("c", 1)]).results, overflow);
        assert_eq!(sum_of("c"), 1);

        // Two shards whose sum leaves the i64 range: the read says so.
        let shard = |id, sum| Shard {
            id,
            clock: 1,
            sum,
            count: 1,
        };
        let mut set = ShardSet::single(shard(7 << 32, i64::MAX));
        set.merge(&ShardSet::single(shard(8 << 32, i64::MAX)));
        let big = CellState {
            key: cell("big"),
            value: set.encode(),
        };
        let (_, written) = store.write_group(&[], vec![vec![big]]);
        written.unwrap();
        match total("big") {
            Response::Error { code, .. } => assert_eq!(code, ErrorCode::Overflow),
            other => panic!("a wrapped sum was answered: {other:?}"),
        }
    }

    #[test]
    fn a_write_that_stalls_leaves_no_raised_shard_in_the_cache() {
        let fs = tally_storage::SimFs::new();
        let opts = tally_storage::Options {
            // Every write fills the WAL; one frozen memtable may wait.
            max_wal_bytes: 1,
            max_immutable_memtables: 1,
            write_stall_timeout: std::time::Duration::from_millis(50),
            ..Default::default()
        };
        let store = CounterStore::open_with_fs(
            Arc::new(fs.clone()),
            std::path::Path::new("/node"),
            opts,
            Namespaces::with([Namespace::parse("t", "total").unwrap()]),
            Identity {
                host_id: 1,
                incarnation: 1,
            },
            Arc::new(SystemClock),
            StoreLimits::default(),
        )
        .unwrap();
        let item = |delta| Increment {
            namespace: "t".into(),
            key: b"k".to_vec(),
            timestamp_ms: SystemClock.now_ms(),
            delta,
            events: 1,
            op_id: None,
        };
        let total = || {
            let plan = ReadPlan::total(&store.namespaces(), store.limits(), "t", b"k", 0).unwrap();
            match store.read_local(&plan).unwrap() {
                Response::Total(count) => count.sum,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(store.increment(&[item(1)]).results, vec![ItemResult::Ok]);
        // Flushes now take a second: the next write freezes the memtable,
        // the one after finds no room and stalls.
        fs.set_sync_delay(std::time::Duration::from_secs(1));
        assert_eq!(store.increment(&[item(10)]).results, vec![ItemResult::Ok]);
        assert_eq!(
            store.increment(&[item(100)]).results,
            vec![ItemResult::Failed(ErrorCode::Overloaded)]
        );
        fs.set_sync_delay(std::time::Duration::ZERO);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.increment(&[item(1000)]).results != vec![ItemResult::Ok] {
            assert!(std::time::Instant::now() < deadline, "writes never resumed");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            total(),
            1011,
            "the stalled increment of 100 was not counted"
        );
    }
}
