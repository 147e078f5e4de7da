//! [`WritePipeline`]: one thread that applies every write of the node,
//! grouping whatever has queued up into one storage write, and, in `sync`
//! mode, a second that fsyncs behind it.
//!
//! Why: with a storage call per request on the blocking pool, 50 concurrent
//! connections meant 50 threads taking turns through the engine's group
//! commit, and the profile showed more time in futex wake-ups than in
//! counting. A single writer drains the queue (up to `MAX_GROUP_REQUESTS`
//! requests or `MAX_GROUP_ITEMS` increments and cells), applies them as one
//! write batch, and answers each request.
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

use std::sync::mpsc;
use std::sync::Arc;

use tally_client::{CellState, ErrorCode, Increment, ItemResult};
use tally_storage::SyncPoint;
use tokio::sync::oneshot;

use crate::replica::store::lead::{unconfirmed, Led};
use crate::replica::store::CounterStore;

const MAX_GROUP_REQUESTS: usize = 512;
const MAX_GROUP_ITEMS: usize = 20_000;
/// Groups written but not yet fsynced, at most: past this the writer
/// waits for the syncer (the disk is the bottleneck; more would only
/// queue memory).
const MAX_UNSYNCED_GROUPS: usize = 64;

enum Job {
    Lead(Vec<Increment>, oneshot::Sender<(Led, Durable)>),
    Merge(Vec<CellState>, oneshot::Sender<Result<(), ErrorCode>>),
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

/// Handle to the node's write thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct WritePipeline {
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Lead(items, _) => write!(f, "Lead({} items)", items.len()),
            Job::Merge(cells, _) => write!(f, "Merge({} cells)", cells.len()),
        }
    }
}

impl WritePipeline {
    /// Starts the write thread (and in `sync` mode the syncer) over
    /// `store`. They stop, letting go of `store`, when every handle is
    /// dropped; [`WriterThreads::join`] waits for that.
    pub fn start(
        store: Arc<CounterStore>,
        queue_depth: usize,
    ) -> std::io::Result<(WritePipeline, WriterThreads)> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(queue_depth.max(1));
        let mut threads = Vec::new();
        let syncer = if store.syncs_writes() {
            let (to_sync, unsynced) = mpsc::sync_channel::<Unsynced>(MAX_UNSYNCED_GROUPS);
            let s = store.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tally-syncer".into())
                    .spawn(move || sync_loop(&s, &unsynced))?,
            );
            Some(to_sync)
        } else {
            None
        };
        threads.push(
            std::thread::Builder::new()
                .name("tally-writer".into())
                .spawn(move || run(&store, &queue, syncer.as_ref()))?,
        );
        Ok((WritePipeline { jobs }, WriterThreads(threads)))
    }

    async fn submit(&self, job: Job) -> bool {
        let jobs = self.jobs.clone();
        // A full queue blocks the sender: do that off the async workers.
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        }
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
    pub async fn merge(&self, cells: Vec<CellState>) -> Result<(), ErrorCode> {
        let (tx, rx) = oneshot::channel();
        if !self.submit(Job::Merge(cells, tx)).await {
            return Err(ErrorCode::ShuttingDown);
        }
        rx.await.unwrap_or(Err(ErrorCode::Internal))
    }
}

fn run(
    store: &CounterStore,
    queue: &mpsc::Receiver<Job>,
    syncer: Option<&mpsc::SyncSender<Unsynced>>,
) {
    // Reused across groups: growing a fresh vector per group showed in
    // the profile.
    let mut group: Vec<Job> = Vec::with_capacity(64);
    while let Ok(first) = queue.recv() {
        let mut size = first.size();
        group.push(first);
        while group.len() < MAX_GROUP_REQUESTS && size < MAX_GROUP_ITEMS {
            match queue.try_recv() {
                Ok(job) => {
                    size += job.size();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let merges: Vec<Vec<CellState>> = group
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
        let (led, written) = store.write_group(&leads, merges);
        // Without a syncer (periodic mode), or when nothing needs one
        // (the write failed: the results say so), everyone is answered now.
        let syncer = match written {
            Ok(point) if point != SyncPoint::default() => syncer.map(|s| (s, point)),
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
            continue;
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
        if syncer.send(unsynced).is_err() {
            // The syncer died: its receivers report `Internal`.
            return;
        }
    }
}

/// The syncer: one fsync for every group written since the last one.
fn sync_loop(store: &CounterStore, unsynced: &mpsc::Receiver<Unsynced>) {
    let mut waiting: Vec<Unsynced> = Vec::with_capacity(MAX_UNSYNCED_GROUPS);
    while let Ok(first) = unsynced.recv() {
        waiting.push(first);
        while let Ok(next) = unsynced.try_recv() {
            waiting.push(next);
        }
        let through = waiting.iter().map(|u| u.point).max().unwrap_or_default();
        let outcome = store.wait_durable(through);
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
        let merged = pipeline.merge(led.cells.clone());
        assert!(merged.await.is_ok());
        assert!(store.db().metrics().wal_syncs >= 2);
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
