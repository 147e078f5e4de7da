//! Operator requests as they arrive at any node: reads answered here,
//! decommission and removenode run from here, the rest sent to the
//! metadata leader.

use tally_client::admin::{AdminReply, AdminRequest};
use tally_consensus::HostId;

use super::{Topology, ADMIN_TIMEOUT};

impl Topology {
    /// Handles an operator request arriving at this node.
    pub async fn handle(&self, request: AdminRequest) -> AdminReply {
        match request {
            AdminRequest::Cluster => AdminReply::Cluster(self.view()),
            AdminRequest::Decommission { host_id } if host_id == self.ctx.self_id.0 => {
                self.leave(host_id).await
            }
            AdminRequest::Decommission { host_id } => {
                let Some(address) = self
                    .group
                    .state()
                    .members
                    .get(&host_id)
                    .map(|m| m.address.clone())
                else {
                    return AdminReply::Refused {
                        reason: format!("host {host_id} is not a member"),
                    };
                };
                self.link
                    .admin(
                        &address,
                        &AdminRequest::Decommission { host_id },
                        ADMIN_TIMEOUT * 10,
                    )
                    .await
            }
            AdminRequest::RemoveNode { host_id } => {
                if host_id == self.ctx.self_id.0 {
                    return AdminReply::Refused {
                        reason: "a node cannot remove itself: decommission it, or run removenode on another node".into(),
                    };
                }
                if self.ctx.peers.is_up(HostId(host_id)) {
                    return AdminReply::Refused {
                        reason: format!("host {host_id} is up: decommission it instead"),
                    };
                }
                self.leave(host_id).await
            }
            AdminRequest::Cleanup => self.cleanup().await,
            other => self.on_leader(other).await,
        }
    }
}
