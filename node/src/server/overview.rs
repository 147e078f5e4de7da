//! The cluster overview (`GET /v1/cluster`, the console): the metadata's
//! members joined with each member's own status, asked over the peer
//! connections this node already holds, all at once and briefly, so one
//! slow member costs the page half a second, not a hang.

use std::collections::HashMap;
use std::time::Duration;

use tally_client::admin::{ClusterView, MemberView};
use tally_client::overview::ClusterOverview;
use tally_client::{Request, Response};
use tally_consensus::HostId;

use super::Server;

/// How long a member has to report its status.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(500);

impl Server {
    /// The cluster as this node sees it, with what each member it sees up
    /// reports about itself.
    pub(crate) async fn overview(&self) -> ClusterOverview {
        let view = match &self.topology {
            Some(topology) => topology.view(),
            None => self.static_view(),
        };
        let local = self.node_status().await;
        let mut asks = tokio::task::JoinSet::new();
        for m in view.members.iter().filter(|m| m.state != "left") {
            let host = HostId(m.host_id);
            if m.host_id == local.node_id || !self.ctx.peers.is_up(host) {
                continue;
            }
            let peers = self.ctx.peers.clone();
            asks.spawn(async move {
                match peers.call(host, &Request::Status, MEMBER_TIMEOUT).await {
                    Ok(Response::Status(status)) => Some(status),
                    _ => None,
                }
            });
        }
        let mut reported = HashMap::new();
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(status)) = answer {
                reported.insert(status.node_id, status);
            }
        }
        ClusterOverview::new(&view, &local, &reported)
    }

    /// A cluster with static membership (`--members`) as a view: every
    /// member normal, no Raft.
    fn static_view(&self) -> ClusterView {
        let map = self.ctx.metadata.map();
        let ownership = map.ring().ownership(map.replication_factor());
        ClusterView {
            cluster_name: None,
            epoch: map.epoch(),
            replication_factor: map.replication_factor(),
            leader: None,
            voters: Vec::new(),
            members: map
                .members()
                .map(|m| MemberView {
                    host_id: m.host_id.0,
                    address: m.address.clone(),
                    rack: None,
                    state: "normal".into(),
                    tokens: m.tokens.clone(),
                    ownership: ownership.get(&m.host_id).copied().unwrap_or(0.0),
                })
                .collect(),
            namespaces: Vec::new(),
        }
    }
}
