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
//! Delivery: every sum carries an op id (see [`Sum`](super::Sum)), so resending it
//! after an unknown outcome counts it once. The outbox resends what
//! failed for a passing cause or has an unknown outcome, up to `retries`
//! times; with a [`Spool`](super::Spool) ([`Producer::with_spool`]) such sums go to
//! local disk instead and are resent until settled, also after the
//! producer restarts. Each event's fate is counted in [`ProducerReport`].
//! Back-pressure: at most `max_in_flight` batches' worth of sums wait to
//! be sent; [`Producer::add`] waits beyond that, so memory stays bounded
//! however fast events arrive.
//!
//! Members of distinct counters ([`Producer::add_member`]) are buffered
//! and batched the same way, each (key, minute, member) once, and resent
//! until settled without op ids: an add is idempotent (`members.rs`).
//!
//! [`Ingestor`](super::Ingestor) is the other way in: a consumer of a log (a file, a
//! Kafka partition) hands it the sums of each range of offsets it read,
//! with a [`Checkpoint`](super::Checkpoint).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::lock;
use super::members::{Members, MembersReport};
use super::outbox::{Delivered, Outbox, OutboxConfig};
use super::spool::{Spool, SpoolConfig, SpoolError};
use super::sums::{minute_of, sendable_key, OpIds, Sum};
use crate::client::Client;
use crate::error::ClientError;
use crate::message::MAX_BATCH_ITEMS;
use crate::op_id::now_ms;

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
    /// Resends of a sum not settled, without a spool (with one, a sum is
    /// resent until settled); rounds of resending members not settled.
    pub retries: u32,
    /// Names this producer in its op ids (random if `None`); two
    /// producers running at once must not share one.
    pub producer_id: Option<u32>,
    /// A sum no attempt can have applied gets a new op id once its own
    /// is this old; keep it below the nodes' op-id window (10 minutes by
    /// default).
    pub op_id_reissue_after: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_delay: Duration::from_millis(10),
            max_cells: 2_000,
            max_in_flight: 4,
            retries: 3,
            producer_id: None,
            op_id_reissue_after: Duration::from_secs(300),
        }
    }
}

/// What a producer has done since it started, in events (one `add` is one
/// event, whatever its delta).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProducerReport {
    /// Events handed to `add`.
    pub events_added: u64,
    /// What became of the sums sent.
    #[serde(flatten)]
    pub delivered: Delivered,
    /// What became of the members handed to `add_member`.
    #[serde(flatten)]
    pub members: MembersReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CellId {
    namespace: String,
    key: Vec<u8>,
    minute_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    delta: i64,
    events: u32,
}

#[derive(Debug, Default)]
struct Buffer {
    sums: HashMap<CellId, Tally>,
    /// When the oldest buffered event arrived.
    oldest: Option<Instant>,
}

impl Buffer {
    fn take(&mut self) -> HashMap<CellId, Tally> {
        self.oldest = None;
        std::mem::take(&mut self.sums)
    }
}

#[derive(Debug)]
struct Shared {
    config: ProducerConfig,
    buffer: Mutex<Buffer>,
    ids: Mutex<OpIds>,
    outbox: Arc<Outbox>,
    events_added: std::sync::atomic::AtomicU64,
    members: Members,
}

/// An aggregating producer over a [`Client`]. Cheap to share behind an
/// `Arc`; `add` may be called from many tasks. Call [`Producer::flush`]
/// before dropping it: events still buffered when it is dropped are lost
/// (and, without a spool, so are sums not yet settled).
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    ticker: JoinHandle<()>,
}

impl Producer {
    /// Starts a producer without a spool (and its timer task) on the
    /// current runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        Producer::start(client, config, None)
    }

    /// Starts a producer whose unsettled sums go to the spool in `dir`,
    /// and resends what an earlier run left there.
    pub fn with_spool(
        client: Client,
        config: ProducerConfig,
        dir: &Path,
        spool: SpoolConfig,
    ) -> Result<Producer, SpoolError> {
        let (spool, _) = Spool::open(dir, spool)?;
        let left = spool.pending();
        let producer = Producer::start(client, config, Some(Arc::new(Mutex::new(spool))));
        producer.shared.outbox.push(left, true, true);
        Ok(producer)
    }

    fn start(client: Client, config: ProducerConfig, spool: Option<Arc<Mutex<Spool>>>) -> Producer {
        let config = ProducerConfig {
            max_cells: config.max_cells.clamp(1, MAX_BATCH_ITEMS),
            max_in_flight: config.max_in_flight.max(1),
            max_delay: config.max_delay.max(Duration::from_micros(100)),
            ..config
        };
        let members = Members::new(
            client.clone(),
            (config.max_cells, config.max_in_flight),
            config.max_delay,
            config.retries,
        );
        let outbox = Outbox::start(
            client,
            OutboxConfig {
                batch: config.max_cells,
                workers: config.max_in_flight,
                retries: config.retries,
                reissue_after: config.op_id_reissue_after,
            },
            spool,
        );
        let producer_id = config.producer_id.unwrap_or_else(rand::random);
        let shared = Arc::new(Shared {
            ids: Mutex::new(OpIds::new(producer_id, 0)),
            config,
            buffer: Mutex::new(Buffer::default()),
            outbox,
            events_added: Default::default(),
            members,
        });
        let ticker = tokio::spawn(tick(Arc::downgrade(&shared)));
        Producer { shared, ticker }
    }

    /// Adds one event of `delta` to `key` at `timestamp_ms`. Returns once
    /// the event is buffered (waiting first if `max_in_flight` batches'
    /// worth of sums wait to be sent); an invalid key is refused here.
    pub async fn add(
        &self,
        namespace: &str,
        key: &[u8],
        timestamp_ms: i64,
        delta: i64,
    ) -> Result<(), ClientError> {
        sendable_key(key)?;
        let id = CellId {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            minute_ms: minute_of(timestamp_ms),
        };
        let full = {
            let mut buffer = lock(&self.shared.buffer);
            // A sum that cannot count one more event is sent first.
            let saturated = buffer
                .sums
                .get(&id)
                .is_some_and(|s| s.events == u32::MAX)
                .then(|| buffer.take());
            let sum = buffer.sums.entry(id).or_insert(Tally {
                delta: 0,
                events: 0,
            });
            sum.delta = sum.delta.wrapping_add(delta);
            sum.events += 1;
            buffer.oldest.get_or_insert_with(Instant::now);
            self.shared.events_added.fetch_add(1, Relaxed);
            let full = (buffer.sums.len() >= self.shared.config.max_cells).then(|| buffer.take());
            [saturated, full]
        };
        for batch in full.into_iter().flatten() {
            self.shared.dispatch(batch).await;
        }
        Ok(())
    }

    /// Adds `member` to the distinct counter `key` of a distinct
    /// namespace at `timestamp_ms` (a viewer of a video). Returns once the
    /// member is buffered (waiting first if `max_in_flight` batches of
    /// members are being sent). Members are sent in batches like sums,
    /// each (key, minute, member) once, and resent while unsettled (up to
    /// `retries` rounds): adding a member again changes nothing, so no op
    /// id is needed. Members are not spooled.
    pub async fn add_member(
        &self,
        namespace: &str,
        key: &[u8],
        timestamp_ms: i64,
        member: &[u8],
    ) -> Result<(), ClientError> {
        self.shared
            .members
            .add(namespace, key, timestamp_ms, member)
            .await
    }

    /// Sends what is buffered and waits until every sum handed over so
    /// far is settled or, with a spool, spooled, and every member
    /// settled. Returns the report as of then.
    pub async fn flush(&self) -> ProducerReport {
        let batch = lock(&self.shared.buffer).take();
        if !batch.is_empty() {
            self.shared.dispatch(batch).await;
        }
        self.shared.members.flush().await;
        self.shared
            .outbox
            .wait_for(|o| o.unspooled() == 0, None)
            .await;
        self.report()
    }

    /// Waits until every sum handed over so far is settled (spooled ones
    /// too), or `timeout` passed; whether they are.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.flush().await;
        self.shared
            .outbox
            .wait_for(|o| o.unsettled() == 0, Some(Instant::now() + timeout))
            .await
    }

    /// The report so far.
    pub fn report(&self) -> ProducerReport {
        ProducerReport {
            events_added: self.shared.events_added.load(Relaxed),
            delivered: self.shared.outbox.delivered(),
            members: self.shared.members.report(),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ticker.abort();
        self.shared.outbox.stop();
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
        shared.members.tick().await;
    }
}

impl Shared {
    /// Names the sums of `batch` with op ids and hands them to the
    /// outbox, once fewer than `max_in_flight` batches' worth wait there.
    async fn dispatch(&self, batch: HashMap<CellId, Tally>) {
        let bound = self.config.max_in_flight * self.config.max_cells;
        self.outbox.wait_for(|o| o.fresh() < bound, None).await;
        let made_ms = now_ms();
        let sums: Vec<Sum> = {
            let mut ids = lock(&self.ids);
            batch
                .into_iter()
                .map(|(id, tally)| Sum {
                    namespace: id.namespace,
                    key: id.key,
                    minute_ms: id.minute_ms,
                    delta: tally.delta,
                    events: tally.events,
                    op_id: ids.next(made_ms),
                })
                .collect()
        };
        self.outbox.push(sums, false, false);
    }
}
