//! [`Repairer`]: anti-entropy, so that replicas converge even where no
//! hint and no read brought them together (a hint past its window, a
//! replica that lost unsynced writes in a power loss, a leader that died
//! before replicating and whose write was flushed before it could be
//! recovered from its WAL).
//!
//! For one token range:
//!
//! 1. every live replica computes the range's Merkle leaves
//!    ([`crate::convergence::merkle::Leaves`]) over its own cells, at a
//!    depth sized to the range (1,024 leaves up to 65,536);
//! 2. leaves whose hashes differ between replicas are read from all of
//!    them (the cells of those token slices only);
//! 3. the cells are merged by the CRDT rule, and each replica is sent the
//!    merged cells it lacks: the same merge and write as read repair.
//!
//! Cells are states and merges idempotent, so a repair racing live writes
//! is harmless: at worst a leaf differs again and the next repair looks at
//! it. Ranges with fewer than two live replicas, or a replica that does not
//! answer, are skipped and reported.
//!
//! Three callers: the schedule (`repair_schedule`, one range at a time,
//! throttled), an operator's `tally repair` (every range this node
//! replicates, at full speed) and the streaming of a topology change
//! (`sync_ranges`). A repair takes the range's lease on every live
//! replica first ([`crate::convergence::repair_ledger`]), so one repair of
//! a range runs at a time cluster-wide; a stream does not (the metadata
//! orders topology changes). On this node, one range is synced at a time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::{KeyRange, RepairReport, Request, Response};
use tally_consensus::{ClusterMap, HostId, TokenRange};

use crate::clock::Clock;
use crate::context::NodeContext;
use crate::convergence::merkle::{fold, Leaves, MAX_DEPTH};
use crate::convergence::repair_config::RepairConfig;
use crate::convergence::repair_ledger::{RangeKey, RepairLedger};
use crate::replication::read_repair::merge_replicas;

/// Depth of the smallest trees compared (1,024 leaves).
pub const DEPTH: u8 = 10;
/// Cells per leaf the depth aims at: past `32 << DEPTH` cells in a range,
/// the tree deepens.
const CELLS_PER_LEAF: u64 = 32;
/// Differing leaves read per round trip (each one or two key ranges, and a
/// replica read takes at most 64).
const LEAVES_PER_READ: usize = 32;
/// Deadline of each step against one replica.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a lease request waits for its answer.
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The depth of the trees to compare over a range of `cells` cells.
pub fn depth_for(cells: u64) -> u8 {
    let leaves = cells.div_ceil(CELLS_PER_LEAF).max(1);
    let depth = 64 - (leaves - 1).leading_zeros() as u8;
    depth.clamp(DEPTH, MAX_DEPTH)
}

/// How one range's repair went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Compared (and converged): leaves compared, leaves differing, cells
    /// sent to replicas.
    Repaired {
        /// Leaves compared.
        leaves: u64,
        /// Leaves that differed.
        differing: u64,
        /// Cells sent to replicas that lacked them.
        cells: u64,
    },
    /// A replica told of a repair recent enough: nothing to do.
    RecentlyRepaired {
        /// When.
        at_ms: i64,
    },
    /// Another node holds the range's lease.
    Busy {
        /// Who.
        holder: u64,
    },
}

/// Counts of the repairs this node ran, for metrics.
#[derive(Debug, Default)]
pub struct RepairCounts {
    /// Ranges repaired.
    pub ranges_repaired: AtomicU64,
    /// Ranges whose repair failed (a replica down or not answering).
    pub ranges_failed: AtomicU64,
    /// Ranges skipped because another node was repairing them.
    pub ranges_busy: AtomicU64,
    /// Cells sent to replicas that lacked them.
    pub cells: AtomicU64,
    /// Bytes of trees and cells moved.
    pub bytes: AtomicU64,
}

/// Runs anti-entropy repairs for one node.
#[derive(Debug)]
pub struct Repairer {
    ctx: Arc<NodeContext>,
    config: RepairConfig,
    ledger: RepairLedger,
    /// One range synced at a time on this node.
    slot: tokio::sync::Mutex<()>,
    /// An operator's repair or a stream is running (a second is refused).
    running: AtomicBool,
    done: AtomicU32,
    total: AtomicU32,
    counts: RepairCounts,
}

/// Paces a repair to a byte rate.
struct Throttle {
    bytes_per_s: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(bytes_per_s: u64) -> Throttle {
        Throttle {
            bytes_per_s,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` moved and waits until the rate allows them.
    async fn spend(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_s as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The leases a repair holds on a range's replicas.
struct Lease {
    range: RangeKey,
    hosts: Vec<HostId>,
    taken: Instant,
}

impl Repairer {
    /// A repairer for the node of `ctx`, its history in `ledger`.
    pub fn new(ctx: Arc<NodeContext>, config: RepairConfig, ledger: RepairLedger) -> Arc<Repairer> {
        Arc::new(Repairer {
            ctx,
            config,
            ledger,
            slot: tokio::sync::Mutex::new(()),
            running: AtomicBool::new(false),
            done: AtomicU32::new(0),
            total: AtomicU32::new(0),
            counts: RepairCounts::default(),
        })
    }

    /// The node's context.
    pub(crate) fn ctx(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// The schedule's settings.
    pub fn config(&self) -> &RepairConfig {
        &self.config
    }

    /// The last repair of every range, and the leases held here.
    pub fn ledger(&self) -> &RepairLedger {
        &self.ledger
    }

    /// What the repairs so far did.
    pub fn counts(&self) -> &RepairCounts {
        &self.counts
    }

    /// Ranges done and in all, of the operator's repair or stream running
    /// now (0, 0: none).
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
        self.run_all(&map, ranges, "repair", true).await
    }

    /// Brings the given replicas of each range to the merge of all of
    /// them (a range's `replicas` are whichever nodes take part: the old
    /// and new owners for the streaming of a topology change). `Err` if a
    /// repair or stream is already running here. `what` names it in the
    /// log.
    pub(crate) async fn sync_ranges(
        &self,
        map: &ClusterMap,
        ranges: Vec<TokenRange>,
        what: &str,
    ) -> Result<RepairReport, String> {
        self.run_all(map, ranges, what, false).await
    }

    async fn run_all(
        &self,
        map: &ClusterMap,
        ranges: Vec<TokenRange>,
        what: &str,
        leased: bool,
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
            let result = if leased {
                self.repair_leased(map, range, None, None, true).await
            } else {
                let _slot = self.slot.lock().await;
                self.sync_range(map, range, &mut Throttle::new(0), None)
                    .await
                    .map(|(leaves, differing, cells)| RangeOutcome::Repaired {
                        leaves,
                        differing,
                        cells,
                    })
            };
            match result {
                Ok(RangeOutcome::Repaired {
                    leaves,
                    differing,
                    cells,
                }) => {
                    report.ranges += 1;
                    report.leaves += leaves;
                    report.leaves_differing += differing;
                    report.cells_repaired += cells;
                }
                Ok(other) => {
                    report.ranges_skipped += 1;
                    tracing::warn!(
                        start = range.start,
                        end = range.end,
                        ?other,
                        "range not synced ({what})"
                    );
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

    /// Repairs one range under its lease: takes the lease on every live
    /// replica (if `wait_if_busy`, waiting a while for another holder to
    /// finish), skips the repair if a replica saw one finish at or after
    /// `skip_if_repaired_since` (ms), repairs (throttled to `bytes_per_s`,
    /// unless `None`), and records the time it finished on every replica.
    pub async fn repair_leased(
        &self,
        map: &ClusterMap,
        range: &TokenRange,
        skip_if_repaired_since: Option<i64>,
        bytes_per_s: Option<u64>,
        wait_if_busy: bool,
    ) -> Result<RangeOutcome, String> {
        let _slot = self.slot.lock().await;
        let live = self.live_replicas(range)?;
        let key = (range.start, range.end);
        let give_up = Instant::now()
            + if wait_if_busy {
                STEP_TIMEOUT
            } else {
                Duration::ZERO
            };
        let (mut lease, last) = loop {
            match self.take_lease(key, &live).await? {
                Ok(taken) => break taken,
                Err(holder) if Instant::now() >= give_up => {
                    self.counts.ranges_busy.fetch_add(1, Ordering::Relaxed);
                    return Ok(RangeOutcome::Busy { holder });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if let (Some(last), Some(since)) = (last, skip_if_repaired_since) {
            if last >= since {
                // Someone else repaired it since this node last heard.
                let _ = self.ledger.record(key, last);
                self.release(&lease, None).await;
                return Ok(RangeOutcome::RecentlyRepaired { at_ms: last });
            }
        }
        let mut throttle = Throttle::new(bytes_per_s.unwrap_or(0));
        let result = self
            .sync_range(map, range, &mut throttle, Some(&mut lease))
            .await;
        self.counts
            .bytes
            .fetch_add(throttle.bytes, Ordering::Relaxed);
        match result {
            Ok((leaves, differing, cells)) => {
                let at = self.ctx.clock.now_ms();
                self.release(&lease, Some(at)).await;
                self.counts.ranges_repaired.fetch_add(1, Ordering::Relaxed);
                self.counts.cells.fetch_add(cells, Ordering::Relaxed);
                Ok(RangeOutcome::Repaired {
                    leaves,
                    differing,
                    cells,
                })
            }
            Err(e) => {
                self.release(&lease, None).await;
                self.counts.ranges_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn live_replicas(&self, range: &TokenRange) -> Result<Vec<HostId>, String> {
        let live: Vec<HostId> = range
            .replicas
            .iter()
            .copied()
            .filter(|&h| self.ctx.peers.is_up(h))
            .collect();
        if live.len() < 2 {
            return Err(format!(
                "{} of {} replicas up",
                live.len(),
                range.replicas.len()
            ));
        }
        Ok(live)
    }

    /// Takes the lease of `range` on each of `hosts`, in ascending host
    /// order. `Ok(Err(holder))`: another node holds one (the leases taken
    /// so far are given back). `Ok(Ok((lease, last)))` with the newest
    /// repair any of them knows of.
    async fn take_lease(
        &self,
        range: RangeKey,
        hosts: &[HostId],
    ) -> Result<Result<(Lease, Option<i64>), u64>, String> {
        let mut sorted = hosts.to_vec();
        sorted.sort();
        let mut lease = Lease {
            range,
            hosts: Vec::with_capacity(sorted.len()),
            taken: Instant::now(),
        };
        let mut last: Option<i64> = None;
        for host in sorted {
            match self.lease_on(host, range).await {
                Ok((true, _, seen)) => {
                    lease.hosts.push(host);
                    last = last.max(seen);
                }
                Ok((false, holder, _)) => {
                    self.release(&lease, None).await;
                    return Ok(Err(holder));
                }
                Err(e) => {
                    self.release(&lease, None).await;
                    return Err(e);
                }
            }
        }
        Ok(Ok((lease, last)))
    }

    /// Asks one replica for the lease: `(granted, holder, last repaired)`.
    async fn lease_on(
        &self,
        host: HostId,
        range: RangeKey,
    ) -> Result<(bool, u64, Option<i64>), String> {
        let me = self.ctx.self_id.0;
        let ttl = self.config.lease;
        if host == self.ctx.self_id {
            let granted = self.ledger.acquire(range, me, ttl);
            return Ok((
                granted.is_ok(),
                granted.err().unwrap_or(me),
                self.ledger.last(range),
            ));
        }
        let request = AdminRequest::RepairLease {
            start_token: range.0,
            end_token: range.1,
            holder: me,
            ttl_ms: ttl.as_millis() as u64,
        };
        match self.admin_call(host, &request).await? {
            AdminReply::Lease {
                granted,
                holder,
                last_repaired_ms,
            } => Ok((granted, holder, last_repaired_ms)),
            other => Err(format!(
                "host {}: unexpected lease answer {other:?}",
                host.0
            )),
        }
    }

    /// Gives the lease back on every replica that granted it, recording
    /// `repaired_at` there if the repair succeeded. A replica that does not
    /// answer lets the lease lapse.
    async fn release(&self, lease: &Lease, repaired_at: Option<i64>) {
        let me = self.ctx.self_id.0;
        for &host in &lease.hosts {
            if host == self.ctx.self_id {
                if let Some(at) = repaired_at {
                    if let Err(e) = self.ledger.record(lease.range, at) {
                        tracing::warn!(error = %e, "repair history not written");
                    }
                }
                self.ledger.release(lease.range, me);
                continue;
            }
            let request = AdminRequest::RepairRelease {
                start_token: lease.range.0,
                end_token: lease.range.1,
                holder: me,
                repaired_at_ms: repaired_at,
            };
            if let Err(e) = self.admin_call(host, &request).await {
                tracing::debug!(host = host.0, error = %e, "repair lease not released; it lapses");
            }
        }
    }

    /// Renews the lease once a third of its time has passed.
    async fn renew(&self, lease: &mut Lease) -> Result<(), String> {
        if lease.taken.elapsed() < self.config.lease / 3 {
            return Ok(());
        }
        lease.taken = Instant::now();
        for &host in &lease.hosts {
            match self.lease_on(host, lease.range).await? {
                (true, ..) => {}
                (false, holder, _) => {
                    return Err(format!("lost the range's lease to host {holder}"));
                }
            }
        }
        Ok(())
    }

    async fn admin_call(&self, host: HostId, request: &AdminRequest) -> Result<AdminReply, String> {
        let request = Request::Admin {
            payload: request.to_bytes(),
        };
        match self.ctx.peers.call(host, &request, LEASE_TIMEOUT).await {
            Ok(Response::Admin(body)) => AdminReply::from_bytes(&body),
            Ok(other) => Err(format!("host {}: unexpected answer {other:?}", host.0)),
            Err((e, _)) => Err(format!("host {}: {e}", host.0)),
        }
    }

    /// One range: `(leaves compared, leaves differing, cells repaired)`.
    async fn sync_range(
        &self,
        map: &ClusterMap,
        range: &TokenRange,
        throttle: &mut Throttle,
        mut lease: Option<&mut Lease>,
    ) -> Result<(u64, u64, u64), String> {
        let live = self.live_replicas(range)?;
        let (own, cells_here) = self.own_tree(range).await?;
        let depth = depth_for(cells_here);
        let mut trees = Vec::with_capacity(live.len());
        for &host in &live {
            if host == self.ctx.self_id {
                trees.push(fold(own.clone(), depth));
            } else {
                trees.push(self.tree(map, host, range, depth).await?);
                throttle.spend(8 << depth).await;
            }
        }
        let leaves = Leaves::new(range.start, range.end, depth);
        let differing: Vec<usize> = (0..leaves.len())
            .filter(|&i| trees.windows(2).any(|w| w[0][i] != w[1][i]))
            .collect();
        let mut cells = 0u64;
        for chunk in differing.chunks(LEAVES_PER_READ) {
            if let Some(lease) = lease.as_deref_mut() {
                self.renew(lease).await?;
            }
            let ranges: Vec<KeyRange> = chunk.iter().flat_map(|&i| leaves.key_ranges(i)).collect();
            let deadline = Instant::now() + STEP_TIMEOUT;
            let got = self
                .ctx
                .reads
                .gather(map, &ranges, &live, live.len(), deadline)
                .await
                .map_err(|e| format!("reading differing leaves: {e}"))?;
            let read_bytes: usize = got
                .iter()
                .flat_map(|(_, cells)| cells)
                .map(|c| c.key.len() + c.value.len())
                .sum();
            let (_, stale) = merge_replicas(&got)?;
            let sent_bytes: usize = stale
                .iter()
                .flat_map(|(_, cells)| cells)
                .map(|c| c.key.len() + c.value.len())
                .sum();
            cells += stale.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
            if !stale.is_empty() && !self.ctx.read_repair.repair(map, stale, deadline).await {
                return Err("a replica did not take its repair".into());
            }
            throttle.spend((read_bytes + sent_bytes) as u64).await;
        }
        Ok((leaves.len() as u64, differing.len() as u64, cells))
    }

    /// This node's leaves of the range at the deepest level, and its cells
    /// there (empty when this node holds none of it yet).
    async fn own_tree(&self, range: &TokenRange) -> Result<(Vec<u64>, u64), String> {
        let (start, end) = (range.start, range.end);
        let store = self.ctx.store.clone();
        tokio::task::spawn_blocking(move || store.merkle_leaves_counted(start, end, MAX_DEPTH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)
    }

    async fn tree(
        &self,
        map: &ClusterMap,
        host: HostId,
        range: &TokenRange,
        depth: u8,
    ) -> Result<Vec<u64>, String> {
        let request = Request::MerkleTree {
            epoch: map.epoch(),
            start_token: range.start,
            end_token: range.end,
            depth,
        };
        match self.ctx.peers.call(host, &request, STEP_TIMEOUT).await {
            Ok(Response::Hashes(h)) if h.len() == 1 << depth => Ok(h),
            Ok(other) => Err(format!("host {}: unexpected answer {other:?}", host.0)),
            Err((e, _)) => Err(format!("host {}: {e}", host.0)),
        }
    }

    /// The lease and history requests other replicas send this one.
    pub fn answer(&self, request: &AdminRequest) -> Option<AdminReply> {
        match *request {
            AdminRequest::RepairLease {
                start_token,
                end_token,
                holder,
                ttl_ms,
            } => {
                let range = (start_token, end_token);
                let ttl = Duration::from_millis(ttl_ms).min(Duration::from_secs(3600));
                let granted = self.ledger.acquire(range, holder, ttl);
                Some(AdminReply::Lease {
                    granted: granted.is_ok(),
                    holder: granted.err().unwrap_or(holder),
                    last_repaired_ms: self.ledger.last(range),
                })
            }
            AdminRequest::RepairRelease {
                start_token,
                end_token,
                holder,
                repaired_at_ms,
            } => {
                let range = (start_token, end_token);
                if let Some(at) = repaired_at_ms {
                    if let Err(e) = self.ledger.record(range, at) {
                        tracing::warn!(error = %e, "repair history not written");
                    }
                }
                self.ledger.release(range, holder);
                Some(AdminReply::Done {
                    epoch: self.ctx.epoch(),
                    host_id: None,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_throttled_repair_moves_no_faster_than_its_rate() {
        let started = Instant::now();
        let mut throttle = Throttle::new(1_000_000);
        for _ in 0..4 {
            throttle.spend(50_000).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        let unthrottled = Instant::now();
        Throttle::new(0).spend(u64::MAX / 2).await;
        assert!(unthrottled.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn trees_deepen_with_the_cells_of_a_range() {
        assert_eq!(depth_for(0), DEPTH);
        assert_eq!(depth_for(32 << 10), 10);
        assert_eq!(depth_for((32 << 10) + 1), 11);
        assert_eq!(depth_for(1_000_000), 15);
        assert_eq!(depth_for(u64::MAX), MAX_DEPTH);
    }
}
