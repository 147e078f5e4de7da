//! [`WritePipeline`]: one thread that applies every write of the node,
//! grouping whatever has queued up into one storage write.
//!
//! Why: with a storage call per request on the blocking pool, 50 concurrent
//! connections meant 50 threads taking turns through the engine's group
//! commit, and the profile showed more time in futex wake-ups than in
//! counting. A single writer drains the queue (up to `MAX_GROUP_REQUESTS`
//! requests or `MAX_GROUP_ITEMS` increments and cells), applies them as one
//! write batch, and answers each request. In `sync` mode the queue fills
//! while an fsync runs, so one fsync covers many requests.
//!
//! Two kinds of job share the queue: batches this node leads (it raises
//! its own shard of each cell and returns the new states for the other
//! replicas) and cell states from other nodes to merge (replication, hint
//! replay, read repair).

use std::sync::mpsc;
use std::sync::Arc;

use tally_client::{CellState, ErrorCode, Increment, ItemResult};
use tokio::sync::oneshot;

use crate::store::{CounterStore, Led};

const MAX_GROUP_REQUESTS: usize = 512;
const MAX_GROUP_ITEMS: usize = 20_000;

enum Job {
    Lead(Vec<Increment>, oneshot::Sender<Led>),
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
    /// Starts the write thread over `store`. It stops when every handle is
    /// dropped.
    pub fn start(store: Arc<CounterStore>, queue_depth: usize) -> std::io::Result<WritePipeline> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(queue_depth.max(1));
        std::thread::Builder::new()
            .name("tally-writer".into())
            .spawn(move || run(&store, &queue))?;
        Ok(WritePipeline { jobs })
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

    /// Applies a batch this node leads: one result per item, and the new
    /// states of this node's shards to send to the other replicas.
    pub async fn lead(&self, items: Vec<Increment>) -> Led {
        let n = items.len();
        let (tx, rx) = oneshot::channel();
        if !self.submit(Job::Lead(items, tx)).await {
            return Led {
                results: vec![ItemResult::Failed(ErrorCode::ShuttingDown); n],
                cells: Vec::new(),
            };
        }
        // The writer always answers unless it died mid-request.
        rx.await.unwrap_or_else(|_| Led {
            results: vec![ItemResult::Indeterminate(ErrorCode::Internal); n],
            cells: Vec::new(),
        })
    }

    /// Merges cell states from other nodes (validated by the caller).
    pub async fn merge(&self, cells: Vec<CellState>) -> Result<(), ErrorCode> {
        let (tx, rx) = oneshot::channel();
        if !self.submit(Job::Merge(cells, tx)).await {
            return Err(ErrorCode::ShuttingDown);
        }
        rx.await.unwrap_or(Err(ErrorCode::Internal))
    }
}

fn run(store: &CounterStore, queue: &mpsc::Receiver<Job>) {
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
        let (led, merged) = store.write_group(&leads, merges);
        let mut led = led.into_iter();
        for job in group.drain(..) {
            match job {
                Job::Lead(_, reply) => {
                    let _ = reply.send(led.next().unwrap_or_default());
                }
                Job::Merge(_, reply) => {
                    let _ = reply.send(merged);
                }
            }
        }
    }
}
