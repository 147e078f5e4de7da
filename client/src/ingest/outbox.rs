//! [`Outbox`]: sends sums (each with its op id) until each is settled:
//! acknowledged, refused for good, or expired; resending the rest with
//! backoff, and spooling them when a spool is configured.
//!
//! Shared by the [`Producer`](super::Producer) and the
//! [`Ingestor`](super::Ingestor). A few worker tasks take ready sums from
//! one queue in batches; a sum whose outcome is unknown, or that failed
//! for a passing cause (the cluster unreachable, overloaded, a replica
//! down), goes back to the queue with the same op id, so however often it
//! is sent it counts once while its id is live. Once the id is older than
//! the nodes' op-id window a node refuses it (`OpIdExpired`): the sum's
//! fate is then unknown, and it is reported as expired, never sent again
//! under a new id.
//!
//! A sum no attempt can have applied (every answer so far a certain
//! refusal, or no node reachable) gets a new op id once its own is
//! `reissue_after` old, so a long outage does not expire sums the cluster
//! never saw; one that may have been applied keeps its id to the end.
//!
//! Without a spool a sum is given up after the producer's `retries`
//! (failed, or indeterminate if an attempt may have applied it). With
//! one, a sum not settled at its first attempt is written to the spool
//! (the ingestor spools every sum before its first attempt), resent until
//! settled, and marked done in the spool when it is.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::lock;
use super::spool::{Spool, SpoolError};
use super::sums::Sum;
use crate::client::{Client, Outcome};
use crate::error::{ClientError, ErrorCode};
use crate::message::MAX_BATCH_ITEMS;
use crate::op_id::{now_ms, op_id_at, op_id_made_ms};

/// How an outbox sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxConfig {
    /// Sums per request at most.
    pub batch: usize,
    /// Requests in flight at once.
    pub workers: usize,
    /// Without a spool: resends before a sum is given up.
    pub retries: u32,
    /// A sum never possibly applied whose op id is this old gets a new
    /// one (less than the nodes' op-id window, so that a long outage does
    /// not expire sums the cluster never saw).
    pub reissue_after: Duration,
}

/// What became of the events handed to an outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// Events in sums the cluster acknowledged.
    pub events_acknowledged: u64,
    /// Events in sums certainly not applied, given up (a cause that
    /// cannot pass, or the retries ran out without a spool).
    pub events_failed: u64,
    /// Events in sums given up that may or may not have been applied:
    /// retries ran out without a spool after an unknown outcome.
    pub events_indeterminate: u64,
    /// Events in sums whose op id expired before they were settled:
    /// applied at most once, but whether at all is unknown.
    pub events_expired: u64,
    /// Events in sums written to the spool.
    pub events_spooled: u64,
    /// Sums (increments on the wire) sent, resends included.
    pub sums_sent: u64,
    /// Requests sent, resends included.
    pub batches_sent: u64,
}

#[derive(Debug)]
struct Pending {
    sum: Sum,
    /// In the spool: marked done there once settled.
    spooled: bool,
    attempts: u32,
    /// An attempt may have applied it.
    maybe_applied: bool,
    not_before: Instant,
}

/// A sum waiting for its backoff, ordered by when it may go (soonest
/// first in the max-heap).
#[derive(Debug)]
struct Waiting(Pending);

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.0.not_before == other.0.not_before
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.not_before.cmp(&self.0.not_before)
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Sums never sent, in order.
    ready: VecDeque<Pending>,
    /// Sums to resend, by when (a heap: during an outage it holds every
    /// pending sum, and a take must not scan them all).
    waiting: BinaryHeap<Waiting>,
    /// Sums taken by workers and not yet settled or requeued.
    in_flight: usize,
    /// Sums never attempted (for the producers' back-pressure).
    fresh: usize,
    stopped: bool,
}

/// A queue of sums to settle, and the workers that send them.
#[derive(Debug)]
pub(crate) struct Outbox {
    client: Client,
    config: OutboxConfig,
    spool: Option<Arc<Mutex<Spool>>>,
    queue: Mutex<Queue>,
    /// New work, or a queue now empty (for `settled`).
    changed: Notify,
    delivered: Mutex<Delivered>,
}

impl Outbox {
    /// An outbox and its workers on the current runtime; they stop when
    /// [`Outbox::stop`] is called.
    pub(crate) fn start(
        client: Client,
        config: OutboxConfig,
        spool: Option<Arc<Mutex<Spool>>>,
    ) -> Arc<Outbox> {
        let config = OutboxConfig {
            batch: config.batch.clamp(1, MAX_BATCH_ITEMS),
            workers: config.workers.max(1),
            ..config
        };
        let outbox = Arc::new(Outbox {
            client,
            config,
            spool,
            queue: Mutex::new(Queue::default()),
            changed: Notify::new(),
            delivered: Mutex::new(Delivered::default()),
        });
        for _ in 0..config.workers {
            tokio::spawn(work(Arc::downgrade(&outbox)));
        }
        outbox
    }

    /// Queues sums to send; `spooled`: they are in the spool already;
    /// `maybe_sent`: an earlier process may have sent them (recovered from
    /// a spool), so their ids are never reissued.
    pub(crate) fn push(&self, sums: Vec<Sum>, spooled: bool, maybe_sent: bool) {
        if sums.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut queue = lock(&self.queue);
        queue.fresh += sums.len();
        queue.ready.extend(sums.into_iter().map(|sum| Pending {
            sum,
            spooled,
            attempts: 0,
            maybe_applied: maybe_sent,
            not_before: now,
        }));
        drop(queue);
        self.changed.notify_waiters();
    }

    /// Sums queued and never attempted.
    pub(crate) fn fresh(&self) -> usize {
        lock(&self.queue).fresh
    }

    /// Sums not yet settled (queued or in flight).
    pub(crate) fn unsettled(&self) -> usize {
        let queue = lock(&self.queue);
        queue.ready.len() + queue.waiting.len() + queue.in_flight
    }

    /// What happened so far.
    pub(crate) fn delivered(&self) -> Delivered {
        *lock(&self.delivered)
    }

    /// Sums neither settled nor in the spool (queued or in flight).
    pub(crate) fn unspooled(&self) -> usize {
        let queue = lock(&self.queue);
        let waiting = queue.waiting.iter().filter(|w| !w.0.spooled).count();
        queue.ready.iter().filter(|p| !p.spooled).count() + waiting + queue.in_flight
    }

    /// Waits until `done(self)` holds, or `deadline` passed; whether it
    /// holds.
    pub(crate) async fn wait_for(
        &self,
        done: impl Fn(&Outbox) -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Stops the workers now, whatever is queued (spooled sums stay in
    /// the spool; others are dropped).
    pub(crate) fn stop(&self) {
        lock(&self.queue).stopped = true;
        self.changed.notify_waiters();
    }

    /// Takes up to a batch of ready sums; `Err(wait)` when none is ready.
    fn take(&self) -> Result<Vec<Pending>, Option<Duration>> {
        let now = Instant::now();
        let mut queue = lock(&self.queue);
        if queue.stopped {
            return Err(None);
        }
        let mut batch = Vec::new();
        // Resends whose backoff is over first (they are the oldest), then
        // sums never sent.
        while batch.len() < self.config.batch
            && queue.waiting.peek().is_some_and(|w| w.0.not_before <= now)
        {
            batch.extend(queue.waiting.pop().map(|w| w.0));
        }
        let fresh = (self.config.batch - batch.len()).min(queue.ready.len());
        batch.extend(queue.ready.drain(..fresh));
        if batch.is_empty() {
            let soonest = queue.waiting.peek().map(|w| w.0.not_before);
            return Err(Some(
                soonest.map_or(Duration::from_millis(200), |s| s - now),
            ));
        }
        queue.in_flight += batch.len();
        queue.fresh -= batch.iter().filter(|p| p.attempts == 0).count();
        Ok(batch)
    }

    /// Sends one batch and settles or requeues each sum.
    async fn send(&self, batch: Vec<Pending>) {
        let items = batch.iter().map(|p| p.sum.to_increment()).collect();
        let outcomes = self.client.increment(items).await;
        {
            let mut d = lock(&self.delivered);
            d.sums_sent += batch.len() as u64;
            d.batches_sent += 1;
        }
        let mut done = Vec::new();
        let mut to_spool = Vec::new();
        let mut again = Vec::new();
        let mut d = Delivered::default();
        let n = batch.len();
        for (mut p, outcome) in batch.into_iter().zip(outcomes) {
            p.attempts += 1;
            let events = u64::from(p.sum.events);
            let settled = match outcome {
                Outcome::Ok(()) => {
                    d.events_acknowledged += events;
                    true
                }
                Outcome::Failed(ClientError::Node {
                    code: ErrorCode::OpIdExpired,
                    ..
                }) => {
                    tracing::warn!(
                        namespace = %p.sum.namespace,
                        key = %String::from_utf8_lossy(&p.sum.key),
                        events,
                        "a sum's op id expired before it was settled: counted at most once"
                    );
                    d.events_expired += events;
                    true
                }
                Outcome::Failed(e) if !retryable(&e) => {
                    tracing::warn!(error = %e, events, "a sum was refused; given up");
                    d.events_failed += events;
                    true
                }
                Outcome::Failed(_) => false,
                Outcome::Indeterminate(_) => {
                    p.maybe_applied = true;
                    false
                }
            };
            if settled {
                if p.spooled {
                    done.push(p.sum.op_id);
                }
                continue;
            }
            if self.spool.is_none() && p.attempts > self.config.retries {
                if p.maybe_applied {
                    d.events_indeterminate += events;
                } else {
                    d.events_failed += events;
                }
                continue;
            }
            let backoff =
                Duration::from_millis(20 << p.attempts.min(6)).min(Duration::from_secs(1));
            let jitter = rand::random_range(0..=backoff.as_millis() as u64);
            p.not_before = Instant::now() + Duration::from_millis(jitter);
            if self.spool.is_some() && !p.spooled {
                to_spool.push(p);
            } else {
                again.push(p);
            }
        }
        self.reissue(&mut again).await;
        if !to_spool.is_empty() {
            let sums: Vec<Sum> = to_spool.iter().map(|p| p.sum.clone()).collect();
            match self
                .spool_call(move |spool| spool.append(None, &sums))
                .await
            {
                Ok(()) => {
                    d.events_spooled += to_spool
                        .iter()
                        .map(|p| u64::from(p.sum.events))
                        .sum::<u64>();
                    to_spool.iter_mut().for_each(|p| p.spooled = true);
                }
                Err(e) => {
                    // Kept in memory and resent: not lost while this
                    // process lives.
                    tracing::warn!(error = %e, sums = to_spool.len(), "could not spool unsettled sums");
                }
            }
            again.append(&mut to_spool);
        }
        if !done.is_empty() {
            if let Err(e) = self.spool_call(move |spool| spool.done(&done)).await {
                // Not marked done: resent after a restart, with the same
                // op ids, so still counted once while they are live.
                tracing::warn!(error = %e, "could not mark spooled sums done");
            }
        }
        {
            let mut total = lock(&self.delivered);
            total.events_acknowledged += d.events_acknowledged;
            total.events_failed += d.events_failed;
            total.events_indeterminate += d.events_indeterminate;
            total.events_expired += d.events_expired;
            total.events_spooled += d.events_spooled;
        }
        let mut queue = lock(&self.queue);
        queue.in_flight -= n;
        queue.waiting.extend(again.into_iter().map(Waiting));
        drop(queue);
        self.changed.notify_waiters();
    }

    /// Gives a new op id to each of `pending` that no attempt can have
    /// applied and whose id is `reissue_after` old: resent under its old
    /// id it would be refused as expired once the window passed, though
    /// the cluster never counted it. Spooled sums change ids in the spool
    /// first, in one record; if that fails they keep the old ones.
    async fn reissue(&self, pending: &mut [Pending]) {
        let now = now_ms();
        let after = self.config.reissue_after.as_millis() as i64;
        let due: Vec<usize> = (0..pending.len())
            .filter(|&i| {
                let p = &pending[i];
                !p.maybe_applied && now - op_id_made_ms(p.sum.op_id) >= after
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let renamed: Vec<Sum> = due
            .iter()
            .map(|&i| Sum {
                op_id: op_id_at(now),
                ..pending[i].sum.clone()
            })
            .collect();
        let spooled: Vec<(u128, Sum)> = due
            .iter()
            .zip(&renamed)
            .filter(|(&i, _)| pending[i].spooled)
            .map(|(&i, s)| (pending[i].sum.op_id, s.clone()))
            .collect();
        if !spooled.is_empty() {
            if let Err(e) = self.spool_call(move |spool| spool.reissue(&spooled)).await {
                tracing::warn!(error = %e, "could not give spooled sums new op ids");
                return;
            }
        }
        tracing::info!(
            sums = due.len(),
            "sums never applied got new op ids before theirs expired"
        );
        for (i, sum) in due.into_iter().zip(renamed) {
            pending[i].sum = sum;
        }
    }

    /// Runs `f` on the spool off the async workers (it fsyncs).
    async fn spool_call(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<(), SpoolError> + Send + 'static,
    ) -> Result<(), SpoolError> {
        let Some(spool) = self.spool.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || f(&mut lock(&spool)))
            .await
            .unwrap_or_else(|e| {
                Err(SpoolError::Io {
                    path: Default::default(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

/// A worker: sends ready batches until the outbox stops (or is gone).
async fn work(outbox: std::sync::Weak<Outbox>) {
    loop {
        let Some(o) = outbox.upgrade() else {
            return;
        };
        match o.take() {
            Ok(batch) => o.send(batch).await,
            Err(None) => return,
            Err(Some(wait)) => {
                // Holds the outbox while it waits: `stop` ends the wait.
                let changed = o.changed.notified();
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(wait.min(Duration::from_millis(200))) => {}
                }
            }
        }
    }
}

/// Whether a sum that failed (certainly not applied) may succeed if sent
/// again.
pub(crate) fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Node { code, .. } => code.is_transient(),
        ClientError::Unreachable(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_causes_are_resent() {
        let node = |code| ClientError::Node {
            code,
            message: String::new(),
        };
        assert!(retryable(&node(ErrorCode::Unavailable)));
        assert!(retryable(&node(ErrorCode::Overloaded)));
        assert!(retryable(&ClientError::Unreachable("x".into())));
        assert!(!retryable(&node(ErrorCode::UnknownNamespace)));
        assert!(!retryable(&node(ErrorCode::OpIdExpired)));
        assert!(!retryable(&ClientError::InvalidRequest("x".into())));
    }
}
