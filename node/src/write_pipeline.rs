//! [`WritePipeline`]: one thread that applies every increment request of
//! the node, grouping whatever has queued up into one storage write.
//!
//! Why: with a storage call per request on the blocking pool, 50 concurrent
//! connections meant 50 threads taking turns through the engine's group
//! commit, and the profile showed more time in futex wake-ups than in
//! counting. A single writer drains the queue (up to `MAX_GROUP_REQUESTS`
//! requests or `MAX_GROUP_ITEMS` increments), applies them as one write
//! batch, and answers each request. In `sync` mode the queue fills while an
//! fsync runs, so one fsync covers many requests.

use std::sync::mpsc;
use std::sync::Arc;

use tally_client::{ErrorCode, Increment, ItemResult};
use tokio::sync::oneshot;

use crate::store::CounterStore;

const MAX_GROUP_REQUESTS: usize = 512;
const MAX_GROUP_ITEMS: usize = 20_000;

type Job = (Vec<Increment>, oneshot::Sender<Vec<ItemResult>>);

/// Handle to the node's write thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct WritePipeline {
    jobs: mpsc::SyncSender<Job>,
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

    /// Applies one request's increments; one result per item.
    pub async fn increment(&self, items: Vec<Increment>) -> Vec<ItemResult> {
        let n = items.len();
        let (tx, rx) = oneshot::channel();
        let jobs = self.jobs.clone();
        // A full queue blocks the sender: do that off the async workers.
        let queued = match jobs.try_send((items, tx)) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        };
        if !queued {
            return vec![ItemResult::Failed(ErrorCode::ShuttingDown); n];
        }
        // The writer always answers unless it died mid-request.
        rx.await
            .unwrap_or_else(|_| vec![ItemResult::Indeterminate(ErrorCode::Internal); n])
    }
}

fn run(store: &CounterStore, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut items = first.0.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_REQUESTS && items < MAX_GROUP_ITEMS {
            match queue.try_recv() {
                Ok(job) => {
                    items += job.0.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<&[Increment]> = group.iter().map(|(items, _)| items.as_slice()).collect();
        let results = store.increment_many(&batches);
        for ((_, reply), result) in group.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}
