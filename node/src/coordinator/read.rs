//! The read path: ask R replicas (this node first), merge their cells by
//! the CRDT rule, repair the ones that were behind (before answering
//! QUORUM and ALL, in the background for a sample of ONE), and answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tally_client::{CellState, Consistency, ErrorCode};
use tally_consensus::{ClusterMap, HostId};

use super::{needed, Coordinator};
use crate::counter::limits::{refuse, RequestError};
use crate::counter::read_plan::{Read, ReadAnswer, ReadPlan};
use crate::replication::read_repair::merge_replicas;

impl Coordinator {
    /// Answers `read` at `consistency`, checked against the namespaces
    /// and limits first.
    pub async fn read(
        self: &Arc<Self>,
        consistency: Consistency,
        read: Read,
    ) -> Result<ReadAnswer, RequestError> {
        let store = &self.ctx.store;
        let plan = ReadPlan::of(
            &store.namespaces_read(),
            store.limits(),
            &read,
            store.clock().now_ms(),
        )?;
        let deadline = Instant::now() + self.config.read_timeout;
        let map = self.ctx.metadata.map();
        let replicas = map.replicas(plan.token.0);
        let r = needed(consistency, map.replication_factor());
        let candidates = self.read_order(replicas);
        if candidates.len() < r {
            return Err(refuse(
                ErrorCode::Unavailable,
                format!(
                    "{} of {} replicas up, {consistency:?} needs {r}",
                    candidates.len(),
                    replicas.len()
                ),
            ));
        }
        let got = self
            .ctx
            .reads
            .gather(&map, &plan.ranges, &candidates, r, deadline)
            .await?;
        let (merged, stale) = merge_replicas(&got).map_err(|e| refuse(ErrorCode::Storage, e))?;
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
        } else if !stale.is_empty() && !self.ctx.read_repair.repair(&map, stale, deadline).await {
            return Err(refuse(
                ErrorCode::Timeout,
                "read repair did not complete; the read is safe to retry",
            ));
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
            .ctx
            .reads
            .gather(map, &plan.ranges, &others, others.len(), deadline)
            .await
        {
            got.extend(more);
        }
        if let Ok((_, stale)) = merge_replicas(&got) {
            if !stale.is_empty() {
                self.ctx.read_repair.repair(map, stale, deadline).await;
            }
        }
    }
}
