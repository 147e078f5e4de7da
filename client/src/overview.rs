//! [`ClusterOverview`]: the cluster as `tally status` and the console show
//! it: the metadata's members joined with what each member reports about
//! itself (load, storage, counts). Built by the CLI from the binary
//! protocol and by a node for `GET /v1/cluster`, so both show the same.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::admin::ClusterView;
use crate::{NodeStatus, StorageHealth};

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterOverview {
    /// The cluster's name (`None` before bootstrap or without Raft).
    pub cluster_name: Option<String>,
    /// The metadata epoch.
    pub epoch: u64,
    /// Copies of each key.
    pub replication_factor: usize,
    /// The metadata group's leader (`None`: unknown, or no Raft).
    pub leader: Option<u64>,
    /// The node that answered.
    pub seen_from: u64,
    /// Every member that has not left.
    pub members: Vec<MemberOverview>,
}

/// One member in a [`ClusterOverview`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberOverview {
    /// Host id.
    pub host_id: u64,
    /// Address of the binary protocol.
    pub address: String,
    /// Whether the answering node sees it up.
    pub up: bool,
    /// `joining`, `normal` or `leaving`.
    pub state: String,
    /// Its share of the data as a replica (sums to the replication factor).
    pub ownership: f64,
    /// Tokens it owns.
    pub tokens: usize,
    /// Its rack, if configured.
    pub rack: Option<String>,
    /// A voter of the metadata group.
    pub voter: bool,
    /// The metadata group's leader.
    pub leader: bool,
    /// What it reported about itself (`None`: down or did not answer).
    pub reported: Option<Reported>,
}

/// What a member reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// Bytes on disk (tables and WAL).
    pub load_bytes: u64,
    /// Whether its storage takes writes.
    pub storage: StorageHealth,
    /// Why not (empty when it does).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_error: String,
    /// Increments it applied as their leader since start.
    pub increments: u64,
    /// Client reads it coordinated since start.
    pub reads: u64,
    /// Hinted cells waiting on it.
    pub hints_pending: u64,
    /// Time since it started, in milliseconds.
    pub uptime_ms: u64,
}

impl From<&NodeStatus> for Reported {
    fn from(s: &NodeStatus) -> Reported {
        Reported {
            load_bytes: s.disk_bytes,
            storage: s.storage,
            storage_error: s.storage_error.clone(),
            increments: s.increments,
            reads: s.reads,
            hints_pending: s.hints_pending,
            uptime_ms: s.uptime_ms,
        }
    }
}

impl ClusterOverview {
    /// Joins `view` with `local` (the answering node's status, whose peer
    /// list says who is up) and `reported` (the other members' statuses,
    /// by host id). Members that left are left out.
    pub fn new(
        view: &ClusterView,
        local: &NodeStatus,
        reported: &HashMap<u64, NodeStatus>,
    ) -> ClusterOverview {
        let members = view
            .members
            .iter()
            .filter(|m| m.state != "left")
            .map(|m| {
                let me = m.host_id == local.node_id;
                let status = if me {
                    Some(local)
                } else {
                    reported.get(&m.host_id)
                };
                MemberOverview {
                    host_id: m.host_id,
                    address: m.address.clone(),
                    up: me || local.peers.iter().any(|p| p.host_id == m.host_id && p.up),
                    state: m.state.clone(),
                    ownership: m.ownership,
                    tokens: m.tokens.len(),
                    rack: m.rack.clone(),
                    voter: view.voters.contains(&m.host_id),
                    leader: view.leader == Some(m.host_id),
                    reported: status.map(Reported::from),
                }
            })
            .collect();
        ClusterOverview {
            cluster_name: view.cluster_name.clone(),
            epoch: view.epoch,
            replication_factor: view.replication_factor,
            leader: view.leader,
            seen_from: local.node_id,
            members,
        }
    }
}
