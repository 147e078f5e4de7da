//! [`Ingestor`]: exactly-once ingestion from a log with offsets.
//!
//! A consumer reads a range of offsets `[start, end)` from its source,
//! sums the events in an [`Aggregate`], and calls [`Ingestor::commit`].
//! The commit names each sum with an op id derived from the source, the
//! range and the cell ([`source_op_id`]), writes the sums to the spool
//! (fsynced), then moves the source's [`Checkpoint`] to `end`, then hands
//! the sums to the outbox, which sends them until each is settled and
//! marks it done in the spool. After a crash anywhere in that sequence
//! the consumer reopens the ingestor, resumes reading at
//! [`Ingestor::resume_offset`] (the checkpoint, or the spool's high water
//! if the crash fell between the two writes), and the spool resends what
//! was not settled, under the same ids: no event is read into two sums,
//! and no sum counts twice while its id is live (the nodes' op-id window,
//! 10 minutes by default).
//!
//! A Kafka consumer plugs in the same way, with `topic/partition` as the
//! source and the partition's offsets:
//!
//! ```no_run
//! # async fn run(client: tally_client::Client, records: Vec<(u64, String, i64)>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use tally_client::ingest::{Aggregate, Ingestor, IngestorConfig, SourceRange};
//!
//! let ingestor = Ingestor::open(client, "state/views-0".as_ref(), IngestorConfig::default())?;
//! let source = "views/0";
//! // Seek the partition here:
//! let start = ingestor.resume_offset(source);
//! let mut sums = Aggregate::default();
//! let mut end = start;
//! for (offset, video, ts) in records.into_iter().filter(|r| r.0 >= start) {
//!     sums.add("default", video.as_bytes(), ts, 1)?;
//!     end = offset + 1;
//! }
//! ingestor
//!     .commit(SourceRange { source: source.into(), start, end }, sums)
//!     .await?;
//! ingestor.finish(None).await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoint, CheckpointError};
use super::lock;
use super::outbox::{Delivered, Outbox, OutboxConfig};
use super::spool::{Recovered, Spool, SpoolConfig, SpoolError};
use super::sums::{minute_of, sendable_key, source_op_id, SourceRange, Sum};
use crate::client::Client;
use crate::error::ClientError;
use crate::op_id::now_ms;

/// What [`Ingestor::commit`] does when the spool has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolFullPolicy {
    /// Wait until sums settle and free room (back-pressure on the reader).
    #[default]
    Block,
    /// Fail the commit with [`SpoolError::Full`]; nothing of it is kept.
    Fail,
}

/// How an ingestor spools and sends.
#[derive(Debug, Clone, Copy)]
pub struct IngestorConfig {
    /// The spool's budget.
    pub spool: SpoolConfig,
    /// When the spool is full.
    pub on_full: SpoolFullPolicy,
    /// Sums per request at most.
    pub batch: usize,
    /// Requests in flight at once.
    pub workers: usize,
    /// Sums committed and never sent yet, at most: a commit beyond it
    /// waits (back-pressure when the cluster is slower than the reader).
    pub max_unsent: usize,
    /// A sum no attempt can have applied gets a new op id once its own
    /// is this old; keep it below the nodes' op-id window.
    pub op_id_reissue_after: Duration,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        IngestorConfig {
            spool: SpoolConfig {
                max_bytes: 256 << 20,
            },
            on_full: SpoolFullPolicy::Block,
            batch: 5_000,
            workers: 4,
            max_unsent: 100_000,
            op_id_reissue_after: Duration::from_secs(300),
        }
    }
}

/// Why an ingestor could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The spool failed (or is full, under [`SpoolFullPolicy::Fail`]).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A sum cannot hold the events given: more than `u32::MAX` events
    /// or a delta past the `i64` range in one cell of one range.
    #[error("{0}")]
    Overflow(String),
}

/// The events of a range summed per cell (namespace, key, minute).
#[derive(Debug, Default, Clone)]
pub struct Aggregate {
    cells: HashMap<(String, Vec<u8>, i64), (i64, u32)>,
    events: u64,
}

impl Aggregate {
    /// Adds one event of `delta` to `key` at `timestamp_ms`.
    pub fn add(
        &mut self,
        namespace: &str,
        key: &[u8],
        timestamp_ms: i64,
        delta: i64,
    ) -> Result<(), ClientError> {
        sendable_key(key)?;
        let cell = (namespace.to_owned(), key.to_vec(), minute_of(timestamp_ms));
        let (sum, events) = self.cells.entry(cell).or_insert((0, 0));
        match (sum.checked_add(delta), events.checked_add(1)) {
            (Some(s), Some(e)) => {
                *sum = s;
                *events = e;
            }
            _ => {
                return Err(ClientError::InvalidRequest(
                    "a cell's sum over this range overflows; commit smaller ranges".into(),
                ))
            }
        }
        self.events += 1;
        Ok(())
    }

    /// Events added.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Distinct cells.
    pub fn cells(&self) -> usize {
        self.cells.len()
    }

    fn into_sums(self, range: &SourceRange, made_ms: i64) -> Vec<Sum> {
        let mut sums: Vec<Sum> = self
            .cells
            .into_iter()
            .map(|((namespace, key, minute_ms), (delta, events))| Sum {
                op_id: source_op_id(range, &namespace, &key, minute_ms, made_ms),
                namespace,
                key,
                minute_ms,
                delta,
                events,
            })
            .collect();
        sums.sort_by(|a, b| {
            (&a.namespace, &a.key, a.minute_ms).cmp(&(&b.namespace, &b.key, b.minute_ms))
        });
        sums
    }
}

/// What an ingestor has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    /// Events in committed ranges.
    pub events_committed: u64,
    /// Sums committed (spooled, then sent).
    pub sums_committed: u64,
    /// Sums the spool held when it was opened (left by an earlier run).
    pub sums_recovered: u64,
    /// What became of the sums sent.
    pub delivered: Delivered,
    /// Sums in the spool not yet settled.
    pub sums_pending: u64,
    /// The spool's size on disk.
    pub spool_bytes: u64,
}

/// Exactly-once ingestion of a log's ranges (see the module docs). One
/// process per state directory.
#[derive(Debug)]
pub struct Ingestor {
    config: IngestorConfig,
    spool: Arc<Mutex<Spool>>,
    checkpoint: Arc<Mutex<Checkpoint>>,
    outbox: Arc<Outbox>,
    recovered: Recovered,
    report: Mutex<IngestReport>,
}

impl Ingestor {
    /// Opens the state in `dir` (`dir/spool`, `dir/checkpoint`), creating
    /// it if new, and starts resending what an earlier run left unsettled.
    pub fn open(
        client: Client,
        dir: &Path,
        config: IngestorConfig,
    ) -> Result<Ingestor, IngestError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let checkpoint = Checkpoint::open(&dir.join("checkpoint"))?;
        let (spool, recovered) = Spool::open(&dir.join("spool"), config.spool)?;
        let left = spool.pending();
        let spool = Arc::new(Mutex::new(spool));
        let outbox = Outbox::start(
            client,
            OutboxConfig {
                batch: config.batch,
                workers: config.workers,
                retries: 0,
                reissue_after: config.op_id_reissue_after,
            },
            Some(spool.clone()),
        );
        let report = IngestReport {
            sums_recovered: left.len() as u64,
            ..IngestReport::default()
        };
        let ingestor = Ingestor {
            config,
            spool,
            checkpoint: Arc::new(Mutex::new(checkpoint)),
            outbox,
            recovered,
            report: Mutex::new(report),
        };
        ingestor.outbox.push(left, true, true);
        Ok(ingestor)
    }

    /// What opening the spool repaired (a record torn by a crash).
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Where to resume reading `source`: past every range committed.
    pub fn resume_offset(&self, source: &str) -> u64 {
        let checkpoint = lock(&self.checkpoint).offset(source);
        let water = lock(&self.spool).high_water(source).unwrap_or(0);
        checkpoint.max(water)
    }

    /// The checkpoint file.
    pub fn checkpoint_path(&self) -> PathBuf {
        lock(&self.checkpoint).path().to_path_buf()
    }

    /// Commits the events of `range`, summed in `sums`: durable in the
    /// spool and the checkpoint moved to `range.end` when this returns
    /// `Ok`; sent in the background. Commits of one source must come in
    /// order, each starting where the previous one ended.
    pub async fn commit(&self, range: SourceRange, sums: Aggregate) -> Result<(), IngestError> {
        let max_unsent = self.config.max_unsent.max(1);
        self.outbox.wait_for(|o| o.fresh() < max_unsent, None).await;
        let events = sums.events();
        let sums = sums.into_sums(&range, now_ms());
        loop {
            let (spool, batch, r) = (self.spool.clone(), sums.clone(), range.clone());
            let appended =
                tokio::task::spawn_blocking(move || lock(&spool).append(Some(&r), &batch))
                    .await
                    .unwrap_or_else(|e| {
                        Err(SpoolError::Io {
                            path: PathBuf::new(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    });
            match appended {
                Ok(()) => break,
                Err(SpoolError::Full { .. }) if self.config.on_full == SpoolFullPolicy::Block => {
                    // Room comes as sums settle.
                    let before = self.outbox.unsettled();
                    self.outbox
                        .wait_for(
                            |o| o.unsettled() < before || before == 0,
                            Some(Instant::now() + Duration::from_millis(500)),
                        )
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (checkpoint, source, end) = (self.checkpoint.clone(), range.source.clone(), range.end);
        tokio::task::spawn_blocking(move || lock(&checkpoint).save(&source, end))
            .await
            .unwrap_or_else(|e| {
                Err(CheckpointError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        {
            let mut report = lock(&self.report);
            report.events_committed += events;
            report.sums_committed += sums.len() as u64;
        }
        self.outbox.push(sums, true, false);
        Ok(())
    }

    /// Waits until every committed sum is settled (or `timeout` passed);
    /// whether they are. Sums still pending stay in the spool for the
    /// next run.
    pub async fn finish(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.outbox.wait_for(|o| o.unsettled() == 0, deadline).await
    }

    /// The report so far.
    pub fn report(&self) -> IngestReport {
        let spool = lock(&self.spool);
        IngestReport {
            delivered: self.outbox.delivered(),
            sums_pending: spool.pending_len() as u64,
            spool_bytes: spool.bytes(),
            ..*lock(&self.report)
        }
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        self.outbox.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_aggregate_sums_per_minute_cell_and_names_sums_by_range() {
        let mut a = Aggregate::default();
        a.add("v", b"x", 60_000, 2).unwrap();
        a.add("v", b"x", 119_999, 3).unwrap();
        a.add("v", b"x", 120_000, 1).unwrap();
        a.add("v", b"y", 60_000, -1).unwrap();
        assert_eq!((a.events(), a.cells()), (4, 3));
        let range = SourceRange {
            source: "f".into(),
            start: 0,
            end: 40,
        };
        let sums = a.clone().into_sums(&range, 9);
        assert_eq!(
            sums.iter()
                .map(|s| (s.key.as_slice(), s.minute_ms, s.delta, s.events))
                .collect::<Vec<_>>(),
            vec![
                (&b"x"[..], 60_000, 5, 2),
                (b"x", 120_000, 1, 1),
                (b"y", 60_000, -1, 1)
            ]
        );
        assert_eq!(
            a.into_sums(&range, 9),
            sums,
            "the same range names the same ids"
        );
        let mut big = Aggregate::default();
        big.add("v", b"x", 0, i64::MAX).unwrap();
        assert!(big.add("v", b"x", 0, 1).is_err());
        assert_eq!(big.events(), 1, "the refused event is not counted");
    }
}
