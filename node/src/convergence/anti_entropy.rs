//! [`Repairer`]: anti-entropy, so that replicas converge even where no
//! hint and no read brought them together (a hint past its window, a
//! replica that lost unsynced writes in a power loss, a leader that died
//! before replicating and whose write was flushed before it could be
//! recovered from its WAL).
//!
//! For every token range this node replicates, one round:
//!
//! 1. every live replica computes the range's Merkle leaves
//!    ([`crate::convergence::merkle::Leaves`], 1,024 by default) over its own cells;
//! 2. leaves whose hashes differ between replicas are read from all of
//!    them (the cells of those token slices only);
//! 3. the cells are merged by the CRDT rule, and each replica is sent the
//!    merged cells it lacks: the same merge and write as read repair.
//!
//! Cells are states and merges idempotent, so a repair racing live writes
//! is harmless: at worst a leaf differs again and the next repair looks at
//! it. Ranges with fewer than two live replicas, or a replica that does not
//! answer, are skipped and reported. One repair runs at a time per node.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::{KeyRange, RepairReport, Request, Response};
use tally_consensus::{ClusterMap, HostId, TokenRange};

use crate::context::NodeContext;
use crate::convergence::merkle::Leaves;
use crate::replication::read_repair::merge_replicas;

/// Depth of the trees compared (1,024 leaves).
pub const DEPTH: u8 = 10;
/// Differing leaves read per round trip (each one or two key ranges, and a
/// replica read takes at most 64).
const LEAVES_PER_READ: usize = 32;
/// Deadline of each step against one replica.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs anti-entropy repairs for one node.
#[derive(Debug)]
pub struct Repairer {
    ctx: Arc<NodeContext>,
    running: AtomicBool,
    done: AtomicU32,
    total: AtomicU32,
}

impl Repairer {
    /// A repairer for the node of `ctx`.
    pub fn new(ctx: Arc<NodeContext>) -> Arc<Repairer> {
        Arc::new(Repairer {
            ctx,
            running: AtomicBool::new(false),
            done: AtomicU32::new(0),
            total: AtomicU32::new(0),
        })
    }

    /// Ranges done and in all, of the repair running now (0, 0: none).
    pub fn progress(&self) -> (u32, u32) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Repairs every range this node replicates. `Err` if a repair is
    /// already running here.
    pub async fn repair_all(&self) -> Result<RepairReport, String> {
        let map = self.ctx.map();
        let me = self.ctx.self_id;
        let ranges: Vec<TokenRange> = map
            .ranges()
            .into_iter()
            .filter(|r| r.replicas.contains(&me))
            .collect();
        self.sync_ranges(&map, ranges, "repair").await
    }

    /// Brings the given replicas of each range to the merge of all of
    /// them (a range's `replicas` are whichever nodes take part: the
    /// natural ones for a repair; the old and new owners for the streaming
    /// of a topology change). `Err` if a repair or stream is already
    /// running here. `what` names it in the log.
    pub(crate) async fn sync_ranges(
        &self,
        map: &ClusterMap,
        ranges: Vec<TokenRange>,
        what: &str,
    ) -> Result<RepairReport, String> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err("a repair or stream is already running on this node".into());
        }
        let started = Instant::now();
        self.done.store(0, Ordering::Relaxed);
        self.total.store(ranges.len() as u32, Ordering::Relaxed);
        tracing::info!(ranges = ranges.len(), "{what} started");
        let mut report = RepairReport::default();
        for range in &ranges {
            match self.repair_range(map, range).await {
                Ok((leaves, differing, cells)) => {
                    report.ranges += 1;
                    report.leaves += leaves;
                    report.leaves_differing += differing;
                    report.cells_repaired += cells;
                }
                Err(e) => {
                    report.ranges_skipped += 1;
                    tracing::warn!(start = range.start, end = range.end, error = %e, "range not synced ({what})");
                }
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(?report, "{what} finished");
        self.total.store(0, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.running.store(false, Ordering::SeqCst);
        Ok(report)
    }

    /// One range: `(leaves compared, leaves differing, cells repaired)`.
    async fn repair_range(
        &self,
        map: &ClusterMap,
        range: &TokenRange,
    ) -> Result<(u64, u64, u64), String> {
        let peers = &self.ctx.peers;
        let live: Vec<HostId> = range
            .replicas
            .iter()
            .copied()
            .filter(|&h| peers.is_up(h))
            .collect();
        if live.len() < 2 {
            return Err(format!(
                "{} of {} replicas up",
                live.len(),
                range.replicas.len()
            ));
        }
        let mut trees = Vec::with_capacity(live.len());
        for &host in &live {
            trees.push(self.tree(map, host, range).await?);
        }
        let leaves = Leaves::new(range.start, range.end, DEPTH);
        let differing: Vec<usize> = (0..leaves.len())
            .filter(|&i| trees.windows(2).any(|w| w[0][i] != w[1][i]))
            .collect();
        let mut cells = 0u64;
        for chunk in differing.chunks(LEAVES_PER_READ) {
            let ranges: Vec<KeyRange> = chunk.iter().flat_map(|&i| leaves.key_ranges(i)).collect();
            let deadline = Instant::now() + STEP_TIMEOUT;
            let got = self
                .ctx
                .reads
                .gather(map, &ranges, &live, live.len(), deadline)
                .await
                .map_err(|e| format!("reading differing leaves: {e}"))?;
            let (_, stale) = merge_replicas(&got)?;
            cells += stale.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
            if !stale.is_empty() && !self.ctx.read_repair.repair(map, stale, deadline).await {
                return Err("a replica did not take its repair".into());
            }
        }
        Ok((leaves.len() as u64, differing.len() as u64, cells))
    }

    async fn tree(
        &self,
        map: &ClusterMap,
        host: HostId,
        range: &TokenRange,
    ) -> Result<Vec<u64>, String> {
        let (start, end) = (range.start, range.end);
        if host == self.ctx.self_id {
            let store = self.ctx.store.clone();
            return tokio::task::spawn_blocking(move || store.merkle_leaves(start, end, DEPTH))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message);
        }
        let request = Request::MerkleTree {
            epoch: map.epoch(),
            start_token: start,
            end_token: end,
            depth: DEPTH,
        };
        match self.ctx.peers.call(host, &request, STEP_TIMEOUT).await {
            Ok(Response::Hashes(h)) if h.len() == 1 << DEPTH => Ok(h),
            Ok(other) => Err(format!("host {}: unexpected answer {other:?}", host.0)),
            Err((e, _)) => Err(format!("host {}: {e}", host.0)),
        }
    }
}
