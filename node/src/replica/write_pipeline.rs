//! [`WritePipeline`]: every write of the node goes through one queue,
//! and whatever has queued up is applied as one storage write (a write
//! group); in `sync` mode a syncer thread fsyncs behind it.
//!
//! Why one queue: with a storage call per request, 50 concurrent
//! connections meant 50 threads taking turns through the engine's group
//! commit, and the profile showed more time in futex wake-ups than in
//! counting. One writer at a time drains the queue (up to
//! `MAX_GROUP_REQUESTS` requests or `MAX_GROUP_ITEMS` increments and
//! cells), applies it as one write batch, and answers each request.
//!
//! Who writes: the queue has one writer role. A request that finds it
//! free takes it; when the group is small and the engine has room (no
//! memtable to rotate, no stall, no fsync backlog), the request's own
//! async worker writes the group, after one yield so that the requests
//! ready on that worker join it. Otherwise the writer thread takes the
//! role and keeps it while the queue is busy. Handing every group to a
//! thread cost two thread wake-ups per group on each node (to the writer
//! and back), which at one increment per request and three nodes on one
//! core was a tenth of the CPU; a worker writing a small group spends
//! less than those wake-ups cost, the same trade as small reads made
//! inline (`replica::store::read`). Large groups, and any under
//! back-pressure, still go to the thread, so a worker never blocks long.
//!
//! In `sync` mode the writer does not wait for the fsync: it hands the
//! group to the syncer thread and goes on with the next one, so counting
//! and fsyncing overlap (pipelined group commit), and one fsync covers
//! every group written while the previous one ran. A merge is
//! acknowledged only after its fsync. A lead is answered at once with its
//! results and cell states, so the coordinator can send the states to the
//! other replicas while the local fsync runs, and a [`Durable`] that
//! resolves after it; nothing is acknowledged to a client before.
//!
//! Two kinds of job share the queue: batches this node leads (it raises
//! its own shard of each cell and returns the new states for the other
//! replicas) and cell states from other nodes to merge (replication, hint
//! replay, read repair).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Condvar, Mutex};
use tally_client::{CellBatch, ErrorCode, Increment, ItemResult};
use tally_storage::SyncPoint;
use tokio::sync::{oneshot, Notify};

use crate::replica::store::lead::{unconfirmed, Led};
use crate::replica::store::CounterStore;

const MAX_GROUP_REQUESTS: usize = 512;
const MAX_GROUP_ITEMS: usize = 20_000;
/// A group of at most this many increments and cells may be written by
/// an async worker; a larger one goes to the writer thread.
const INLINE_GROUP_ITEMS: usize = 512;
/// A group an async worker writes takes at most this many (the requests
/// that joined during its yield; the rest go to the thread).
const WORKER_GROUP_ITEMS: usize = 4 * INLINE_GROUP_ITEMS;
/// Storage bytes a group of [`INLINE_GROUP_ITEMS`] may take, at most (for
/// [`tally_storage::Db::writes_freely`]).
const INLINE_GROUP_BYTES: usize = WORKER_GROUP_ITEMS * 512;
/// Groups written but not yet fsynced, at most: past this the writer
/// waits for the syncer (the disk is the bottleneck; more would only
/// queue memory).
const MAX_UNSYNCED_GROUPS: usize = 64;

enum Job {
    Lead(Vec<Increment>, oneshot::Sender<(Led, Durable)>),
    Merge(CellBatch, oneshot::Sender<Result<(), ErrorCode>>),
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Lead(items, _) => items.len(),
            Job::Merge(cells, _) => cells.len(),
        }
    }
}

/// Resolves once a led write is durable on this node (`Ok`), or could
/// not be made durable (`Err`: it may still be on disk).
#[derive(Debug)]
pub struct Durable(Option<oneshot::Receiver<Result<(), ErrorCode>>>);

impl Durable {
    fn now() -> Durable {
        Durable(None)
    }

    /// Waits for the fsync.
    pub async fn wait(self) -> Result<(), ErrorCode> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or(Err(ErrorCode::Internal)),
        }
    }
}

/// A written group waiting for its fsync: who to tell.
struct Unsynced {
    point: SyncPoint,
    leads: Vec<oneshot::Sender<Result<(), ErrorCode>>>,
    merges: Vec<oneshot::Sender<Result<(), ErrorCode>>>,
}

/// The write thread and the syncer, to wait for at shutdown.
#[derive(Debug)]
pub struct WriterThreads(Vec<std::thread::JoinHandle<()>>);

impl WriterThreads {
    /// Waits until the threads ended (every [`WritePipeline`] handle was
    /// dropped and the queued writes are done).
    pub fn join(self) {
        for thread in self.0 {
            let _ = thread.join();
        }
    }
}

/// What queueing a job did.
enum Queued {
    /// Another writer has the role and will take the job.
    Joined,
    /// This request took the role, to write on its worker.
    ForThisWorker,
    /// This request gave the role to the writer thread.
    ForTheThread,
    /// The queue is full.
    NoRoom,
}

/// Who holds the queue's writer role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nobody: the next request takes it.
    Free,
    /// A request's async worker, which writes the next group itself.
    Worker,
    /// The writer thread, until it finds the queue empty.
    Thread,
}

struct Queue {
    jobs: Vec<Job>,
    role: Role,
    /// Every handle was dropped: the thread ends once the queue is empty.
    closed: bool,
}

struct Shared {
    store: Arc<CounterStore>,
    queue: Mutex<Queue>,
    /// Wakes the writer thread when it is given the role.
    thread_turn: Condvar,
    /// Wakes requests waiting for room in the queue.
    room: Notify,
    depth: usize,
    syncer: Option<mpsc::SyncSender<Unsynced>>,
    /// Groups handed to the syncer and not yet fsynced.
    unsynced: Arc<AtomicUsize>,
    /// Groups written by async workers and by the thread.
    worker_groups: AtomicU64,
    thread_groups: AtomicU64,
}

/// Marks the queue closed when the last handle goes.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.queue.lock().closed = true;
        self.0.thread_turn.notify_all();
    }
}

/// Handle to the node's write queue; cheap to clone.
#[derive(Clone)]
pub struct WritePipeline {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl std::fmt::Debug for WritePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritePipeline")
            .field("depth", &self.shared.depth)
            .finish_non_exhaustive()
    }
}

/// Hands the role on if a request that took it for its worker is
/// dropped before it wrote (its task was cancelled during the yield).
struct WorkerTurn<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for WorkerTurn<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.shared.queue.lock();
            queue.role = Role::Thread;
            drop(queue);
            self.shared.thread_turn.notify_one();
        }
    }
}

impl WritePipeline {
    /// Starts the write thread (and in `sync` mode the syncer) over
    /// `store`, with room for `queue_depth` requests. They stop, letting
    /// go of `store`, when every handle is dropped;
    /// [`WriterThreads::join`] waits for that.
    pub fn start(
        store: Arc<CounterStore>,
        queue_depth: usize,
    ) -> std::io::Result<(WritePipeline, WriterThreads)> {
        let mut threads = Vec::new();
        let (syncer, unsynced) = if store.syncs_writes() {
            let (to_sync, unsynced) = mpsc::sync_channel::<Unsynced>(MAX_UNSYNCED_GROUPS);
            (Some(to_sync), Some(unsynced))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            store,
            queue: Mutex::new(Queue {
                jobs: Vec::with_capacity(64),
                role: Role::Free,
                closed: false,
            }),
            thread_turn: Condvar::new(),
            room: Notify::new(),
            depth: queue_depth.max(1),
            syncer,
            unsynced: Arc::new(AtomicUsize::new(0)),
            worker_groups: AtomicU64::new(0),
            thread_groups: AtomicU64::new(0),
        });
        if let Some(unsynced) = unsynced {
            // Not `shared`: the syncer ends when the last sender (in
            // `shared`) is dropped.
            let (store, count) = (shared.store.clone(), shared.unsynced.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("tally-syncer".into())
                    .spawn(move || sync_loop(&store, &count, &unsynced))?,
            );
        }
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("tally-writer".into())
                .spawn(move || thread_loop(&s))?,
        );
        let closer = Arc::new(Closer(shared.clone()));
        Ok((
            WritePipeline {
                shared,
                _closer: closer,
            },
            WriterThreads(threads),
        ))
    }

    /// Queues `job`, waiting for room; `false` once the pipeline closed.
    /// Takes the writer role if it is free, and writes the group on this
    /// worker when that is cheap.
    async fn submit(&self, job: Job) -> bool {
        let shared = &*self.shared;
        let mut job = Some(job);
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // The lock is held in this block only, never across an await.
            let queued = {
                let mut queue = shared.queue.lock();
                if queue.closed {
                    return false;
                }
                if queue.jobs.len() < shared.depth {
                    queue.jobs.extend(job.take());
                    if queue.role != Role::Free {
                        Queued::Joined
                    } else if shared.worker_may_write(&queue) {
                        queue.role = Role::Worker;
                        Queued::ForThisWorker
                    } else {
                        queue.role = Role::Thread;
                        Queued::ForTheThread
                    }
                } else {
                    Queued::NoRoom
                }
            };
            match queued {
                Queued::Joined => return true,
                Queued::ForTheThread => {
                    shared.thread_turn.notify_one();
                    return true;
                }
                Queued::ForThisWorker => break,
                Queued::NoRoom => room.await,
            }
        }
        let mut turn = WorkerTurn {
            shared,
            armed: true,
        };
        // Let the requests ready on this worker queue theirs first: they
        // join this group instead of each writing one.
        tokio::task::yield_now().await;
        let mut group = Vec::new();
        {
            let mut queue = shared.queue.lock();
            take_group(&mut queue.jobs, &mut group, WORKER_GROUP_ITEMS);
        }
        shared.room.notify_waiters();
        turn.armed = false;
        shared.write(&mut group);
        shared.worker_groups.fetch_add(1, Ordering::Relaxed);
        let mut queue = shared.queue.lock();
        if queue.jobs.is_empty() {
            queue.role = Role::Free;
        } else {
            // More came while this worker wrote: the thread takes them.
            queue.role = Role::Thread;
            drop(queue);
            shared.thread_turn.notify_one();
        }
        true
    }

    /// Write groups so far, by who wrote them: `(async workers, the
    /// writer thread)`.
    pub fn groups_written(&self) -> (u64, u64) {
        (
            self.shared.worker_groups.load(Ordering::Relaxed),
            self.shared.thread_groups.load(Ordering::Relaxed),
        )
    }

    /// Applies a batch this node leads: one result per item, the new
    /// states of this node's shards to send to the other replicas, and
    /// when the write is durable here. An `Ok` result counts only once
    /// the [`Durable`] resolves `Ok`.
    pub async fn lead(&self, items: Vec<Increment>) -> (Led, Durable) {
        let n = items.len();
        let (tx, rx) = oneshot::channel();
        if !self.submit(Job::Lead(items, tx)).await {
            let led = Led {
                results: vec![ItemResult::Failed(ErrorCode::ShuttingDown); n],
                cells: Vec::new(),
            };
            return (led, Durable::now());
        }
        // The writer always answers unless it died mid-request.
        rx.await.unwrap_or_else(|_| {
            let led = Led {
                results: vec![ItemResult::Indeterminate(ErrorCode::Internal); n],
                cells: Vec::new(),
            };
            (led, Durable::now())
        })
    }

    /// Applies a batch this node leads and waits until it is durable:
    /// results as a client may see them.
    pub async fn lead_durably(&self, items: Vec<Increment>) -> Led {
        let (mut led, durable) = self.lead(items).await;
        if let Err(code) = durable.wait().await {
            unconfirmed(&mut led.results, code);
        }
        led
    }

    /// Merges cell states from other nodes (validated by the caller);
    /// returns once they are durable.
    pub async fn merge(&self, cells: CellBatch) -> Result<(), ErrorCode> {
        let (tx, rx) = oneshot::channel();
        if !self.submit(Job::Merge(cells, tx)).await {
            return Err(ErrorCode::ShuttingDown);
        }
        rx.await.unwrap_or(Err(ErrorCode::Internal))
    }
}

/// Moves the oldest queued jobs into `group`: at most
/// `MAX_GROUP_REQUESTS` and `max_items` increments and cells, and at
/// least one job.
fn take_group(jobs: &mut Vec<Job>, group: &mut Vec<Job>, max_items: usize) {
    let mut size = 0;
    let n = jobs
        .iter()
        .take(MAX_GROUP_REQUESTS)
        .take_while(|job| {
            let fits = size == 0 || size + job.size() <= max_items;
            size += job.size();
            fits
        })
        .count()
        .max(1)
        .min(jobs.len());
    group.extend(jobs.drain(..n));
}

impl Shared {
    /// Whether the queued jobs make a group an async worker may write:
    /// small, with the engine taking writes without waiting and the
    /// syncer keeping up.
    fn worker_may_write(&self, queue: &Queue) -> bool {
        queue.jobs.iter().map(Job::size).sum::<usize>() <= INLINE_GROUP_ITEMS
            && self.unsynced.load(Ordering::Relaxed) < MAX_UNSYNCED_GROUPS / 2
            && self.store.db().writes_freely(INLINE_GROUP_BYTES)
    }

    /// Writes one group and answers its requests (now, or through the
    /// syncer once durable).
    fn write(&self, group: &mut Vec<Job>) {
        let merges: Vec<CellBatch> = group
            .iter_mut()
            .filter_map(|j| match j {
                Job::Merge(cells, _) => Some(std::mem::take(cells)),
                Job::Lead(..) => None,
            })
            .collect();
        let leads: Vec<&[Increment]> = group
            .iter()
            .filter_map(|j| match j {
                Job::Lead(items, _) => Some(items.as_slice()),
                Job::Merge(..) => None,
            })
            .collect();
        let (led, written) = self.store.write_group(&leads, merges);
        // Without a syncer (periodic mode), or when nothing needs one
        // (the write failed: the results say so), everyone is answered now.
        let syncer = match written {
            Ok(point) if point != SyncPoint::default() => self.syncer.as_ref().map(|s| (s, point)),
            _ => None,
        };
        let mut led = led.into_iter();
        let Some((syncer, point)) = syncer else {
            for job in group.drain(..) {
                match job {
                    Job::Lead(_, reply) => {
                        let _ = reply.send((led.next().unwrap_or_default(), Durable::now()));
                    }
                    Job::Merge(_, reply) => {
                        let _ = reply.send(written.map(|_| ()));
                    }
                }
            }
            return;
        };
        let mut unsynced = Unsynced {
            point,
            leads: Vec::new(),
            merges: Vec::new(),
        };
        for job in group.drain(..) {
            match job {
                Job::Lead(_, reply) => {
                    let (tx, rx) = oneshot::channel();
                    unsynced.leads.push(tx);
                    let _ = reply.send((led.next().unwrap_or_default(), Durable(Some(rx))));
                }
                Job::Merge(_, reply) => unsynced.merges.push(reply),
            }
        }
        self.unsynced.fetch_add(1, Ordering::Relaxed);
        // A dead syncer drops the senders: their receivers report
        // `Internal`.
        let _ = syncer.send(unsynced);
    }
}

/// The writer thread: writes groups while it holds the role, and waits
/// for it otherwise.
fn thread_loop(shared: &Shared) {
    let mut group: Vec<Job> = Vec::with_capacity(64);
    let mut queue = shared.queue.lock();
    loop {
        if queue.role == Role::Thread {
            if queue.jobs.is_empty() {
                queue.role = Role::Free;
            } else {
                take_group(&mut queue.jobs, &mut group, MAX_GROUP_ITEMS);
                drop(queue);
                shared.room.notify_waiters();
                shared.write(&mut group);
                shared.thread_groups.fetch_add(1, Ordering::Relaxed);
                queue = shared.queue.lock();
                continue;
            }
        }
        if queue.closed && queue.jobs.is_empty() && queue.role == Role::Free {
            return;
        }
        shared.thread_turn.wait(&mut queue);
    }
}

/// The syncer: one fsync for every group written since the last one.
fn sync_loop(store: &CounterStore, count: &AtomicUsize, unsynced: &mpsc::Receiver<Unsynced>) {
    let mut waiting: Vec<Unsynced> = Vec::with_capacity(MAX_UNSYNCED_GROUPS);
    while let Ok(first) = unsynced.recv() {
        waiting.push(first);
        while let Ok(next) = unsynced.try_recv() {
            waiting.push(next);
        }
        let through = waiting.iter().map(|u| u.point).max().unwrap_or_default();
        let outcome = store.wait_durable(through);
        count.fetch_sub(waiting.len(), Ordering::Relaxed);
        for group in waiting.drain(..) {
            for tx in group.leads.into_iter().chain(group.merges) {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;
    use std::time::Duration;

    use futures_util::FutureExt;
    use tally_client::Count;
    use tally_storage::{Durability, Options, SimFs};

    use super::*;
    use crate::clock::SystemClock;
    use crate::counter::limits::StoreLimits;
    use crate::counter::namespace::{Namespace, Namespaces};
    use crate::counter::read_plan::{ReadAnswer, ReadPlan};
    use crate::replica::identity::Identity;

    fn open(fs: &SimFs, incarnation: u32) -> Arc<CounterStore> {
        let opts = Options {
            durability: Durability::Sync,
            background_work: false,
            ..Options::default()
        };
        let ns = Namespace::parse("events", "minute:1d, total").unwrap();
        let store = CounterStore::open_with_fs(
            Arc::new(fs.clone()),
            Path::new("/node"),
            opts,
            Namespaces::with([ns]),
            Identity {
                host_id: 1,
                incarnation,
            },
            Arc::new(SystemClock),
            StoreLimits::default(),
        )
        .unwrap();
        Arc::new(store)
    }

    fn inc(key: &str, delta: i64) -> Increment {
        Increment {
            namespace: "events".into(),
            key: key.as_bytes().to_vec(),
            timestamp_ms: SystemClock.now_ms(),
            delta,
            events: 1,
            op_id: None,
        }
    }

    fn total(store: &CounterStore, key: &str) -> i64 {
        let plan = ReadPlan::total(
            &store.namespaces(),
            store.limits(),
            "events",
            key.as_bytes(),
            0,
        )
        .unwrap();
        match store.read_local(&plan).unwrap() {
            ReadAnswer::Total(Count { sum, .. }) => sum,
            other => panic!("{other:?}"),
        }
    }

    use crate::clock::Clock;

    #[tokio::test]
    async fn a_lead_is_answered_before_its_fsync_and_durable_after() {
        let fs = SimFs::new();
        let store = open(&fs, 1);
        let (pipeline, _threads) = WritePipeline::start(store.clone(), 64).unwrap();
        fs.set_sync_delay(Duration::from_millis(500));
        let (led, durable) = pipeline.lead(vec![inc("k", 5)]).await;
        assert_eq!(led.results, vec![ItemResult::Ok]);
        assert_eq!(led.cells.len(), 2, "the minute and the total cell");
        let mut durable = Box::pin(durable.wait());
        assert!(
            (&mut durable).now_or_never().is_none(),
            "answered while the fsync still runs"
        );
        assert_eq!(total(&store, "k"), 5, "visible before it is durable");
        durable.await.unwrap();
        // A merge is answered only once durable.
        let merged = pipeline.merge(CellBatch::from(led.cells.as_slice()));
        assert!(merged.await.is_ok());
        assert!(store.db().metrics().wal_syncs >= 2);
    }

    /// A request whose task is dropped while it holds the writer role
    /// (during its yield) hands the role to the thread: the requests that
    /// joined its group are still written and answered.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_worker_write_leaves_the_queue_to_the_thread() {
        let fs = SimFs::new();
        let store = open(&fs, 1);
        let (pipeline, threads) = WritePipeline::start(store.clone(), 64).unwrap();
        // Polled once: the job is queued, the role taken, the yield pending.
        let mut first = Box::pin(pipeline.lead(vec![inc("a", 1)]));
        assert!((&mut first).now_or_never().is_none());
        assert_eq!(pipeline.shared.queue.lock().role, Role::Worker);
        let second = pipeline.lead(vec![inc("b", 2)]);
        drop(first);
        let (led, durable) = second.await;
        assert_eq!(led.results, vec![ItemResult::Ok]);
        durable.wait().await.unwrap();
        assert_eq!(total(&store, "b"), 2);
        // The cancelled one was queued, so it may have been written too;
        // either way nothing is stuck and the pipeline closes.
        drop(pipeline);
        threads.join();
    }

    /// Small groups are written by the requests' own worker, large ones
    /// by the thread; both count every increment once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_and_the_thread_share_the_writes() {
        let fs = SimFs::new();
        let store = open(&fs, 1);
        let (pipeline, threads) = WritePipeline::start(store.clone(), 1024).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    for round in 0..40 {
                        // Every fifth batch is too large for a worker.
                        let n = if round % 5 == 0 {
                            INLINE_GROUP_ITEMS + 1
                        } else {
                            1
                        };
                        let items = vec![inc(&format!("k{t}"), 1); n];
                        let led = pipeline.lead_durably(items).await;
                        assert!(led.results.iter().all(|r| *r == ItemResult::Ok));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let (by_workers, by_thread) = pipeline.groups_written();
        assert!(
            by_workers > 0 && by_thread > 0,
            "{by_workers} groups by workers, {by_thread} by the thread"
        );
        let per_task = 8 * (INLINE_GROUP_ITEMS as i64 + 1) + 32;
        for t in 0..16 {
            assert_eq!(total(&store, &format!("k{t}")), per_task, "task {t}");
        }
        drop(pipeline);
        threads.join();
    }

    /// Many concurrent leads and merges through the pipeline over a slow
    /// disk, then a power loss: every lead whose `Durable` said `Ok`, and
    /// every merge acknowledged, survives; and groups were written while
    /// earlier ones were fsyncing (more groups than fsyncs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn power_loss_keeps_every_durable_write_and_fsyncs_overlap_writes() {
        let fs = SimFs::new();
        let store = open(&fs, 1);
        let (pipeline, _threads) = WritePipeline::start(store.clone(), 1024).unwrap();
        fs.set_sync_delay(Duration::from_millis(2));
        let tasks: Vec<_> = (0..32)
            .map(|t| {
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    let mut acked = 0;
                    for _ in 0..20 {
                        let (led, durable) = pipeline.lead(vec![inc(&format!("k{t}"), 1)]).await;
                        if led.results == vec![ItemResult::Ok] && durable.wait().await.is_ok() {
                            acked += 1;
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked = Vec::new();
        for t in tasks {
            acked.push(t.await.unwrap());
        }
        let metrics = store.db().metrics();
        assert!(
            metrics.commit_groups > metrics.wal_syncs,
            "{} groups, {} fsyncs: no group was written during an fsync",
            metrics.commit_groups,
            metrics.wal_syncs
        );
        drop(pipeline);
        // The pipeline threads hold the store until they see the channel
        // close; cut the power first, as a crash would.
        fs.crash(11);
        drop(store);
        let store = open(&fs, 2);
        for (t, &n) in acked.iter().enumerate() {
            assert_eq!(n, 20, "task {t}: every write was acknowledged");
            assert_eq!(total(&store, &format!("k{t}")), n, "task {t}");
        }
    }
}
