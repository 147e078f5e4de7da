//! Operator requests: bootstrapping, joining, leaving and removing nodes,
//! namespaces and the cluster's metadata, carried as JSON inside the
//! `Admin` frame kind.
//!
//! JSON because these are rare, small and change shape as the operator
//! commands grow; the data path's messages stay binary. A node that is not
//! the metadata leader forwards a proposal to the leader itself, so an
//! operator may talk to any node.

use serde::{Deserialize, Serialize};

/// An operator (or joining node) request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminRequest {
    /// The cluster's metadata as this node knows it.
    Cluster,
    /// A new node asks to join: it is given a host id and tokens and is
    /// recorded as joining.
    Register {
        /// Must equal the cluster's name.
        cluster_name: String,
        /// The new node's address.
        address: String,
        /// Its rack, if racks are configured.
        rack: Option<String>,
    },
    /// A registered node asks to be added to the metadata group (learner,
    /// and voter if the voter selection picks it).
    AddToGroup {
        /// Its host id.
        host_id: u64,
        /// Its address.
        address: String,
    },
    /// A joining node has streamed its ranges.
    FinishJoin {
        /// The node.
        host_id: u64,
    },
    /// Starts streaming a live node's ranges away, then removes it.
    /// Answered once it has left.
    Decommission {
        /// The node (must be the node receiving the request).
        host_id: u64,
    },
    /// Re-replicates a dead node's ranges from the surviving replicas,
    /// then removes it. Answered once it is removed.
    RemoveNode {
        /// The node.
        host_id: u64,
    },
    /// A step of a leave (sent by the node that runs it to the leader):
    /// the node starts leaving; its next owners become pending replicas.
    StartLeave {
        /// The node.
        host_id: u64,
    },
    /// A step of a leave: the node's ranges are streamed; it is gone.
    Remove {
        /// The node.
        host_id: u64,
    },
    /// Rolls a join or leave in progress back.
    Abort {
        /// The node.
        host_id: u64,
    },
    /// Creates a namespace.
    CreateNamespace {
        /// `[a-z0-9_]{1,64}`.
        name: String,
        /// Resolutions and retention, e.g. `minute:7d,hour:90d,total`.
        spec: String,
    },
    /// Changes a namespace's retention or adds resolutions to it: every
    /// resolution it keeps must stay (its cells were written under them).
    AlterNamespace {
        /// The namespace.
        name: String,
        /// Its new spec, e.g. `minute:14d,hour:90d,day:forever,total`.
        spec: String,
    },
    /// Drops the cells of ranges this node no longer replicates.
    Cleanup,
    /// Anti-entropy: `holder` is about to repair the range
    /// `(start_token, end_token]` and asks this replica for its lease (one
    /// repair of a range at a time, cluster-wide) until `ttl_ms` from now.
    /// Answered with `Lease`.
    RepairLease {
        /// Exclusive start of the range.
        start_token: u64,
        /// Inclusive end.
        end_token: u64,
        /// The repairing node's host id.
        holder: u64,
        /// How long the lease lasts unless renewed.
        ttl_ms: u64,
    },
    /// Anti-entropy: `holder` is done with the range; `repaired_at_ms`
    /// is when it finished, if it succeeded (recorded in this replica's
    /// repair history). Answered with `Done`.
    RepairRelease {
        /// Exclusive start of the range.
        start_token: u64,
        /// Inclusive end.
        end_token: u64,
        /// The repairing node's host id.
        holder: u64,
        /// When the repair finished; `None` when it did not succeed.
        repaired_at_ms: Option<i64>,
    },
    /// This node's anti-entropy schedule. Answered with `RepairSchedule`.
    RepairSchedule,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminReply {
    /// The metadata.
    Cluster(ClusterView),
    /// Done; the metadata is now at `epoch`.
    Done {
        /// The epoch after the change.
        epoch: u64,
        /// The host id assigned (`Register`).
        host_id: Option<u64>,
    },
    /// Refused by a rule of the metadata (nothing changed).
    Refused {
        /// Why, for people.
        reason: String,
    },
    /// Cells dropped by `Cleanup`.
    Cleaned {
        /// How many.
        cells: u64,
    },
    /// The request could not be carried out (no leader, timeout); whether
    /// it took effect is unknown unless `reason` says otherwise.
    Failed {
        /// Why.
        reason: String,
    },
    /// The answer to `RepairLease`.
    Lease {
        /// Whether the lease is the asker's now.
        granted: bool,
        /// Who holds it (the asker when granted).
        holder: u64,
        /// When this replica last saw the range repaired.
        last_repaired_ms: Option<i64>,
    },
    /// A node's anti-entropy schedule.
    RepairSchedule(RepairScheduleView),
}

/// One node's anti-entropy schedule (`tally status --repairs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairScheduleView {
    /// The node.
    pub host_id: u64,
    /// Every range is repaired within this (0: scheduled repair is off).
    pub interval_ms: u64,
    /// Throttle of a scheduled repair, in bytes per second.
    pub bytes_per_s: u64,
    /// The node's clock when it answered.
    pub now_ms: i64,
    /// Every range the node replicates.
    pub ranges: Vec<RangeRepairView>,
}

/// One range in a [`RepairScheduleView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeRepairView {
    /// Exclusive start token.
    pub start_token: u64,
    /// Inclusive end token.
    pub end_token: u64,
    /// Its replicas, in placement order.
    pub replicas: Vec<u64>,
    /// The replica whose schedule repairs it (its first live replica).
    pub scheduled_by: Option<u64>,
    /// When it was last repaired, as this node knows.
    pub last_repaired_ms: Option<i64>,
    /// When its next repair is due (ranges this node schedules).
    pub next_due_ms: Option<i64>,
    /// Who repairs it now, if anyone.
    pub repairing: Option<u64>,
}

/// The cluster's metadata as one node knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster's name (`None` before bootstrap).
    pub cluster_name: Option<String>,
    /// Raised by every change.
    pub epoch: u64,
    /// Copies of each key.
    pub replication_factor: usize,
    /// The metadata leader, if known.
    pub leader: Option<u64>,
    /// The metadata group's voters.
    pub voters: Vec<u64>,
    /// Every member, including those that left.
    pub members: Vec<MemberView>,
    /// Namespaces: name and spec.
    pub namespaces: Vec<(String, String)>,
}

/// One member of a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Host id (never reused).
    pub host_id: u64,
    /// Address.
    pub address: String,
    /// Rack.
    pub rack: Option<String>,
    /// `joining`, `normal`, `leaving` or `left`.
    pub state: String,
    /// Its tokens.
    pub tokens: Vec<u64>,
    /// Its share of the data as a replica (sums to the replication factor).
    pub ownership: f64,
}

impl AdminRequest {
    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a JSON body.
    pub fn from_bytes(bytes: &[u8]) -> Result<AdminRequest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("bad admin request: {e}"))
    }
}

impl AdminReply {
    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a JSON body.
    pub fn from_bytes(bytes: &[u8]) -> Result<AdminReply, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("bad admin reply: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_an_error() {
        let r = AdminRequest::Register {
            cluster_name: "c".into(),
            address: "127.0.0.1:1".into(),
            rack: Some("r1".into()),
        };
        assert_eq!(AdminRequest::from_bytes(&r.to_bytes()), Ok(r));
        let reply = AdminReply::Done {
            epoch: 3,
            host_id: Some(4),
        };
        assert_eq!(AdminReply::from_bytes(&reply.to_bytes()), Ok(reply));
        assert!(AdminRequest::from_bytes(b"{\"Nope\":1}").is_err());
        assert!(AdminReply::from_bytes(&[0xff, 0]).is_err());
    }
}
