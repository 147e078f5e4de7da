//! The write path: group a batch's items by where they go, lead each
//! group here or forward it to a live replica, replicate the new shard
//! states, and wait for W acknowledgements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tally_client::{token, Consistency, ErrorCode, Increment, ItemResult, Request, Response};
use tally_consensus::{ClusterMap, HostId};

use super::{needed, Coordinator};
use crate::fault_modes::BrokenMode;
use crate::replica::store::lead::unconfirmed;

impl Coordinator {
    pub(super) fn write_deadline(&self, timeout_ms: u32) -> Instant {
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
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.ctx.store.check(item, now_ms) {
                Ok(()) => {
                    let t = token(&item.namespace, &item.key).0;
                    let (replicas, pending) = map.write_replicas(t);
                    let leader = item.op_id.map(|id| op_leader(replicas, id));
                    match groups.iter_mut().find(|(r, _)| {
                        r.op_leader == leader
                            && same_hosts(&r.replicas, replicas)
                            && same_hosts(&r.pending, pending)
                    }) {
                        Some((_, indices)) => indices.push(i),
                        None => groups.push((
                            Route {
                                replicas: replicas.to_vec(),
                                pending: pending.to_vec(),
                                op_leader: leader,
                            },
                            vec![i],
                        )),
                    }
                }
                Err(e) => results[i] = ItemResult::Failed(e.code),
            }
        }
        if groups.len() == 1 && results.iter().all(|r| *r == ItemResult::Ok) {
            // The common case: every item has the same replicas.
            let route = groups.pop().map(|(route, _)| route).unwrap_or_default();
            return self
                .clone()
                .run_group(map.clone(), route, items, consistency, deadline, forwarded)
                .await;
        }
        let mut slots: Vec<Option<Increment>> = items.into_iter().map(Some).collect();
        type Part = (Vec<usize>, Route, Vec<Increment>);
        let parts: Vec<Part> = groups
            .into_iter()
            .map(|(route, indices)| {
                let part = indices.iter().filter_map(|&i| slots[i].take()).collect();
                (indices, route, part)
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

    /// Runs one group of items along its [`Route`].
    async fn run_group(
        self: Arc<Self>,
        map: Arc<ClusterMap>,
        route: Route,
        items: Vec<Increment>,
        consistency: Consistency,
        deadline: Instant,
        forwarded: bool,
    ) -> Vec<ItemResult> {
        let Route {
            replicas,
            pending,
            op_leader,
        } = route;
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
}

/// Where a group of items goes.
#[derive(Debug, Clone, Default)]
struct Route {
    /// The natural replicas, which make the quorum.
    replicas: Vec<HostId>,
    /// Those a topology change in progress adds: they get the write too
    /// (hinted if down) without counting towards the quorum.
    pending: Vec<HostId>,
    /// For items with op ids, the one replica that may lead them.
    op_leader: Option<HostId>,
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
pub(super) fn same_hosts(a: &[HostId], b: &[HostId]) -> bool {
    a.len() == b.len() && a.iter().all(|h| b.contains(h))
}
