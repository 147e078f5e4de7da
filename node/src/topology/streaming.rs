//! Moving a range's data during a topology change: wait for the metadata
//! to reach a state, wait until every live node routes by the new ring,
//! then sync each pending range from its old owners (Merkle leaves, then
//! cells, merged by the CRDT rule).

use std::time::{Duration, Instant};

use tally_consensus::{ClusterState, TokenRange};

use super::{Topology, SETTLE_WAIT};

impl Topology {
    pub(super) async fn wait_until(
        &self,
        done: impl Fn(&ClusterState) -> bool,
        limit: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        while !done(&self.group.state()) {
            if started.elapsed() > limit {
                return Err("timed out waiting for the metadata".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
    /// Waits until every live node gossips an epoch at least this node's:
    /// from then on no coordinator writes by a ring without the pending
    /// replicas.
    pub(super) async fn settle(&self) -> Result<(), String> {
        let map = self.ctx.map();
        let epoch = map.epoch();
        let started = Instant::now();
        loop {
            // Members of the map only: a node that left keeps its last
            // epoch for ever.
            let behind: Vec<u64> = self
                .membership
                .peer_epochs()
                .into_iter()
                .filter(|(h, e)| *e < epoch && map.member(*h).is_some() && self.ctx.peers.is_up(*h))
                .map(|(h, _)| h.0)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if started.elapsed() > SETTLE_WAIT {
                return Err(format!(
                    "hosts {behind:?} still route with an epoch before {epoch}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    /// Syncs the pending ranges `select` picks between their old owners
    /// and their pending replicas.
    pub(super) async fn stream(
        &self,
        select: impl Fn(&TokenRange) -> bool,
    ) -> Result<tally_client::RepairReport, String> {
        self.settle().await?;
        let map = self.ctx.map();
        let ranges: Vec<TokenRange> = map
            .pending_ranges()
            .into_iter()
            .filter(|r| select(r))
            .map(|pending| {
                let mut replicas = map.replicas(pending.end).to_vec();
                replicas.extend(pending.replicas.iter().copied());
                TokenRange {
                    start: pending.start,
                    end: pending.end,
                    replicas,
                }
            })
            .collect();
        let report = self.repairer.sync_ranges(&map, ranges, "stream").await?;
        if report.ranges_skipped > 0 {
            return Err(format!(
                "{} of {} ranges not streamed (a replica did not answer)",
                report.ranges_skipped,
                report.ranges + report.ranges_skipped
            ));
        }
        Ok(report)
    }
}
