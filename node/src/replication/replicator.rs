//! [`Replicator`]: delivers cell states to other replicas, coalescing what
//! is bound for the same peer, and hints whatever a peer does not take.
//!
//! Under load every increment's leader has new shard states for the same
//! two or three peers. Sent one message each, the per-message work (a
//! frame, syscalls, task wake-ups, a decode and a write-pipeline hop on the
//! receiver, an acknowledgement back) costs more than the cells. So each
//! peer has a queue: a sender takes everything queued, sends it as one
//! `ReplicaWrite`, and answers every writer in it with the one
//! acknowledgement. At most `max_in_flight` messages are on the wire per
//! peer; while they are, new cells wait and join the next message. At low
//! load a message goes out at once (nothing waits for company); at high
//! load messages grow, like group commit.
//!
//! A message that fails (refused, broken connection, timeout) is hinted
//! whole: its cells are states, so delivering them again later, or twice,
//! changes no count.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tally_client::message::request::encode_replica_write;
use tally_client::{CellState, Response};
use tally_consensus::HostId;
use tokio::sync::oneshot;

use crate::cluster::peers::Peers;
use crate::replica::hint_store::HintStore;

/// Cells per message, at most.
const MAX_CELLS_PER_MESSAGE: usize = 16_384;
/// A message whose writers have all given up still gets this long.
const MIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Writers queued for one peer, at most: past this (a peer that stopped
/// answering but is not yet convicted by gossip) new cells are hinted at
/// once instead of queued, so a stuck peer cannot grow memory.
const MAX_WAITING: usize = 8_192;

/// How replica writes are sent.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Messages on the wire per peer. One by default: the cells that
    /// arrive while it is out all join the next message, and on one
    /// shared core that measured 7-12% more single increments than two
    /// (bench/RESULTS.md); a slow peer delays only its own queue, which
    /// the deadline turns into hints.
    pub max_in_flight: usize,
    /// Store hints for cells a peer did not take.
    pub hinted_handoff: bool,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            max_in_flight: 1,
            hinted_handoff: true,
        }
    }
}

struct Waiting {
    epoch: u64,
    cells: Arc<Vec<CellState>>,
    deadline: Instant,
    done: oneshot::Sender<bool>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    in_flight: usize,
}

/// Coalescing delivery of cell states to peers.
pub struct Replicator {
    peers: Arc<Peers>,
    hints: Arc<HintStore>,
    config: ReplicatorConfig,
    queues: Mutex<HashMap<HostId, Queue>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// A replicator over `peers`, hinting into `hints`.
    pub fn new(
        peers: Arc<Peers>,
        hints: Arc<HintStore>,
        config: ReplicatorConfig,
    ) -> Arc<Replicator> {
        Arc::new(Replicator {
            peers,
            hints,
            config,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `cells` for `host`. The answer says whether `host`
    /// acknowledged them; after a `false` they are hinted.
    pub fn send(
        self: &Arc<Self>,
        host: HostId,
        epoch: u64,
        cells: Arc<Vec<CellState>>,
        deadline: Instant,
    ) -> oneshot::Receiver<bool> {
        let (done, answer) = oneshot::channel();
        let start_sender = {
            let mut queues = self.queues.lock();
            let queue = queues.entry(host).or_default();
            if queue.waiting.len() >= MAX_WAITING {
                drop(queues);
                self.hint(host, epoch, vec![cells]);
                let _ = done.send(false);
                return answer;
            }
            queue.waiting.push(Waiting {
                epoch,
                cells,
                deadline,
                done,
            });
            let start = queue.in_flight < self.config.max_in_flight;
            if start {
                queue.in_flight += 1;
            }
            start
        };
        if start_sender {
            let this = self.clone();
            tokio::spawn(async move { this.drain(host).await });
        }
        answer
    }

    /// Sends what is queued for `host` until the queue is empty.
    async fn drain(self: Arc<Self>, host: HostId) {
        loop {
            let batch = {
                let mut queues = self.queues.lock();
                let queue = queues.entry(host).or_default();
                if queue.waiting.is_empty() {
                    queue.in_flight -= 1;
                    return;
                }
                take_batch(&mut queue.waiting)
            };
            let ok = self.deliver(host, &batch).await;
            if !ok {
                self.hint_all(host, &batch);
            }
            for w in batch {
                let _ = w.done.send(ok);
            }
        }
    }

    async fn deliver(&self, host: HostId, batch: &[Waiting]) -> bool {
        let epoch = batch.first().map_or(0, |w| w.epoch);
        let chunks: Vec<&[CellState]> = batch.iter().map(|w| w.cells.as_slice()).collect();
        let mut body = BytesMut::new();
        let kind = encode_replica_write(epoch, &chunks, &mut body);
        let now = Instant::now();
        let timeout = batch
            .iter()
            .map(|w| w.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
            .max(MIN_TIMEOUT);
        matches!(
            self.peers
                .call_encoded(host, kind, body.freeze(), timeout)
                .await,
            Ok(Response::Ack)
        )
    }

    fn hint_all(&self, host: HostId, batch: &[Waiting]) {
        let epoch = batch.first().map_or(0, |w| w.epoch);
        let cells: Vec<Arc<Vec<CellState>>> = batch.iter().map(|w| w.cells.clone()).collect();
        self.hint(host, epoch, cells);
    }

    /// Stores hints of `cells` for `host` (in the background), unless hinted
    /// handoff is off or `host` has been down longer than the hint window.
    pub fn hint(&self, host: HostId, epoch: u64, cells: Vec<Arc<Vec<CellState>>>) {
        if !self.config.hinted_handoff {
            return;
        }
        if self
            .peers
            .down_for(host)
            .is_some_and(|d| d > self.hints.window())
        {
            self.hints
                .note_dropped(cells.iter().map(|c| c.len() as u64).sum());
            return;
        }
        let hints = self.hints.clone();
        tokio::task::spawn_blocking(move || {
            let chunks: Vec<&[CellState]> = cells.iter().map(|c| c.as_slice()).collect();
            if let Err(e) = hints.store(host, epoch, &chunks) {
                static FAILED: crate::log_limit::LogLimit =
                    crate::log_limit::LogLimit::every(std::time::Duration::from_secs(1));
                if let Some(held_back) = FAILED.allow() {
                    tracing::error!(target = host.0, error = %e, held_back, "storing a hint failed");
                }
            }
        });
    }
}

/// The oldest waiting writers with the first one's epoch, up to the
/// message size limit (at least one).
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let epoch = waiting[0].epoch;
    let mut cells = 0;
    let mut n = 0;
    for w in waiting.iter() {
        if w.epoch != epoch || (n > 0 && cells + w.cells.len() > MAX_CELLS_PER_MESSAGE) {
            break;
        }
        cells += w.cells.len();
        n += 1;
    }
    waiting.drain(..n).collect()
}
