//! [`MetadataGroup`]: one node's member of the cluster's metadata Raft
//! group: it opens the durable log and state machine, starts openraft, and
//! gives the node what it needs: handle incoming RPCs, propose commands,
//! and read (or watch) the current [`ClusterState`] without waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config};
use tokio::sync::watch;

use crate::cluster_state::{ClusterState, Command, CommandResult};
use crate::log_store::LogStore;
use crate::network::{Network, RaftReply, RaftRpc, RaftTransport};
use crate::raft_types::{NodeId, Raft};
use crate::state_machine::StateMachine;

/// Raft timing for the metadata group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (a follower waits a random time in it).
    pub election_timeout: (Duration, Duration),
    /// Entries between snapshots.
    pub snapshot_every: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        // Generous: a node on a busy 2-core machine must not lose its
        // leadership to a scheduling hiccup.
        GroupConfig {
            heartbeat: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1500), Duration::from_millis(3000)),
            snapshot_every: 1000,
        }
    }
}

/// Why a proposal did not go through here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader; propose to `leader` instead (unknown
    /// during an election: retry later). Nothing was applied.
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// Raft failed (shutting down, storage); the outcome is unknown.
    #[error("metadata group failed: {0}")]
    Failed(String),
}

/// One node's member of the metadata group.
#[derive(Clone)]
pub struct MetadataGroup {
    id: NodeId,
    raft: Raft,
    state: watch::Receiver<Arc<ClusterState>>,
}

impl std::fmt::Debug for MetadataGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataGroup")
            .field("id", &self.id)
            .field("leader", &self.leader())
            .field("epoch", &self.state().epoch)
            .finish_non_exhaustive()
    }
}

impl MetadataGroup {
    /// Opens the group member `id` with its log and snapshots under `dir`.
    pub async fn open(
        id: NodeId,
        dir: &Path,
        transport: Arc<dyn RaftTransport>,
        config: GroupConfig,
    ) -> Result<MetadataGroup, String> {
        let log = LogStore::open(&dir.join("log"))?;
        let (sm, state) = StateMachine::open(&dir.join("snapshots"))?;
        let raft_config = Config {
            cluster_name: "tally-metadata".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            ..Config::default()
        }
        .validate()
        .map_err(|e| e.to_string())?;
        let raft = Raft::new(id, Arc::new(raft_config), Network::new(transport), log, sm)
            .await
            .map_err(|e| e.to_string())?;
        Ok(MetadataGroup { id, raft, state })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The state as of the last applied entry (never waits).
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// A channel that sees every new state.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The current term and the index of the last applied log entry
    /// (0 before any).
    pub fn progress(&self) -> (u64, u64) {
        let metrics = self.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
        (metrics.current_term, applied)
    }

    /// The current leader's id and address, if known.
    pub fn leader_address(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, node.addr))
    }

    /// The group's voters and learners, as of the last membership entry.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership.learner_ids().collect();
        (voters, learners)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Starts a new group whose only voter is this node (at `address`).
    pub async fn initialize(&self, address: &str) -> Result<(), String> {
        let mut members = BTreeMap::new();
        members.insert(self.id, BasicNode::new(address));
        self.raft
            .initialize(members)
            .await
            .map_err(|e| e.to_string())
    }

    /// Adds `id` as a learner, then makes `voters` the voter set (leader
    /// only). Learners replicate the log without voting.
    pub async fn add_member(
        &self,
        id: NodeId,
        address: &str,
        voters: BTreeSet<NodeId>,
    ) -> Result<(), String> {
        self.raft
            .add_learner(id, BasicNode::new(address), true)
            .await
            .map_err(|e| e.to_string())?;
        if self.members().0 != voters {
            self.raft
                .change_membership(voters, true)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Takes `id` out of the group (voter or learner; leader only), making
    /// `voters` the voter set.
    pub async fn remove_member(&self, id: NodeId, voters: BTreeSet<NodeId>) -> Result<(), String> {
        let (current, _) = self.members();
        if current != voters {
            // Voters that stop voting stay as learners (`retain`).
            self.raft
                .change_membership(voters, true)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (_, learners) = self.members();
        if learners.contains(&id) {
            let mut gone = BTreeSet::new();
            gone.insert(id);
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(gone), false)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Proposes a command; returns its result once committed and applied.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// Handles an encoded RPC from another member; returns the encoded
    /// reply (a malformed RPC gets an error string the sender reports).
    pub async fn handle(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let rpc: RaftRpc =
            serde_json::from_slice(payload).map_err(|e| format!("bad raft rpc: {e}"))?;
        let reply = match rpc {
            RaftRpc::Append(r) => RaftReply::Append(self.raft.append_entries(r).await),
            RaftRpc::Vote(r) => RaftReply::Vote(self.raft.vote(r).await),
            RaftRpc::Snapshot(r) => RaftReply::Snapshot(self.raft.install_snapshot(r).await),
        };
        serde_json::to_vec(&reply).map_err(|e| e.to_string())
    }

    /// Stops this member.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
