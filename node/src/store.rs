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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tally_client::{Count, ErrorCode, Increment, ItemResult, Point, Resolution};
use tally_storage::{CompactionFilter, Db, FilterDecision, WriteBatch};

use crate::cell_key;
use crate::identity::Identity;
use crate::namespace::{Namespace, Namespaces};
use crate::shard_set::{CounterMerge, Shard, ShardSet};

/// Where time comes from (injected, so tests can move it).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A request the store refuses, with the code to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    /// The wire code.
    pub code: ErrorCode,
    /// Details.
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> RequestError {
    RequestError {
        code,
        message: message.into(),
    }
}

/// Limits on what one request may ask.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Largest accepted key.
    pub max_key_bytes: usize,
    /// How far in the future a timestamp may lie.
    pub max_future_skew: Duration,
    /// Most buckets one range read may return.
    pub max_range_buckets: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_key_bytes: 1024,
            max_future_skew: Duration::from_secs(300),
            max_range_buckets: 100_000,
        }
    }
}

const LOCK_STRIPES: usize = 4096;
/// Own shards remembered per stripe (about a million cells in all).
const CACHED_SHARDS_PER_STRIPE: usize = 256;

/// One lock stripe: it serializes updates of its cells, and remembers this
/// node's shard of recently updated cells so that an increment need not
/// read the cell back from storage. Only this node writes its own shard,
/// and only under this lock, so a remembered shard is always current.
#[derive(Debug, Default)]
struct Stripe {
    own_shards: std::collections::HashMap<Vec<u8>, Shard>,
}

/// Counters of one node.
#[derive(Debug)]
pub struct CounterStore {
    db: Db,
    namespaces: Arc<RwLock<Namespaces>>,
    identity: Identity,
    clock: Arc<dyn Clock>,
    limits: StoreLimits,
    stripes: Vec<Mutex<Stripe>>,
    increments: AtomicU64,
}

/// Drops buckets past their namespace's retention during compaction.
#[derive(Debug)]
struct RetentionFilter {
    namespaces: Arc<RwLock<Namespaces>>,
    clock: Arc<dyn Clock>,
}

fn expired(ns: &Namespace, res: Resolution, bucket_start_ms: i64, now_ms: i64) -> bool {
    match (ns.retention(res), res.width_ms()) {
        (Some(keep), Some(width)) => {
            bucket_start_ms
                .saturating_add(width)
                .saturating_add(keep.as_millis() as i64)
                < now_ms
        }
        _ => false,
    }
}

impl CompactionFilter for RetentionFilter {
    fn decide(&self, key: &[u8], _value: &[u8]) -> FilterDecision {
        let Some(cell) = cell_key::decode(key) else {
            return FilterDecision::Keep;
        };
        let namespaces = self.namespaces.read();
        match namespaces.get(&cell.namespace) {
            Some(ns)
                if expired(
                    ns,
                    cell.resolution,
                    cell.bucket_start_ms,
                    self.clock.now_ms(),
                ) =>
            {
                FilterDecision::Remove
            }
            _ => FilterDecision::Keep,
        }
    }
}

fn stripe_of(cell: &[u8]) -> usize {
    (crc32fast::hash(cell) as usize) % LOCK_STRIPES
}

fn decode_cell(value: &[u8]) -> Result<ShardSet, RequestError> {
    ShardSet::decode(value)
        .ok_or_else(|| refuse(ErrorCode::Storage, "stored counter cell is malformed"))
}

fn storage_error(e: tally_storage::Error) -> RequestError {
    refuse(ErrorCode::Storage, e.to_string())
}

impl CounterStore {
    /// Opens the store in `dir`.
    pub fn open(
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
        }));
        let db = Db::open(dir, opts, Arc::new(CounterMerge))?;
        Ok(CounterStore {
            db,
            namespaces,
            identity,
            clock,
            limits,
            stripes: (0..LOCK_STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            increments: AtomicU64::new(0),
        })
    }

    /// The storage engine (for metrics and shutdown).
    pub fn db(&self) -> &Db {
        &self.db
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

    /// The namespaces.
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces.read().clone()
    }

    fn namespace(&self, name: &str) -> Result<Namespace, RequestError> {
        self.namespaces.read().get(name).cloned().ok_or_else(|| {
            refuse(
                ErrorCode::UnknownNamespace,
                format!("unknown namespace {name:?}"),
            )
        })
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
        Ok(ns)
    }

    /// Applies a batch; one result per item, in order. Invalid items are
    /// refused alone; the valid ones are applied together, atomically.
    pub fn increment(&self, items: &[Increment]) -> Vec<ItemResult> {
        self.increment_many(&[items]).pop().unwrap_or_default()
    }

    /// Applies several batches as one storage write (one WAL record, one
    /// fsync in `sync` mode): the node's write pipeline groups concurrent
    /// requests this way. One result list per batch.
    pub fn increment_many(&self, batches: &[&[Increment]]) -> Vec<Vec<ItemResult>> {
        let now_ms = self.clock.now_ms();
        let namespaces = self.namespaces.read();
        let mut results: Vec<Vec<ItemResult>> = batches
            .iter()
            .map(|b| vec![ItemResult::Ok; b.len()])
            .collect();
        // Sum same-cell deltas: cell -> (delta, increments).
        let mut cells: BTreeMap<Vec<u8>, (i64, u64)> = BTreeMap::new();
        let mut valid = Vec::new();
        for (b, items) in batches.iter().enumerate() {
            for (i, item) in items.iter().enumerate() {
                match self.check_increment(&namespaces, item, now_ms) {
                    Ok(ns) => {
                        valid.push((b, i));
                        for (res, _) in &ns.resolutions {
                            let bucket = res.bucket_start(item.timestamp_ms);
                            let cell = cell_key::encode(&ns.name, &item.key, *res, bucket);
                            let e = cells.entry(cell).or_insert((0, 0));
                            e.0 = e.0.wrapping_add(item.delta);
                            e.1 += 1;
                        }
                    }
                    Err(e) => results[b][i] = ItemResult::Failed(e.code),
                }
            }
        }
        drop(namespaces);
        if cells.is_empty() {
            return results;
        }
        let outcome = self.apply(&cells);
        for &(b, i) in &valid {
            results[b][i] = match &outcome {
                Ok(()) => ItemResult::Ok,
                Err((code, false)) => ItemResult::Failed(*code),
                Err((code, true)) => ItemResult::Indeterminate(*code),
            };
        }
        if outcome.is_ok() {
            self.increments
                .fetch_add(valid.len() as u64, Ordering::Relaxed);
        }
        results
    }

    /// Raises this node's shard of every cell under the cells' locks.
    /// `Err((code, maybe_applied))`.
    fn apply(&self, cells: &BTreeMap<Vec<u8>, (i64, u64)>) -> Result<(), (ErrorCode, bool)> {
        let stripes: BTreeSet<usize> = cells.keys().map(|c| stripe_of(c)).collect();
        let mut guards: BTreeMap<usize, _> = stripes
            .iter()
            .map(|&s| (s, self.stripes[s].lock()))
            .collect();
        let shard_id = self.identity.shard_id();
        let mut batch = WriteBatch::new();
        let mut updated = Vec::with_capacity(cells.len());
        for (cell, &(delta, n)) in cells {
            let stripe = stripe_of(cell);
            let cached = guards
                .get(&stripe)
                .and_then(|g| g.own_shards.get(cell).copied());
            let current = match cached {
                Some(shard) => Some(shard),
                None => match self.db.get(cell) {
                    Ok(Some(bytes)) => decode_cell(&bytes)
                        .map_err(|e| (e.code, false))?
                        .shard(shard_id),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "reading a counter cell failed");
                        return Err((ErrorCode::Storage, false));
                    }
                },
            };
            let old = current.unwrap_or(Shard {
                id: shard_id,
                clock: 0,
                sum: 0,
                count: 0,
            });
            let new = Shard {
                id: shard_id,
                clock: old.clock + 1,
                sum: old.sum.wrapping_add(delta),
                count: old.count + n,
            };
            batch.merge(cell.clone(), ShardSet::single(new).encode());
            updated.push((stripe, cell, new));
        }
        let written = self.db.write(batch);
        for (stripe, cell, new) in updated {
            if let Some(guard) = guards.get_mut(&stripe) {
                if written.is_ok() {
                    if guard.own_shards.len() >= CACHED_SHARDS_PER_STRIPE {
                        guard.own_shards.clear();
                    }
                    guard.own_shards.insert(cell.clone(), new);
                } else {
                    // The write may or may not have landed: read it back next time.
                    guard.own_shards.remove(cell);
                }
            }
        }
        written.map_err(|e| {
            tracing::warn!(error = %e, "counter write failed");
            let maybe_applied = !matches!(
                e,
                tally_storage::Error::WriteStall { .. }
                    | tally_storage::Error::Poisoned { .. }
                    | tally_storage::Error::InvalidArgument(_)
            );
            let code = if matches!(e, tally_storage::Error::WriteStall { .. }) {
                ErrorCode::Overloaded
            } else {
                ErrorCode::Storage
            };
            (code, maybe_applied)
        })
    }

    /// The all-time total of a key (from its `total` cell, or the sum of its
    /// day cells if the namespace keeps no total).
    pub fn total(&self, namespace: &str, key: &[u8]) -> Result<Count, RequestError> {
        let ns = self.namespace(namespace)?;
        self.check_key(key)?;
        if !ns.keeps(Resolution::Total) {
            let (total, _) = self.stats(
                namespace,
                key,
                0,
                self.clock.now_ms().saturating_add(86_400_000),
            )?;
            return Ok(total);
        }
        let cell = cell_key::encode(namespace, key, Resolution::Total, 0);
        match self.db.get(&cell).map_err(storage_error)? {
            Some(bytes) => {
                let set = decode_cell(&bytes)?;
                Ok(Count {
                    sum: set.sum(),
                    count: set.count(),
                })
            }
            None => Ok(Count::default()),
        }
    }

    /// The non-empty buckets of a key in `[start_ms, end_ms)` at `resolution`.
    pub fn range(
        &self,
        namespace: &str,
        key: &[u8],
        resolution: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, RequestError> {
        let ns = self.namespace(namespace)?;
        self.check_key(key)?;
        if !ns.keeps(resolution) {
            return Err(refuse(
                ErrorCode::ResolutionNotKept,
                format!("namespace {namespace} does not keep {resolution}"),
            ));
        }
        if start_ms >= end_ms {
            return Err(refuse(
                ErrorCode::InvalidRange,
                format!("empty range [{start_ms}, {end_ms})"),
            ));
        }
        if resolution == Resolution::Total {
            let c = self.total(namespace, key)?;
            return Ok(if c.count == 0 {
                vec![]
            } else {
                vec![Point {
                    bucket_start_ms: 0,
                    sum: c.sum,
                    count: c.count,
                }]
            });
        }
        let width = resolution.width_ms().unwrap_or(1);
        let from = resolution.bucket_start(start_ms);
        if (end_ms - from) / width > self.limits.max_range_buckets {
            return Err(refuse(
                ErrorCode::InvalidRange,
                format!(
                    "range spans more than {} {resolution} buckets",
                    self.limits.max_range_buckets
                ),
            ));
        }
        let now = self.clock.now_ms();
        let mut points = Vec::new();
        self.scan_cells(namespace, key, resolution, from, end_ms, |bucket, set| {
            if !expired(&ns, resolution, bucket, now) {
                points.push(Point {
                    bucket_start_ms: bucket,
                    sum: set.sum(),
                    count: set.count(),
                });
            }
        })?;
        Ok(points)
    }

    fn scan_cells(
        &self,
        namespace: &str,
        key: &[u8],
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
        mut visit: impl FnMut(i64, &ShardSet),
    ) -> Result<u32, RequestError> {
        let (start, end) = cell_key::bucket_range(namespace, key, resolution, from_ms, to_ms);
        let mut cells = 0u32;
        let mut bad = None;
        self.db
            .scan_with(&start, Some(&end), |k, v| {
                match (cell_key::bucket_of(k), ShardSet::decode(v)) {
                    (Some(bucket), Some(set)) => {
                        cells += 1;
                        visit(bucket, &set);
                        true
                    }
                    _ => {
                        bad = Some(refuse(
                            ErrorCode::Storage,
                            "stored counter cell is malformed",
                        ));
                        false
                    }
                }
            })
            .map_err(storage_error)?;
        match bad {
            Some(e) => Err(e),
            None => Ok(cells),
        }
    }

    /// Sum and count over `[start_ms, end_ms)` (widened to whole buckets of
    /// the finest kept resolution), read from the fewest cells: whole days
    /// inside, hours at the edges, minutes at the very edges. Returns the
    /// total and the number of cells read.
    pub fn stats(
        &self,
        namespace: &str,
        key: &[u8],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(Count, u32), RequestError> {
        let ns = self.namespace(namespace)?;
        self.check_key(key)?;
        if start_ms >= end_ms {
            return Err(refuse(
                ErrorCode::InvalidRange,
                format!("empty range [{start_ms}, {end_ms})"),
            ));
        }
        let kept: Vec<Resolution> = ns
            .resolutions
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| r.width_ms().is_some())
            .collect();
        if kept.is_empty() {
            return Err(refuse(
                ErrorCode::ResolutionNotKept,
                format!("namespace {namespace} keeps no time buckets"),
            ));
        }
        let mut total = Count::default();
        let mut cells = 0;
        for (res, from, to) in cover(&kept, start_ms, end_ms) {
            cells += self.scan_cells(namespace, key, res, from, to, |_, set| {
                total.sum = total.sum.wrapping_add(set.sum());
                total.count = total.count.wrapping_add(set.count());
            })?;
        }
        Ok((total, cells))
    }
}

fn floor_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w
}

fn ceil_to(t: i64, w: i64) -> i64 {
    floor_to(t.saturating_add(w - 1), w)
}

/// Covers `[start, end)`, widened to the finest resolution's buckets, with
/// the coarsest buckets that fit: `(resolution, from, to)` segments, each a
/// run of whole buckets. `kept` is finest first.
pub fn cover(kept: &[Resolution], start: i64, end: i64) -> Vec<(Resolution, i64, i64)> {
    fn go(kept: &[Resolution], s: i64, e: i64, out: &mut Vec<(Resolution, i64, i64)>) {
        let Some((&coarsest, finer)) = kept.split_last() else {
            return;
        };
        let w = coarsest.width_ms().unwrap_or(1);
        if finer.is_empty() {
            if s < e {
                out.push((coarsest, s, e));
            }
            return;
        }
        let (a, b) = (ceil_to(s, w), floor_to(e, w));
        if a >= b {
            go(finer, s, e, out);
            return;
        }
        go(finer, s, a, out);
        out.push((coarsest, a, b));
        go(finer, b, e, out);
    }
    let finest = kept[0].width_ms().unwrap_or(1);
    let mut out = Vec::new();
    go(
        kept,
        floor_to(start, finest),
        ceil_to(end, finest),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            op_id: None,
        };
        assert_eq!(store.increment(&[item]), vec![ItemResult::Ok]);
        assert_eq!(
            store
                .range("short", b"k", Resolution::Minute, at - HOUR, at + HOUR)
                .unwrap()
                .len(),
            1
        );
        // Three hours later the minute bucket is past its 1 h retention.
        clock.0.store(100 * DAY + 3 * HOUR, Ordering::SeqCst);
        assert!(store
            .range("short", b"k", Resolution::Minute, at - HOUR, at + HOUR)
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .range("short", b"k", Resolution::Hour, at - DAY, at + DAY)
                .unwrap()
                .len(),
            1
        );
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
        assert_eq!(
            store.total("short", b"k").unwrap().sum,
            3,
            "total is kept forever"
        );
    }

    #[test]
    fn cover_uses_days_inside_hours_and_minutes_at_the_edges() {
        let kept = [Resolution::Minute, Resolution::Hour, Resolution::Day];
        let start = 10 * DAY + 5 * HOUR + 7 * MIN;
        let end = 40 * DAY + 3 * HOUR + 2 * MIN;
        let plan = cover(&kept, start, end);
        // Contiguous, ordered, exactly the widened range.
        assert_eq!(plan.first().map(|p| p.1), Some(start));
        assert_eq!(plan.last().map(|p| p.2), Some(end));
        for pair in plan.windows(2) {
            assert_eq!(pair[0].2, pair[1].1);
        }
        let cells: i64 = plan
            .iter()
            .map(|(r, a, b)| (b - a) / r.width_ms().unwrap())
            .sum();
        // 53 minutes + 18 hours + 29 days + 3 hours + 2 minutes.
        assert_eq!(cells, 53 + 18 + 29 + 3 + 2);
    }

    #[test]
    fn cover_of_thirty_days_reads_about_a_hundred_cells_at_most() {
        let kept = [Resolution::Minute, Resolution::Hour, Resolution::Day];
        let start = 3 * DAY + 59 * MIN + 13 * HOUR;
        let end = start + 30 * DAY;
        let cells: i64 = cover(&kept, start, end)
            .iter()
            .map(|(r, a, b)| (b - a) / r.width_ms().unwrap())
            .sum();
        assert!(cells <= 29 + 2 * 23 + 2 * 59, "{cells} cells");
    }
}
