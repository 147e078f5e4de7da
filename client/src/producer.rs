//! The aggregating producer (DESIGN.md §10): buffers increments for up to
//! `max_delay` or `max_cells` distinct cells, sums those of one cell, and
//! sends the sums as batches.
//!
//! Why: a producer of video views sends the same hot keys again and again
//! within milliseconds. Each increment costs the cluster one update per
//! kept resolution per replica (12 for the default namespace at RF 3), so
//! summing the events of one minute bucket of one key before sending cuts
//! the cluster's work by the repeat factor, and one batch amortizes a
//! round trip over thousands of cells.
//!
//! Summing is exact: events are keyed by their minute bucket (the finest
//! resolution any namespace keeps), so every bucket of every resolution
//! gets the same sum as if the events were sent one by one; each sum
//! carries the number of events it stands for, so counts and averages stay
//! exact too.
//!
//! Delivery: a sum the cluster certainly did not apply (`Failed` with a
//! transient cause, or no node reachable) is sent again, up to `retries`
//! times with exponential backoff. A sum that may have been applied
//! (`Indeterminate`) is not resent: the producer's sums carry no op ids,
//! so a resend could count it twice. Both are counted in
//! [`ProducerReport`]. Back-pressure: at most `max_in_flight` batches are
//! in flight; [`Producer::add`] waits for one to finish beyond that, so
//! memory stays bounded however fast events arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::{Client, Outcome};
use crate::error::ClientError;
use crate::message::{Increment, MAX_BATCH_ITEMS};

/// The finest bucket any namespace keeps: sums are per minute.
const MINUTE_MS: i64 = 60_000;

/// How an aggregating producer buffers and sends.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// The longest an event waits in the buffer before it is sent.
    pub max_delay: Duration,
    /// Distinct cells (namespace, key, minute) that fill a batch; at most
    /// 10,000, a request's limit.
    pub max_cells: usize,
    /// Batches in flight at once; beyond it `add` waits.
    pub max_in_flight: usize,
    /// Resends of a sum that was certainly not applied.
    pub retries: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_delay: Duration::from_millis(10),
            max_cells: 2_000,
            max_in_flight: 4,
            retries: 3,
        }
    }
}

/// What a producer has done since it started, in events (one `add` is one
/// event, whatever its delta).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProducerReport {
    /// Events handed to `add`.
    pub events_added: u64,
    /// Events in sums the cluster acknowledged.
    pub events_acknowledged: u64,
    /// Events in sums the cluster certainly did not apply, after retries.
    pub events_failed: u64,
    /// Events in sums that may or may not have been applied.
    pub events_indeterminate: u64,
    /// Sums (increments on the wire) sent, not counting resends.
    pub sums_sent: u64,
    /// Batches sent, not counting resends.
    pub batches_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CellId {
    namespace: String,
    key: Vec<u8>,
    minute_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Sum {
    delta: i64,
    events: u32,
}

#[derive(Debug, Default)]
struct Buffer {
    sums: HashMap<CellId, Sum>,
    /// When the oldest buffered event arrived.
    oldest: Option<Instant>,
}

impl Buffer {
    fn take(&mut self) -> HashMap<CellId, Sum> {
        self.oldest = None;
        std::mem::take(&mut self.sums)
    }
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    buffer: Mutex<Buffer>,
    in_flight: Arc<Semaphore>,
    report: Mutex<ProducerReport>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An aggregating producer over a [`Client`]. Cheap to share behind an
/// `Arc`; `add` may be called from many tasks. Call [`Producer::flush`]
/// before dropping it: events still buffered when it is dropped are lost.
pub struct Producer {
    shared: Arc<Shared>,
    ticker: JoinHandle<()>,
}

impl Producer {
    /// Starts a producer (and its timer task) on the current runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let config = ProducerConfig {
            max_cells: config.max_cells.clamp(1, MAX_BATCH_ITEMS),
            max_in_flight: config.max_in_flight.max(1),
            max_delay: config.max_delay.max(Duration::from_micros(100)),
            ..config
        };
        let shared = Arc::new(Shared {
            client,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            buffer: Mutex::new(Buffer::default()),
            report: Mutex::new(ProducerReport::default()),
        });
        let ticker = tokio::spawn(tick(Arc::downgrade(&shared)));
        Producer { shared, ticker }
    }

    /// Adds one event of `delta` to `key` at `timestamp_ms`. Returns once
    /// the event is buffered (waiting first if `max_in_flight` batches are
    /// in flight and the buffer is full); an invalid key is refused here.
    pub async fn add(
        &self,
        namespace: &str,
        key: &[u8],
        timestamp_ms: i64,
        delta: i64,
    ) -> Result<(), ClientError> {
        // The nodes enforce their key limit (a setting); here only what
        // could never be sent.
        if key.is_empty() || key.len() > usize::from(u16::MAX) {
            return Err(ClientError::InvalidRequest(format!(
                "key of {} bytes cannot be sent",
                key.len()
            )));
        }
        let id = CellId {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            minute_ms: timestamp_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
        };
        let full = {
            let mut buffer = lock(&self.shared.buffer);
            // A sum that cannot count one more event is sent first.
            let saturated = buffer
                .sums
                .get(&id)
                .is_some_and(|s| s.events == u32::MAX)
                .then(|| buffer.take());
            let sum = buffer.sums.entry(id).or_insert(Sum {
                delta: 0,
                events: 0,
            });
            sum.delta = sum.delta.wrapping_add(delta);
            sum.events += 1;
            buffer.oldest.get_or_insert_with(Instant::now);
            let full = (buffer.sums.len() >= self.shared.config.max_cells).then(|| buffer.take());
            lock(&self.shared.report).events_added += 1;
            [saturated, full]
        };
        for batch in full.into_iter().flatten() {
            self.shared.clone().dispatch(batch).await;
        }
        Ok(())
    }

    /// Sends what is buffered and waits until every batch sent so far has
    /// an answer. Returns the report as of then.
    pub async fn flush(&self) -> ProducerReport {
        let batch = lock(&self.shared.buffer).take();
        if !batch.is_empty() {
            self.shared.clone().dispatch(batch).await;
        }
        let all = self.shared.config.max_in_flight as u32;
        // The semaphore is never closed, so this only waits.
        if let Ok(permits) = self.shared.in_flight.acquire_many(all).await {
            drop(permits);
        }
        self.report()
    }

    /// The report so far.
    pub fn report(&self) -> ProducerReport {
        *lock(&self.shared.report)
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.shared.config)
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Sends the buffer once its oldest event has waited `max_delay`.
async fn tick(shared: std::sync::Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(s) => s.config.max_delay / 4,
        None => return,
    };
    let mut interval = tokio::time::interval(period.max(Duration::from_micros(50)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let due = {
            let mut buffer = lock(&shared.buffer);
            match buffer.oldest {
                Some(t) if t.elapsed() >= shared.config.max_delay => Some(buffer.take()),
                _ => None,
            }
        };
        if let Some(batch) = due {
            shared.dispatch(batch).await;
        }
    }
}

impl Shared {
    /// Waits for an in-flight slot, then sends `batch` in the background.
    async fn dispatch(self: Arc<Self>, batch: HashMap<CellId, Sum>) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        {
            let mut report = lock(&self.report);
            report.sums_sent += batch.len() as u64;
            report.batches_sent += 1;
        }
        let items: Vec<Increment> = batch
            .into_iter()
            .map(|(id, sum)| Increment {
                namespace: id.namespace,
                key: id.key,
                timestamp_ms: id.minute_ms,
                delta: sum.delta,
                events: sum.events,
                op_id: None,
            })
            .collect();
        tokio::spawn(async move {
            self.send(items).await;
            drop(permit);
        });
    }

    /// Sends `items`, resending those certainly not applied.
    async fn send(&self, mut items: Vec<Increment>) {
        let mut backoff = Duration::from_millis(20);
        for attempt in 0..=self.config.retries {
            let outcomes = self.client.increment(items.clone()).await;
            let again = self.settle(items, outcomes, attempt < self.config.retries);
            if again.is_empty() {
                return;
            }
            items = again;
            let jitter = rand::random_range(0..=backoff.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Counts the outcomes of a send; returns the sums to resend.
    fn settle(
        &self,
        items: Vec<Increment>,
        outcomes: Vec<Outcome<()>>,
        may_resend: bool,
    ) -> Vec<Increment> {
        let mut again = Vec::new();
        let mut report = lock(&self.report);
        for (item, outcome) in items.into_iter().zip(outcomes) {
            let events = u64::from(item.events);
            match outcome {
                Outcome::Ok(()) => report.events_acknowledged += events,
                Outcome::Indeterminate(_) => report.events_indeterminate += events,
                Outcome::Failed(e) if may_resend && retryable(&e) => again.push(item),
                Outcome::Failed(e) => {
                    tracing::warn!(error = %e, events, "producer dropped a sum");
                    report.events_failed += events;
                }
            }
        }
        again
    }
}

/// Whether a failed (certainly not applied) sum may succeed if resent.
fn retryable(e: &ClientError) -> bool {
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
    fn a_sum_never_straddles_two_minutes() {
        let at = |ts: i64| ts.div_euclid(MINUTE_MS) * MINUTE_MS;
        assert_eq!(at(119_999), 60_000);
        assert_eq!(at(120_000), 120_000);
        assert_eq!(at(-1), -60_000);
    }

    #[test]
    fn only_transient_failures_are_resent() {
        let node = |code| ClientError::Node {
            code,
            message: String::new(),
        };
        assert!(retryable(&node(crate::ErrorCode::Unavailable)));
        assert!(retryable(&node(crate::ErrorCode::Overloaded)));
        assert!(retryable(&ClientError::Unreachable("x".into())));
        assert!(!retryable(&node(crate::ErrorCode::UnknownNamespace)));
        assert!(!retryable(&ClientError::InvalidRequest("x".into())));
    }
}
