//! [`Topology`]: the node's side of the Raft-agreed cluster metadata:
//! following the group's state into the data path, operator requests, and
//! the topology changes that move data (join, decommission, removenode).
//!
//! The data path never waits here: [`Topology::follow`] turns each applied
//! state into a [`ClusterMap`](tally_consensus::ClusterMap) and swaps it into [`FollowedMetadata`].
//! Every node is a member of the metadata group (a voter or a learner), so
//! it learns each change from the Raft log itself, and gossips the epoch
//! it routes with.
//!
//! A topology change moves through the metadata one step at a time, each a
//! committed command, so that a crash at any point leaves a state the ring
//! can be read from and the change can resume or be rolled back:
//!
//! - join: `Register` (a host id and tokens, state joining: writes now go
//!   to the new node as a pending replica) -> the node joins the group and
//!   catches up -> every live node gossips the new epoch (no coordinator
//!   still writes by the old ring) -> streaming: each range the node gains
//!   is synced from its old owners (`Repairer::sync_ranges`, Merkle
//!   leaves then cells, CRDT merge) -> `FinishJoin` (reads switch);
//! - decommission (run by the leaving node) and removenode (run by any
//!   live node for a dead one): `StartLeave` (the next owners become
//!   pending replicas) -> epoch settles -> streaming from the live old
//!   owners -> `Remove` (the id is banned, its shards stay valid).
//!
//! A joining node that restarts resumes its join; one that died for good
//! is rolled back with `tally abort`. Streams are idempotent (states and
//! merges), so resuming one twice is harmless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::admin::{AdminReply, AdminRequest, ClusterView, MemberView};
use tally_consensus::{ClusterState, HostId, MemberState, MetadataGroup};

use crate::cluster::membership::Membership;
use crate::cluster::metadata::FollowedMetadata;
use crate::cluster::raft_link::RaftLink;
use crate::context::NodeContext;
use crate::convergence::anti_entropy::Repairer;
use crate::counter::namespace::{Namespace, Namespaces};

mod admin;
mod change;
mod leader;
mod streaming;

/// How long an operator request waits for a metadata leader.
const LEADER_WAIT: Duration = Duration::from_secs(20);
/// Deadline of a forwarded operator request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a join waits for another topology change to finish.
const SERIALIZED_WAIT: Duration = Duration::from_secs(600);
/// How long streaming waits for every live node to route by the new ring.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// How long the leader waits for a node to answer before it lets it vote
/// or serve reads.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A node's side of the Raft-agreed metadata.
#[derive(Debug)]
pub struct RaftParts {
    /// This node's member of the metadata group.
    pub group: MetadataGroup,
    /// Connections to the other members' Raft.
    pub link: Arc<RaftLink>,
    /// The map the data path routes by, following the group's state.
    pub metadata: Arc<FollowedMetadata>,
}

/// The node's view of, and hand in, the cluster's topology.
#[derive(Debug)]
pub struct Topology {
    ctx: Arc<NodeContext>,
    vnodes: usize,
    /// Namespaces from the node's configuration, kept beside the
    /// metadata's.
    configured: Vec<Namespace>,
    group: MetadataGroup,
    link: Arc<RaftLink>,
    metadata: Arc<FollowedMetadata>,
    membership: Arc<Membership>,
    repairer: Arc<Repairer>,
}

/// Asks the cluster at `seed` for a host id for the node at `address`
/// (the first step of a join, before the node opens its storage). A
/// retried registration of the same address gets the same id back.
pub async fn register(
    link: &RaftLink,
    seed: &str,
    cluster_name: &str,
    address: &str,
    rack: Option<String>,
) -> Result<u64, String> {
    let request = AdminRequest::Register {
        cluster_name: cluster_name.to_owned(),
        address: address.to_owned(),
        rack,
    };
    let started = Instant::now();
    loop {
        match link.admin(seed, &request, ADMIN_TIMEOUT).await {
            AdminReply::Done {
                host_id: Some(id), ..
            } => return Ok(id),
            // Joins are serialized: wait for the one in progress.
            AdminReply::Refused { reason }
                if reason.contains("one topology change at a time")
                    && started.elapsed() < SERIALIZED_WAIT =>
            {
                tracing::info!(%reason, "another topology change is in progress; waiting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            AdminReply::Refused { reason } => return Err(format!("join refused: {reason}")),
            other if started.elapsed() > LEADER_WAIT * 3 => {
                return Err(format!("could not register through {seed}: {other:?}"))
            }
            other => {
                tracing::info!(?other, %seed, "registration not through yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Refuses to start a node the cluster removed: its host id is never used
/// again (its shards stay valid in the counters, so a second writer of
/// them would corrupt counts). Asks the members `state` lists; a node no
/// one answers for starts (it may be the first one up).
pub async fn check_still_member(
    link: &RaftLink,
    state: &ClusterState,
    self_id: HostId,
) -> Result<(), String> {
    let banned = |view: &ClusterView| {
        view.members
            .iter()
            .any(|m| m.host_id == self_id.0 && m.state == "left")
    };
    if state.banned.contains(&self_id.0) {
        return Err(removed(self_id));
    }
    for (id, m) in &state.members {
        if *id == self_id.0 || m.state == MemberState::Left {
            continue;
        }
        if let AdminReply::Cluster(view) = link
            .admin(&m.address, &AdminRequest::Cluster, Duration::from_secs(2))
            .await
        {
            if banned(&view) {
                return Err(removed(self_id));
            }
            if view.epoch >= state.epoch {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn removed(id: HostId) -> String {
    format!(
        "host id {} was removed from the cluster and is never reused: wipe this data directory to join as a new node",
        id.0
    )
}

impl Topology {
    /// The topology of the node of `ctx`, whose metadata comes from
    /// `raft`; joins give it `vnodes` tokens, and `configured` are the
    /// namespaces of its configuration.
    pub fn new(
        ctx: Arc<NodeContext>,
        raft: RaftParts,
        vnodes: usize,
        configured: Vec<Namespace>,
        membership: Arc<Membership>,
        repairer: Arc<Repairer>,
    ) -> Arc<Topology> {
        Arc::new(Topology {
            ctx,
            vnodes,
            configured,
            group: raft.group,
            link: raft.link,
            metadata: raft.metadata,
            membership,
            repairer,
        })
    }

    /// The metadata group member.
    pub fn group(&self) -> &MetadataGroup {
        &self.group
    }

    /// The state of member `host` in the metadata (`None`: not a member).
    pub fn member_state(&self, host: HostId) -> Option<MemberState> {
        self.group.state().members.get(&host.0).map(|m| m.state)
    }

    /// Applies `state` to the data path: the map, gossip's seeds and
    /// epoch, the namespaces.
    fn install(&self, state: &ClusterState) {
        match state.cluster_map() {
            Ok(map) => {
                self.membership.on_map(&map);
                self.metadata.set(map);
            }
            Err(e) => {
                tracing::error!(error = %e, epoch = state.epoch, "metadata gives no valid map; keeping the old one")
            }
        }
        let mut namespaces: Vec<Namespace> = self.configured.clone();
        for (name, spec) in &state.namespaces {
            // A metadata entry never redefines the built-in or a configured
            // namespace (older leaders let one through).
            if name == crate::counter::namespace::DEFAULT_NAMESPACE
                || self.configured.iter().any(|n| n.name == *name)
            {
                tracing::warn!(%name, %spec, "the metadata redefines a configured namespace; keeping the configured one");
                continue;
            }
            match Namespace::parse(name, spec) {
                Ok(ns) => namespaces.push(ns),
                Err(e) => {
                    tracing::error!(%name, error = %e, "namespace in the metadata does not parse")
                }
            }
        }
        self.ctx.store.set_namespaces(Namespaces::with(namespaces));
    }

    /// Follows the group's state into the data path until the process
    /// ends.
    pub async fn follow(self: Arc<Self>) {
        let mut watch = self.group.watch();
        loop {
            let state = watch.borrow_and_update().clone();
            self.install(&state);
            if watch.changed().await.is_err() {
                return;
            }
        }
    }

    /// The metadata as this node knows it.
    pub fn view(&self) -> ClusterView {
        let state = self.group.state();
        let ownership = state
            .cluster_map()
            .map(|m| m.ring().ownership(m.replication_factor()))
            .unwrap_or_default();
        let (voters, _) = self.group.members();
        ClusterView {
            cluster_name: state.cluster_name.clone(),
            epoch: state.epoch,
            replication_factor: state.replication_factor,
            leader: self.group.leader(),
            voters: voters.into_iter().collect(),
            members: state
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    host_id: *id,
                    address: m.address.clone(),
                    rack: m.rack.clone(),
                    state: format!("{:?}", m.state).to_lowercase(),
                    tokens: m.tokens.clone(),
                    ownership: ownership.get(&HostId(*id)).copied().unwrap_or(0.0),
                })
                .collect(),
            namespaces: state
                .namespaces
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        }
    }
}
