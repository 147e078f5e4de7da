//! The producer's distinct adds: members buffered, each (namespace, key,
//! minute, member) once, and sent as `Add` batches.
//!
//! An add needs no op id to count once: adding a member again changes
//! nothing, so members whose outcome is unknown, or that were refused for
//! a passing cause, are simply sent again (with backoff), up to the
//! producer's `retries` rounds beyond the client's own retries; what is
//! still unsettled then is reported as such. Members refused for good
//! (`WrongKind`, `InvalidMember`, ...) are reported as refused. Members are keyed by their minute
//! (the finest bucket), so two adds of one member within a minute are one
//! item. What is buffered or unsettled when the producer is dropped is
//! lost; a source that replays it after a crash cannot count anything
//! twice.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::lock;
use super::sums::minute_of;
use crate::client::{Client, Outcome};
use crate::error::ClientError;
use crate::message::Add;

/// What became of the members handed to the producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MembersReport {
    /// Members handed to `add_member`.
    pub members_added: u64,
    /// Of those, acknowledged (a repeat within its minute counts as its
    /// first).
    pub members_acknowledged: u64,
    /// Refused for good: never counted.
    pub members_refused: u64,
    /// Neither acknowledged nor refused after every retry: maybe counted
    /// (sending them again is safe).
    pub members_unsettled: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    namespace: String,
    key: Vec<u8>,
    minute_ms: i64,
    member: Vec<u8>,
}

#[derive(Debug, Default)]
struct Buffer {
    /// Each buffered item, and how many adds it stands for.
    items: std::collections::HashMap<Item, u64>,
    oldest: Option<Instant>,
}

/// The producer's members, buffered and in flight.
#[derive(Debug)]
pub(super) struct Members {
    client: Client,
    max_items: usize,
    max_delay: Duration,
    retries: u32,
    buffer: Mutex<Buffer>,
    /// One permit per batch in flight.
    in_flight: Arc<Semaphore>,
    batches: usize,
    counts: Arc<Counts>,
}

/// The report's counters, shared with the sending tasks.
#[derive(Debug, Default)]
struct Counts {
    added: AtomicU64,
    acknowledged: AtomicU64,
    refused: AtomicU64,
    unsettled: AtomicU64,
}

impl Members {
    /// Members sent in batches of up to `max_items`, at most
    /// `max_in_flight` batches at once.
    pub(super) fn new(
        client: Client,
        (max_items, max_in_flight): (usize, usize),
        max_delay: Duration,
        retries: u32,
    ) -> Members {
        Members {
            client,
            max_items,
            max_delay,
            retries,
            buffer: Mutex::new(Buffer::default()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            batches: max_in_flight,
            counts: Arc::default(),
        }
    }

    /// Buffers one member; sends a full buffer (waiting for a free slot).
    pub(super) async fn add(
        &self,
        namespace: &str,
        key: &[u8],
        timestamp_ms: i64,
        member: &[u8],
    ) -> Result<(), ClientError> {
        super::sums::sendable_key(key)?;
        if member.is_empty() || member.len() > usize::from(u16::MAX) {
            return Err(ClientError::InvalidRequest(format!(
                "member of {} bytes cannot be sent",
                member.len()
            )));
        }
        let item = Item {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            minute_ms: minute_of(timestamp_ms),
            member: member.to_vec(),
        };
        self.counts.added.fetch_add(1, Relaxed);
        let full = {
            let mut buffer = lock(&self.buffer);
            *buffer.items.entry(item).or_insert(0) += 1;
            buffer.oldest.get_or_insert_with(Instant::now);
            (buffer.items.len() >= self.max_items).then(|| take(&mut buffer))
        };
        if let Some(batch) = full {
            self.send(batch).await;
        }
        Ok(())
    }

    /// Sends the buffer if its oldest member waited `max_delay`.
    pub(super) async fn tick(&self) {
        let due = {
            let mut buffer = lock(&self.buffer);
            match buffer.oldest {
                Some(t) if t.elapsed() >= self.max_delay => Some(take(&mut buffer)),
                _ => None,
            }
        };
        if let Some(batch) = due {
            self.send(batch).await;
        }
    }

    /// Sends what is buffered, and waits until every batch is settled.
    pub(super) async fn flush(&self) {
        let batch = take(&mut lock(&self.buffer));
        if !batch.is_empty() {
            self.send(batch).await;
        }
        // Every permit back: nothing in flight.
        if let Ok(all) = self.in_flight.acquire_many(self.batches as u32).await {
            drop(all);
        }
    }

    /// The report so far.
    pub(super) fn report(&self) -> MembersReport {
        MembersReport {
            members_added: self.counts.added.load(Relaxed),
            members_acknowledged: self.counts.acknowledged.load(Relaxed),
            members_refused: self.counts.refused.load(Relaxed),
            members_unsettled: self.counts.unsettled.load(Relaxed),
        }
    }

    /// Sends `batch` in the background once a slot is free (waiting for
    /// one is the back-pressure).
    async fn send(&self, batch: Vec<(Item, u64)>) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let (client, counts, retries) = (self.client.clone(), self.counts.clone(), self.retries);
        tokio::spawn(async move {
            settle(&client, batch, retries, &counts).await;
            drop(permit);
        });
    }
}

fn take(buffer: &mut Buffer) -> Vec<(Item, u64)> {
    buffer.oldest = None;
    std::mem::take(&mut buffer.items).into_iter().collect()
}

/// Sends `batch` until every item is acknowledged or refused for good, or
/// `retries` more rounds passed, and counts the adds each way.
async fn settle(client: &Client, mut batch: Vec<(Item, u64)>, retries: u32, counts: &Counts) {
    let mut attempt = 0u32;
    while !batch.is_empty() {
        let adds: Vec<Add> = batch
            .iter()
            .map(|(item, _)| Add {
                namespace: item.namespace.clone(),
                key: item.key.clone(),
                timestamp_ms: item.minute_ms,
                member: item.member.clone(),
            })
            .collect();
        let outcomes = client.add(adds).await;
        let mut again = Vec::new();
        let mut seen = HashSet::new();
        for ((item, n), outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Ok(()) => {
                    counts.acknowledged.fetch_add(n, Relaxed);
                }
                Outcome::Failed(ClientError::Node { code, .. }) if !code.is_transient() => {
                    counts.refused.fetch_add(n, Relaxed);
                }
                Outcome::Failed(ClientError::InvalidRequest(_)) => {
                    counts.refused.fetch_add(n, Relaxed);
                }
                _ => {
                    if seen.insert(item.clone()) {
                        again.push((item, n));
                    }
                }
            }
        }
        batch = again;
        if batch.is_empty() {
            return;
        }
        if attempt >= retries {
            let n: u64 = batch.iter().map(|(_, n)| n).sum();
            counts.unsettled.fetch_add(n, Relaxed);
            return;
        }
        attempt += 1;
        let backoff = Duration::from_millis(50u64 << attempt.min(6));
        tokio::time::sleep(backoff.min(Duration::from_secs(2))).await;
    }
}
