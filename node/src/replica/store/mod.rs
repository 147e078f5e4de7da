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
//!
//! The store's methods are spread by concern over child files: `lead`
//! (the write of one group), `read` (cell reads, cleanup), `op_ids` (the
//! op ids replicas record for a leader, and relearning them).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tally_client::{ErrorCode, Increment};
use tally_storage::{Db, SyncPoint};

use crate::clock::Clock;
use crate::counter::cell_key::{self, CellKind};
use crate::counter::cell_merge::{valid_value, CellMerge};
use crate::counter::limits::{refuse, RequestError, StoreLimits};
use crate::counter::namespace::Namespaces;
use crate::counter::shard_set::ShardSet;
use crate::log_limit::LogLimit;
use crate::replica::identity::Identity;
use crate::replica::op_window::{self, OpWindow};
use crate::replica::retention::RetentionFilter;
use crate::replica::stripes::{new_stripes, Stripe};
use crate::replica::trending::{Trending, TrendingConfig};

pub mod lead;
mod op_ids;
pub mod read;

/// Whether a cell state from the network may be merged: a well-formed
/// cell key, and a value of the kind the key names (a shard set whose
/// clocks leave room, or a sketch).
pub fn valid_cell(key: &[u8], value: &[u8]) -> bool {
    if op_window::led_op_of_key(key).is_some() {
        return value == op_window::LED_OP_VALUE;
    }
    if !cell_key::is_valid(key) {
        return false;
    }
    match cell_key::kind_of(key) {
        Some(CellKind::Counter) => ShardSet::is_valid(value) && ShardSet::clocks_have_room(value),
        Some(kind) => valid_value(kind, value),
        None => false,
    }
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
    /// Events the applied increments stand for.
    events: AtomicU64,
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
    /// Heavy-hitter summaries of the increments this node leads.
    trending: Trending,
}

pub(crate) fn decode_cell(value: &[u8]) -> Result<ShardSet, RequestError> {
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
        let db = Db::open_with_fs(fs, dir, opts, Arc::new(CellMerge))?;
        let ops = Mutex::new(OpWindow::load(&db, limits.op_window, clock.now_ms())?);
        Ok(CounterStore {
            db,
            syncs,
            namespaces,
            identity,
            clock,
            limits,
            stripes: new_stripes(),
            increments: AtomicU64::new(0),
            events: AtomicU64::new(0),
            ops,
            duplicates: AtomicU64::new(0),
            heavy_reads: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            ),
            relearning_before_ms: Mutex::new(None),
            trending: Trending::new(TrendingConfig::default()),
        })
    }

    /// The store, summarising what it leads as `config` says.
    pub fn with_trending(mut self, config: TrendingConfig) -> CounterStore {
        self.trending = Trending::new(config);
        self
    }

    /// The summaries of the increments this node led.
    pub fn trending(&self) -> &Trending {
        &self.trending
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

    /// Events the increments applied since start stand for (an
    /// aggregated increment stands for its `events`).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
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

    /// Checks one increment against the namespaces and limits, as of
    /// `now_ms`. Coordinators call it before routing; the leader checks
    /// again when it applies.
    pub fn check(&self, item: &Increment, now_ms: i64) -> Result<(), RequestError> {
        self.limits
            .check_increment(&self.namespaces.read(), item, now_ms)
            .map(|_| ())
    }
}

pub(crate) fn malformed_cell() -> RequestError {
    refuse(ErrorCode::Storage, "stored counter cell is malformed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::counter::namespace::Namespace;
    use crate::counter::op_id::OpWindowLimits;
    use crate::counter::read_plan::{ReadAnswer, ReadPlan};
    use crate::counter::shard_set::{Shard, MAX_CLOCK};
    use tally_client::{CellBatch, CellState, ItemResult, KeyRange};

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
    fn expired_buckets_vanish_from_reads_and_from_disk_counters_and_sketches_alike() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(100 * DAY)));
        let ns = Namespace::parse("short", "minute:1h, hour:2d, total").unwrap();
        let uniques = Namespace::parse("uniques", "distinct, minute:1h, hour:2d, total").unwrap();
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
            Namespaces::with([ns, uniques]),
            identity,
            clock.clone(),
            StoreLimits::default(),
        )
        .unwrap();
        let at = 100 * DAY - 10 * MIN;
        // A distinct namespace's cells, as a coordinator's add sends them.
        let sketch_cell = |res: Resolution| {
            let mut s = crate::counter::hll::Sketch::new(14);
            s.add(b"ann");
            let key = cell_key::encode(
                CellKind::Distinct,
                "uniques",
                b"k",
                res,
                res.bucket_start(at),
            );
            CellState {
                key,
                value: s.encode(),
            }
        };
        let sketches: Vec<CellState> = [Resolution::Minute, Resolution::Hour, Resolution::Total]
            .into_iter()
            .map(sketch_cell)
            .collect();
        assert!(sketches.iter().all(|c| valid_cell(&c.key, &c.value)));
        let (_, written) = store.write_group(&[], vec![sketches.clone().into()]);
        store.wait_durable(written.unwrap()).unwrap();
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
                ReadAnswer::Range(points) => points.len(),
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
            CellKind::Counter,
            "short",
            b"k",
            Resolution::Minute,
            Resolution::Minute.bucket_start(at),
        );
        let hour_cell = cell_key::encode(
            CellKind::Counter,
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
            store.db().get(&sketches[0].key).unwrap(),
            None,
            "compaction dropped the expired distinct bucket"
        );
        assert_eq!(
            store.db().get(&sketches[1].key).unwrap(),
            Some(sketches[1].value.clone()),
            "the distinct hour bucket is kept"
        );
        let plan = ReadPlan::total(&store.namespaces(), store.limits(), "short", b"k", 0).unwrap();
        assert_eq!(
            store.read_local(&plan).unwrap(),
            ReadAnswer::Total(tally_client::Count { sum: 3, count: 1 }),
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
                ReadAnswer::Total(count) => (count.sum, count.count),
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
        assert_eq!(store.events(), 1);
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
            store.read_local(&plan)
        };
        let sum_of = |key: &str| match total(key).unwrap() {
            ReadAnswer::Total(count) => count.sum,
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
                CellKind::Counter,
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
        let valid = |c: &CellState| valid_cell(&c.key, &c.value);
        assert!(!valid(&forged("c", u64::MAX)));
        assert!(!valid(&forged("c", MAX_CLOCK)));
        assert!(valid(&forged("c", MAX_CLOCK - 1)));
        let (_, written) =
            store.write_group(&[], vec![CellBatch::from(vec![forged("c", MAX_CLOCK - 1)])]);
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
        let (_, written) = store.write_group(&[], vec![CellBatch::from(vec![big])]);
        written.unwrap();
        match total("big") {
            Err(RequestError { code, .. }) => assert_eq!(code, ErrorCode::Overflow),
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
                ReadAnswer::Total(count) => count.sum,
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
