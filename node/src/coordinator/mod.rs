//! [`Coordinator`]: runs a client's request across the key's replicas.
//!
//! Any node coordinates any request. For each key it looks up the
//! preference list (the first N distinct nodes clockwise from the key's
//! token, from the local [`ClusterMap`]; never a wait on metadata).
//!
//! **Writes.** A batch is validated, then split by replica set; the parts
//! run in parallel and results are reported per item. For each part:
//!
//! 1. `W` comes from the consistency level (ONE = 1, QUORUM = N/2 + 1,
//!    ALL = N). If fewer than `W` replicas are up, the part fails with
//!    `Unavailable` and nothing is applied (like Cassandra's
//!    `UnavailableException`).
//! 2. The *leader* applies the deltas to its own shard of each cell: this
//!    node when it is a replica, else the part is forwarded to the first
//!    live replica, which leads it (a forwarded part is never forwarded
//!    again). The leader's write is durable per the node's durability mode
//!    before anything is sent.
//! 3. The leader sends the resulting shard *states* (never deltas) to the
//!    other replicas and answers once `W - 1` of them acknowledged. A
//!    replica that is down, refuses or times out gets a hint.
//! 4. `Failed` only when nothing can have been applied (validation,
//!    unavailable, a local write that certainly did not land); once the
//!    leader applied, a missing acknowledgement is `Indeterminate`.
//!
//! **Reads.** The coordinator asks `R` replicas (itself first when it is
//! one), replacing any that fail by the next live replica, and asking the
//! next one as well when an answer is late (speculative retry), merges their
//! cells by the CRDT rule, and answers from the merge. Replicas that were
//! behind get the merged state (read repair): before the answer for
//! QUORUM and ALL, so that QUORUM reads are monotonic (a later read meets
//! at least one replica holding what this one returned), and for a sample
//! of ONE reads in the background, reading the other live replicas too.
//!
//! With `W + R > N` every acknowledged increment is visible to every later
//! read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tally_client::{
    token, CellState, Consistency, ErrorCode, Increment, ItemResult, KeyRange, ReplicaView,
    Request, Response, RoutingNode, RoutingRange, RoutingTable, ShardView,
};
use tally_consensus::{ClusterMap, HostId};

use crate::context::NodeContext;
use crate::counter::read_plan::{self, ReadPlan};
use crate::counter::shard_set::ShardSet;
use crate::fault_modes::BrokenMode;
use crate::replica::store::unconfirmed;

/// How the coordinator waits and repairs (the `[coordinator]` section of
/// the node's config).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Deadline of a write whose request names none (`timeout_ms = 0`).
    #[serde(rename = "default_write_timeout_ms", with = "crate::units::millis")]
    pub default_write_timeout: Duration,
    /// Longest deadline a write may ask for.
    #[serde(rename = "max_write_timeout_ms", with = "crate::units::millis")]
    pub max_write_timeout: Duration,
    /// Deadline of a read.
    #[serde(rename = "read_timeout_ms", with = "crate::units::millis")]
    pub read_timeout: Duration,
    /// A read still missing answers this long after it asked also asks the
    /// next replica (Cassandra's speculative retry).
    #[serde(rename = "speculative_retry_ms", with = "crate::units::millis")]
    pub speculative_retry: Duration,
    /// One ONE read in this many also reads the other live replicas in the
    /// background and repairs them (0: never).
    pub one_read_repair_every: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            default_write_timeout: Duration::from_secs(2),
            max_write_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(2),
            speculative_retry: Duration::from_millis(50),
            one_read_repair_every: 10,
        }
    }
}

/// Replicas that must answer at `consistency` out of `replicas`.
pub fn needed(consistency: Consistency, replicas: usize) -> usize {
    match consistency {
        Consistency::One => 1.min(replicas),
        Consistency::Quorum => replicas / 2 + 1,
        Consistency::All => replicas,
    }
}

/// Coordinates requests over the cluster.
#[derive(Debug)]
pub struct Coordinator {
    ctx: Arc<NodeContext>,
    config: CoordinatorConfig,
    read_repairs: AtomicU64,
    one_reads: AtomicU64,
}

/// One replica's answer to a read.
type ReplicaCells = (HostId, Result<Vec<CellState>, String>);

impl Coordinator {
    /// A coordinator over the node's parts.
    pub fn new(ctx: Arc<NodeContext>, config: CoordinatorConfig) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            ctx,
            config,
            read_repairs: AtomicU64::new(0),
            one_reads: AtomicU64::new(0),
        })
    }

    /// Cells repaired during reads since start.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs.load(Ordering::Relaxed)
    }

    fn write_deadline(&self, timeout_ms: u32) -> Instant {
        let asked = if timeout_ms == 0 {
            self.config.default_write_timeout
        } else {
            // Answer a little before the client gives up, so that it gets
            // a typed outcome rather than its own timeout.
            Duration::from_millis(u64::from(timeout_ms) * 9 / 10)
        };
        Instant::now() + asked.min(self.config.max_write_timeout)
    }

    /// Applies a batch of increments; one result per item, in order.
    /// `forwarded`: another coordinator sent it here to lead.
    pub async fn increment(
        self: &Arc<Self>,
        consistency: Consistency,
        timeout_ms: u32,
        mut items: Vec<Increment>,
        forwarded: bool,
    ) -> Vec<ItemResult> {
        if self.ctx.broken == Some(BrokenMode::IgnoreOpIds) {
            items.iter_mut().for_each(|item| item.op_id = None);
        }
        let deadline = self.write_deadline(timeout_ms);
        let map = self.ctx.metadata.map();
        let now_ms = self.ctx.store.clock().now_ms();
        let mut results = vec![ItemResult::Ok; items.len()];
        // Items are grouped by their sets of natural and pending replicas.
        // Sets, not lists: with virtual nodes the same hosts come in ring
        // order starting at different primaries, and grouping by the list
        // would lead and replicate one batch in as many parts as there are
        // orders. The first item's order stands for the group's (it names
        // whom a non-replica forwards to). Groups are few, so a linear
        // search beats hashing.
        //
        // Items with an op id are grouped by their op leader as well: each
        // is led by that one replica only (see `op_leader`).
        let mut groups: Vec<(Route<'_>, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.ctx.store.check(item, now_ms) {
                Ok(()) => {
                    let t = token(&item.namespace, &item.key).0;
                    let (replicas, pending) = map.write_replicas(t);
                    let leader = item.op_id.map(|id| op_leader(replicas, id));
                    match groups.iter_mut().find(|((r, p, l), _)| {
                        *l == leader && same_hosts(r, replicas) && same_hosts(p, pending)
                    }) {
                        Some((_, indices)) => indices.push(i),
                        None => groups.push(((replicas, pending, leader), vec![i])),
                    }
                }
                Err(e) => results[i] = ItemResult::Failed(e.code),
            }
        }
        if groups.len() == 1 && results.iter().all(|r| *r == ItemResult::Ok) {
            // The common case: every item has the same replicas.
            let route = groups
                .pop()
                .map(|(route, _)| owned(route))
                .unwrap_or_default();
            return self
                .clone()
                .run_group(map.clone(), route, items, consistency, deadline, forwarded)
                .await;
        }
        let mut slots: Vec<Option<Increment>> = items.into_iter().map(Some).collect();
        type Part = (Vec<usize>, OwnedRoute, Vec<Increment>);
        let parts: Vec<Part> = groups
            .into_iter()
            .map(|(route, indices)| {
                let part = indices.iter().filter_map(|&i| slots[i].take()).collect();
                (indices, owned(route), part)
            })
            .collect();
        let runs = parts.into_iter().map(|(indices, route, part)| {
            let this = self.clone();
            let map = map.clone();
            async move {
                let r = this
                    .run_group(map, route, part, consistency, deadline, forwarded)
                    .await;
                (indices, r)
            }
        });
        for (indices, part_results) in futures_util::future::join_all(runs).await {
            for (i, r) in indices.into_iter().zip(part_results) {
                results[i] = r;
            }
        }
        results
    }

    /// `(replicas, pending, op_leader)`: the natural replicas, which make
    /// the quorum; those a topology change in progress adds, which get the
    /// write too (hinted if down) without counting towards it; and, for
    /// items with op ids, the one replica that may lead them.
    async fn run_group(
        self: Arc<Self>,
        map: Arc<ClusterMap>,
        (replicas, pending, op_leader): OwnedRoute,
        items: Vec<Increment>,
        consistency: Consistency,
        deadline: Instant,
        forwarded: bool,
    ) -> Vec<ItemResult> {
        let n = items.len();
        // The quorum is of the replication factor, not of the replicas a
        // small cluster has: RF 3 on 2 nodes cannot take ALL.
        let w = needed(consistency, map.replication_factor());
        let live = replicas
            .iter()
            .filter(|&&h| self.ctx.peers.is_up(h))
            .count();
        if live < w {
            return vec![ItemResult::Failed(ErrorCode::Unavailable); n];
        }
        if let Some(leader) = op_leader {
            // Only the op leader knows whether an op id was applied: if it
            // is down, nothing is applied (another replica leading could
            // count a retry of an increment the leader already counted).
            if leader == self.ctx.self_id {
                return self
                    .lead(&map, (&replicas, &pending), items, w, deadline)
                    .await;
            }
            if forwarded {
                return vec![ItemResult::Failed(ErrorCode::StaleRing); n];
            }
            if !self.ctx.peers.is_up(leader) {
                return vec![ItemResult::Failed(ErrorCode::Unavailable); n];
            }
            return self
                .forward(&map, &[leader], items, consistency, deadline)
                .await;
        }
        if replicas.contains(&self.ctx.self_id) {
            return self
                .lead(&map, (&replicas, &pending), items, w, deadline)
                .await;
        }
        if forwarded {
            // The forwarder thought this node a replica: the rings differ.
            return vec![ItemResult::Failed(ErrorCode::StaleRing); n];
        }
        self.forward(&map, &replicas, items, consistency, deadline)
            .await
    }

    /// Leads a part locally, then replicates it.
    async fn lead(
        self: &Arc<Self>,
        map: &ClusterMap,
        (replicas, pending): (&[HostId], &[HostId]),
        items: Vec<Increment>,
        w: usize,
        deadline: Instant,
    ) -> Vec<ItemResult> {
        if self.ctx.broken == Some(BrokenMode::DoubleApply) {
            let _ = self.ctx.writer.lead_durably(items.clone()).await;
        }
        // In `sync` mode the local fsync runs while the states travel to
        // the other replicas; the local write counts once it is durable.
        let (led, durable) = self.ctx.writer.lead(items).await;
        if led.cells.is_empty() {
            return led.results;
        }
        let w = if self.ctx.broken == Some(BrokenMode::AckWithoutQuorum) {
            1
        } else {
            w
        };
        let epoch = map.epoch();
        let cells = Arc::new(led.cells);
        // The acknowledgements that count toward W: this node's own once
        // its write is durable, and each replica's. A replica that says no
        // or is not heard from is a timeout; a local fsync failure says so.
        let replica_ack = |answer: Result<bool, _>| match answer {
            Ok(true) => Ok(()),
            _ => Err(ErrorCode::Timeout),
        };
        let mut answers = FuturesUnordered::new();
        answers.push(Either::Left(durable.wait()));
        for &host in replicas.iter().filter(|&&h| h != self.ctx.self_id) {
            if self.ctx.peers.is_up(host) {
                let answer = self
                    .ctx
                    .replicator
                    .send(host, epoch, cells.clone(), deadline);
                answers.push(Either::Right(answer.map(replica_ack)));
            } else {
                self.ctx.replicator.hint(host, epoch, vec![cells.clone()]);
            }
        }
        for &host in pending.iter().filter(|&&h| h != self.ctx.self_id) {
            if self.ctx.peers.is_up(host) {
                // Not awaited: a failure is hinted by the replicator.
                drop(
                    self.ctx
                        .replicator
                        .send(host, epoch, cells.clone(), deadline),
                );
            } else {
                self.ctx.replicator.hint(host, epoch, vec![cells.clone()]);
            }
        }
        let mut acknowledged = 0;
        let mut failure = ErrorCode::Timeout;
        while acknowledged < w {
            match tokio::time::timeout_at(deadline.into(), answers.next()).await {
                Ok(Some(Ok(()))) => acknowledged += 1,
                Ok(Some(Err(code))) => {
                    if code != ErrorCode::Timeout {
                        failure = code;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut results = led.results;
        if acknowledged < w {
            unconfirmed(&mut results, failure);
        }
        results
    }

    /// Forwards a part to a live replica to lead.
    async fn forward(
        &self,
        map: &ClusterMap,
        replicas: &[HostId],
        items: Vec<Increment>,
        consistency: Consistency,
        deadline: Instant,
    ) -> Vec<ItemResult> {
        let n = items.len();
        let mut request = Request::ForwardedIncrement {
            epoch: map.epoch(),
            consistency,
            timeout_ms: 0,
            items,
        };
        for &host in replicas.iter().filter(|&&h| self.ctx.peers.is_up(h)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Request::ForwardedIncrement { timeout_ms, .. } = &mut request {
                *timeout_ms = left.as_millis().min(u128::from(u32::MAX)) as u32;
            }
            // The leader answers within `left * 0.9`; allow it the rest.
            match self.ctx.peers.call(host, &request, left).await {
                Ok(Response::Increment(results)) if results.len() == n => return results,
                Ok(Response::Error { code, .. }) if code.nothing_applied() => continue,
                Ok(Response::Error { code, .. }) => {
                    return vec![ItemResult::Indeterminate(code); n]
                }
                Ok(_) => return vec![ItemResult::Indeterminate(ErrorCode::Internal); n],
                Err((_, tally_client::Delivery::NotSent)) => continue,
                Err((e, tally_client::Delivery::MaybeSent)) => {
                    // The leader may have applied it: the code must say
                    // "unknown" too (a client trusts either).
                    let code = match e {
                        tally_client::ClientError::Timeout(_) => ErrorCode::Timeout,
                        _ => ErrorCode::PeerLost,
                    };
                    return vec![ItemResult::Indeterminate(code); n];
                }
            }
        }
        vec![ItemResult::Failed(ErrorCode::Unavailable); n]
    }

    /// Answers a read at `consistency`.
    pub async fn read(self: &Arc<Self>, consistency: Consistency, plan: ReadPlan) -> Response {
        let deadline = Instant::now() + self.config.read_timeout;
        let map = self.ctx.metadata.map();
        let replicas = map.replicas(plan.token.0);
        let r = needed(consistency, map.replication_factor());
        let candidates = self.read_order(replicas);
        if candidates.len() < r {
            return unavailable(format!(
                "{} of {} replicas up, {consistency:?} needs {r}",
                candidates.len(),
                replicas.len()
            ));
        }
        let got = match self
            .gather(&map, &plan.ranges, &candidates, r, deadline)
            .await
        {
            Ok(got) => got,
            Err(response) => return response,
        };
        let (merged, stale) = match merge_replicas(&got) {
            Ok(m) => m,
            Err(e) => return error(ErrorCode::Storage, e),
        };
        if consistency == Consistency::One {
            let every = self.config.one_read_repair_every;
            if every > 0
                && self
                    .one_reads
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(every)
            {
                let (this, map, plan) = (self.clone(), map.clone(), plan.clone());
                let others: Vec<HostId> = candidates.into_iter().skip(1).collect();
                tokio::spawn(async move { this.background_repair(&map, &plan, got, others).await });
            }
        } else if !stale.is_empty() && !self.repair(&map, stale, deadline).await {
            return error(
                ErrorCode::Timeout,
                "read repair did not complete; the read is safe to retry",
            );
        }
        let now_ms = self.ctx.store.clock().now_ms();
        plan.answer(merged.iter().map(|(k, s)| (k.as_slice(), s)), now_ms)
    }

    /// Replicas to read, this node first, then the up ones in preference
    /// order.
    fn read_order(&self, replicas: &[HostId]) -> Vec<HostId> {
        let mut order: Vec<HostId> = replicas
            .iter()
            .copied()
            .filter(|&h| h == self.ctx.self_id)
            .collect();
        order.extend(
            replicas
                .iter()
                .copied()
                .filter(|&h| h != self.ctx.self_id && self.ctx.peers.is_up(h)),
        );
        order
    }

    /// Cells from `wanted` replicas out of `candidates`, replacing failed
    /// ones by the next candidate. `Err` is the response to give.
    pub(crate) async fn gather(
        &self,
        map: &ClusterMap,
        ranges: &[KeyRange],
        candidates: &[HostId],
        wanted: usize,
        deadline: Instant,
    ) -> Result<Vec<(HostId, Vec<CellState>)>, Response> {
        let request = Request::ReplicaRead {
            epoch: map.epoch(),
            ranges: ranges.to_vec(),
        };
        let mut next = 0;
        let mut running = FuturesUnordered::new();
        while next < wanted.min(candidates.len()) {
            running.push(self.read_replica(candidates[next], &request, deadline));
            next += 1;
        }
        let mut got = Vec::with_capacity(wanted);
        let mut last_error = String::new();
        let mut speculate_at = Instant::now() + self.config.speculative_retry;
        while got.len() < wanted {
            // A replica that neither answers nor fails (paused, overloaded,
            // behind a partition) would hold the read until the deadline:
            // past `speculative_retry`, ask the next replica as well.
            let wake = if next < candidates.len() {
                speculate_at.min(deadline)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wake.into(), running.next()).await {
                Err(_) if Instant::now() < deadline && next < candidates.len() => {
                    running.push(self.read_replica(candidates[next], &request, deadline));
                    next += 1;
                    speculate_at = Instant::now() + self.config.speculative_retry;
                }
                Ok(Some((host, Ok(cells)))) => got.push((host, cells)),
                Ok(Some((host, Err(e)))) => {
                    last_error = format!("host {}: {e}", host.0);
                    if next < candidates.len() {
                        running.push(self.read_replica(candidates[next], &request, deadline));
                        next += 1;
                    }
                }
                Ok(None) => {
                    return Err(unavailable(format!(
                        "{} of {wanted} replicas answered; last error: {last_error}",
                        got.len()
                    )))
                }
                Err(_) => {
                    return Err(error(
                        ErrorCode::Timeout,
                        format!("{} of {wanted} replicas answered in time", got.len()),
                    ))
                }
            }
        }
        Ok(got)
    }

    async fn read_replica(
        &self,
        host: HostId,
        request: &Request,
        deadline: Instant,
    ) -> ReplicaCells {
        if host == self.ctx.self_id {
            let Request::ReplicaRead { ranges, .. } = request else {
                return (host, Err("not a read".into()));
            };
            let cells = crate::replica::store::read_cells_async(&self.ctx.store, ranges.clone())
                .await
                .map_err(|e| e.to_string());
            return (host, cells);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let cells = match self.ctx.peers.call(host, request, left).await {
            Ok(Response::Cells(cells)) => Ok(cells),
            Ok(Response::Error { code, message }) => Err(format!("{code:?}: {message}")),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err((e, _)) => Err(e.to_string()),
        };
        (host, cells)
    }

    /// Sends each stale replica the merged cells it lacks; `true` when
    /// every one acknowledged before the deadline.
    pub(crate) async fn repair(
        &self,
        map: &ClusterMap,
        stale: Vec<(HostId, Vec<CellState>)>,
        deadline: Instant,
    ) -> bool {
        let writes = stale.into_iter().map(|(host, cells)| async move {
            let n = cells.len() as u64;
            let ok = if host == self.ctx.self_id {
                self.ctx.writer.merge(cells).await.is_ok()
            } else {
                let answer = self
                    .ctx
                    .replicator
                    .send(host, map.epoch(), Arc::new(cells), deadline);
                matches!(
                    tokio::time::timeout_at(deadline.into(), answer).await,
                    Ok(Ok(true))
                )
            };
            if ok {
                self.read_repairs.fetch_add(n, Ordering::Relaxed);
            }
            ok
        });
        futures_util::future::join_all(writes)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Reads `others` too and repairs whoever is behind (ONE reads).
    async fn background_repair(
        &self,
        map: &ClusterMap,
        plan: &ReadPlan,
        mut got: Vec<(HostId, Vec<CellState>)>,
        others: Vec<HostId>,
    ) {
        if others.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.config.read_timeout;
        if let Ok(more) = self
            .gather(map, &plan.ranges, &others, others.len(), deadline)
            .await
        {
            got.extend(more);
        }
        if let Ok((_, stale)) = merge_replicas(&got) {
            if !stale.is_empty() {
                self.repair(map, stale, deadline).await;
            }
        }
    }

    /// Every replica's raw copy of a key's total cell.
    pub async fn inspect(&self, namespace: &str, key: &[u8]) -> Response {
        let plan = {
            let namespaces = self.ctx.store.namespaces();
            match ReadPlan::total(&namespaces, self.ctx.store.limits(), namespace, key, 0) {
                Ok(plan) => plan,
                Err(e) => return error(e.code, e.message),
            }
        };
        let Some(range) = plan
            .ranges
            .first()
            .filter(|r| read_plan::is_point(r))
            .cloned()
        else {
            return error(
                ErrorCode::ResolutionNotKept,
                format!("namespace {namespace} keeps no total cell to inspect"),
            );
        };
        let map = self.ctx.metadata.map();
        let request = Request::ReplicaRead {
            epoch: map.epoch(),
            ranges: vec![range],
        };
        let deadline = Instant::now() + self.config.read_timeout;
        let replicas = map.replicas(plan.token.0).to_vec();
        let reads = replicas
            .iter()
            .map(|&h| self.read_replica(h, &request, deadline));
        let views = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .map(|(host, cells)| {
                let address = map
                    .member(host)
                    .map(|m| m.address.clone())
                    .unwrap_or_default();
                let (error, shards) = match cells {
                    Ok(cells) => match cells.first().map(|c| ShardSet::decode(&c.value)) {
                        None => (None, Vec::new()),
                        Some(Some(set)) => (
                            None,
                            set.shards()
                                .iter()
                                .map(|s| ShardView {
                                    id: s.id,
                                    clock: s.clock,
                                    sum: s.sum,
                                    count: s.count,
                                })
                                .collect(),
                        ),
                        Some(None) => (Some("malformed cell".to_owned()), Vec::new()),
                    },
                    Err(e) => (Some(e), Vec::new()),
                };
                ReplicaView {
                    host_id: host.0,
                    address,
                    error,
                    shards,
                }
            })
            .collect();
        Response::Replicas(views)
    }

    /// The routing table clients use.
    pub fn routing(&self) -> RoutingTable {
        let map = self.ctx.metadata.map();
        RoutingTable {
            epoch: map.epoch(),
            replication_factor: map.replication_factor() as u32,
            nodes: map
                .members()
                .map(|m| RoutingNode {
                    host_id: m.host_id.0,
                    address: m.address.clone(),
                })
                .collect(),
            ranges: map
                .ranges()
                .into_iter()
                .map(|r| RoutingRange {
                    end_token: r.end,
                    replicas: r.replicas.iter().map(|h| h.0).collect(),
                })
                .collect(),
        }
    }
}

/// The replicas' cells merged by the CRDT rule, and for each replica that
/// was behind, the merged cells it lacks.
#[allow(clippy::type_complexity)]
pub(crate) fn merge_replicas(
    got: &[(HostId, Vec<CellState>)],
) -> Result<(BTreeMap<Vec<u8>, ShardSet>, Vec<(HostId, Vec<CellState>)>), String> {
    let mut merged: BTreeMap<Vec<u8>, ShardSet> = BTreeMap::new();
    for (host, cells) in got {
        for cell in cells {
            let set = ShardSet::decode(&cell.value)
                .ok_or_else(|| format!("host {} sent a malformed cell", host.0))?;
            match merged.get_mut(&cell.key) {
                Some(m) => m.merge(&set),
                None => {
                    merged.insert(cell.key.clone(), set);
                }
            }
        }
    }
    // The common case: every replica sent the same bytes.
    if got.windows(2).all(|w| w[0].1 == w[1].1) {
        return Ok((merged, Vec::new()));
    }
    let encoded: Vec<(&Vec<u8>, Vec<u8>)> = merged.iter().map(|(k, s)| (k, s.encode())).collect();
    let mut stale = Vec::new();
    for (host, cells) in got {
        let have: HashMap<&[u8], &[u8]> = cells
            .iter()
            .map(|c| (c.key.as_slice(), c.value.as_slice()))
            .collect();
        let missing: Vec<CellState> = encoded
            .iter()
            .filter(|(k, v)| have.get(k.as_slice()) != Some(&v.as_slice()))
            .map(|(k, v)| CellState {
                key: (*k).clone(),
                value: v.clone(),
            })
            .collect();
        if !missing.is_empty() {
            stale.push((*host, missing));
        }
    }
    Ok((merged, stale))
}

/// A part's natural and pending replicas, as the cluster map lists them.
/// Where a group of items goes: natural replicas, pending replicas, and
/// the op leader of items with op ids.
type Route<'m> = (&'m [HostId], &'m [HostId], Option<HostId>);
type OwnedRoute = (Vec<HostId>, Vec<HostId>, Option<HostId>);

fn owned((replicas, pending, leader): Route<'_>) -> OwnedRoute {
    (replicas.to_vec(), pending.to_vec(), leader)
}

/// The replica that leads every attempt of the increment with op id `id`:
/// chosen from the replica *set* (by host id, not ring order, which
/// differs between virtual nodes), by the id's random low bits, so that
/// op ids spread over the replicas and every coordinator picks the same.
pub fn op_leader(replicas: &[HostId], id: u128) -> HostId {
    let mut hosts = replicas.to_vec();
    hosts.sort_unstable();
    let i = (id as u64 % hosts.len().max(1) as u64) as usize;
    hosts.get(i).copied().unwrap_or(HostId(0))
}

/// Whether two replica lists hold the same hosts, in any order (a list
/// never repeats a host).
fn same_hosts(a: &[HostId], b: &[HostId]) -> bool {
    a.len() == b.len() && a.iter().all(|h| b.contains(h))
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn unavailable(message: String) -> Response {
    error(ErrorCode::Unavailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::shard_set::Shard;

    fn cell(key: &[u8], shards: &[(u64, u64, i64)]) -> CellState {
        let mut set = ShardSet::default();
        for &(id, clock, sum) in shards {
            set.merge(&ShardSet::single(Shard {
                id,
                clock,
                sum,
                count: clock,
            }));
        }
        CellState {
            key: key.to_vec(),
            value: set.encode(),
        }
    }

    #[test]
    fn quorum_needs_a_majority() {
        assert_eq!(needed(Consistency::One, 3), 1);
        assert_eq!(needed(Consistency::Quorum, 3), 2);
        assert_eq!(needed(Consistency::Quorum, 4), 3);
        assert_eq!(needed(Consistency::Quorum, 1), 1);
        assert_eq!(needed(Consistency::All, 3), 3);
    }

    #[test]
    fn identical_replicas_need_no_repair() {
        let a = vec![cell(b"k", &[(1, 3, 30)])];
        let (merged, stale) = merge_replicas(&[(HostId(1), a.clone()), (HostId(2), a)]).unwrap();
        assert_eq!(merged.len(), 1);
        assert!(stale.is_empty());
    }

    #[test]
    fn each_stale_replica_gets_exactly_what_it_lacks() {
        let one = vec![cell(b"a", &[(1, 3, 30)]), cell(b"b", &[(1, 1, 1)])];
        let two = vec![cell(b"a", &[(1, 2, 20), (2, 1, 5)])];
        let (merged, stale) = merge_replicas(&[(HostId(1), one), (HostId(2), two)]).unwrap();
        assert_eq!(merged[&b"a".to_vec()].sum(), 35);
        let by_host: HashMap<HostId, Vec<CellState>> = stale.into_iter().collect();
        let both = cell(b"a", &[(1, 3, 30), (2, 1, 5)]);
        assert_eq!(
            by_host[&HostId(1)],
            vec![both.clone()],
            "host 1 lacks shard 2"
        );
        assert_eq!(
            by_host[&HostId(2)],
            vec![both, cell(b"b", &[(1, 1, 1)])],
            "host 2 is behind on a and lacks b"
        );
    }

    #[test]
    fn a_malformed_replica_cell_is_an_error_not_a_panic() {
        let bad = vec![CellState {
            key: b"a".to_vec(),
            value: vec![1, 2, 3],
        }];
        assert!(merge_replicas(&[(HostId(1), bad)]).is_err());
    }
}
