//! The add path of distinct namespaces: turn a batch of members into one
//! small sketch per cell, and merge those sketches into every replica.
//!
//! Unlike an increment, an add needs no leader. A sketch of the members
//! is the same whoever builds it, and merging it is idempotent, so the
//! coordinator sends the same sketches to every replica (itself included
//! when it is one) and answers once `W` acknowledged; replicas that are
//! down get hints, and read repair and anti-entropy converge the rest.
//! A retry sends the same members again and changes nothing, so adds need
//! no op ids, and a timeout (`Indeterminate`) is always safe to retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{Either, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tally_client::{token, Add, CellState, Consistency, ErrorCode, ItemResult, NamespaceKind};
use tally_consensus::{ClusterMap, HostId};

use super::write::same_hosts;
use super::{needed, Coordinator};
use crate::counter::cell_key::{self, CellKind};
use crate::counter::hll::Sketch;

/// The items of one replica set, as the sketches of their cells.
struct Group {
    replicas: Vec<HostId>,
    pending: Vec<HostId>,
    items: Vec<usize>,
    cells: BTreeMap<Vec<u8>, Sketch>,
}

impl Coordinator {
    /// Adds members to distinct counters; one result per item, in order.
    pub async fn add(
        self: &Arc<Self>,
        consistency: Consistency,
        timeout_ms: u32,
        items: Vec<Add>,
    ) -> Vec<ItemResult> {
        let deadline = self.write_deadline(timeout_ms);
        let map = self.ctx.metadata.map();
        let now_ms = self.ctx.store.clock().now_ms();
        let mut results = vec![ItemResult::Ok; items.len()];
        let mut groups: Vec<Group> = Vec::new();
        {
            let namespaces = self.ctx.store.namespaces_read();
            let limits = self.ctx.store.limits();
            for (i, item) in items.iter().enumerate() {
                let ns = match limits.check_add(&namespaces, item, now_ms) {
                    Ok(ns) => ns,
                    Err(e) => {
                        results[i] = ItemResult::Failed(e.code);
                        continue;
                    }
                };
                let NamespaceKind::Distinct { precision } = ns.kind else {
                    // `check_add` refused it already.
                    results[i] = ItemResult::Failed(ErrorCode::WrongKind);
                    continue;
                };
                let (replicas, pending) = map.write_replicas(token(&ns.name, &item.key).0);
                let at = match groups.iter().position(|g| {
                    same_hosts(&g.replicas, replicas) && same_hosts(&g.pending, pending)
                }) {
                    Some(at) => at,
                    None => {
                        groups.push(Group {
                            replicas: replicas.to_vec(),
                            pending: pending.to_vec(),
                            items: Vec::new(),
                            cells: BTreeMap::new(),
                        });
                        groups.len() - 1
                    }
                };
                let group = &mut groups[at];
                group.items.push(i);
                for (res, _) in &ns.resolutions {
                    let bucket = res.bucket_start(item.timestamp_ms);
                    let cell =
                        cell_key::encode(CellKind::Distinct, &ns.name, &item.key, *res, bucket);
                    group
                        .cells
                        .entry(cell)
                        .or_insert_with(|| Sketch::new(precision))
                        .add(&item.member);
                }
            }
        }
        let w = needed(consistency, map.replication_factor());
        let runs = groups.into_iter().map(|group| {
            let map = map.clone();
            async move {
                let outcome = self.merge_everywhere(&map, &group, w, deadline).await;
                (group.items, outcome)
            }
        });
        for (indices, outcome) in futures_util::future::join_all(runs).await {
            for i in indices {
                results[i] = outcome;
            }
        }
        results
    }

    /// Merges a group's sketches into its replicas; `Ok` once `w` of them
    /// hold them durably.
    async fn merge_everywhere(
        &self,
        map: &ClusterMap,
        group: &Group,
        w: usize,
        deadline: Instant,
    ) -> ItemResult {
        let live = group
            .replicas
            .iter()
            .filter(|&&h| self.ctx.peers.is_up(h))
            .count();
        if live < w {
            return ItemResult::Failed(ErrorCode::Unavailable);
        }
        let cells: Arc<Vec<CellState>> = Arc::new(
            group
                .cells
                .iter()
                .map(|(key, sketch)| CellState {
                    key: key.clone(),
                    value: sketch.encode(),
                })
                .collect(),
        );
        let epoch = map.epoch();
        let mut answers = FuturesUnordered::new();
        let targets = group.replicas.iter().map(|h| (h, true));
        let targets = targets.chain(group.pending.iter().map(|h| (h, false)));
        for (&host, counts) in targets {
            if host == self.ctx.self_id {
                let local = self.ctx.writer.merge((*cells).clone().into());
                if counts {
                    answers.push(Either::Left(local.map(|r| r.is_ok())));
                } else if local.await.is_err() {
                    self.ctx.replicator.hint(host, epoch, vec![cells.clone()]);
                }
            } else if self.ctx.peers.is_up(host) {
                let sent = self
                    .ctx
                    .replicator
                    .send(host, epoch, cells.clone(), deadline);
                if counts {
                    answers.push(Either::Right(sent.map(|r| r == Ok(true))));
                }
                // A pending replica's failure is hinted by the replicator.
            } else {
                self.ctx.replicator.hint(host, epoch, vec![cells.clone()]);
            }
        }
        let mut acknowledged = 0;
        while acknowledged < w {
            match tokio::time::timeout_at(deadline.into(), answers.next()).await {
                Ok(Some(true)) => acknowledged += 1,
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if acknowledged >= w {
            ItemResult::Ok
        } else {
            // Some replicas may hold the members: the add may count. A
            // retry is safe (merging again changes nothing).
            ItemResult::Indeterminate(ErrorCode::Timeout)
        }
    }
}
