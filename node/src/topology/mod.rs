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
use tally_consensus::{
    ClusterState, Command, CommandResult, HostId, MemberState, MetadataGroup, ProposeError,
    TokenRange,
};

use crate::cluster::membership::Membership;
use crate::cluster::metadata::FollowedMetadata;
use crate::cluster::raft_link::RaftLink;
use crate::context::NodeContext;
use crate::convergence::anti_entropy::Repairer;
use crate::counter::namespace::{Namespace, Namespaces};

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

fn reply_of(result: Result<CommandResult, ProposeError>) -> AdminReply {
    match result {
        Ok(CommandResult::Applied { epoch, host_id }) => AdminReply::Done { epoch, host_id },
        Ok(CommandResult::Refused { reason }) => AdminReply::Refused { reason },
        Err(e) => AdminReply::Failed {
            reason: e.to_string(),
        },
    }
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

    /// Bootstraps a new cluster whose first member is this node (host id
    /// 1). Does nothing if the metadata already has a cluster.
    pub async fn bootstrap(
        &self,
        cluster_name: &str,
        replication_factor: usize,
    ) -> Result<(), String> {
        if self.group.state().cluster_name.is_some() {
            return Ok(());
        }
        let (voters, _) = self.group.members();
        if voters.is_empty() {
            self.group.initialize(&self.ctx.address).await?;
        }
        let tokens = ClusterState::default().allocate_tokens(self.vnodes, &mut rand::rng());
        let command = Command::Bootstrap {
            cluster_name: cluster_name.to_owned(),
            replication_factor,
            address: self.ctx.address.clone(),
            rack: None,
            tokens,
        };
        let started = Instant::now();
        loop {
            match self.group.propose(command.clone()).await {
                Ok(CommandResult::Applied { epoch, .. }) => {
                    tracing::info!(epoch, cluster = cluster_name, "cluster bootstrapped");
                    return Ok(());
                }
                Ok(CommandResult::Refused { reason }) => return Err(reason),
                Err(e) if started.elapsed() < LEADER_WAIT => {
                    tracing::debug!(error = %e, "waiting to lead the new group");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Runs (or resumes) this node's join through `seed`: joins the group,
    /// waits to see itself joining, streams, finishes. Retries until done;
    /// stops if the metadata says it is no longer joining.
    pub async fn join(self: Arc<Self>, seed: String) {
        loop {
            match self.try_join(&seed).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "join not finished; retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn try_join(&self, seed: &str) -> Result<(), String> {
        let me = self.ctx.self_id.0;
        let state = self.group.state();
        let joining = match state.members.get(&me).map(|m| m.state) {
            Some(MemberState::Joining) => true,
            Some(_) => return Ok(()),
            None => false,
        };
        if !joining {
            let request = AdminRequest::AddToGroup {
                host_id: me,
                address: self.ctx.address.clone(),
            };
            // The seed first, then every normal member: any of them
            // forwards to the leader.
            let mut contacts = vec![seed.to_owned()];
            contacts.extend(
                state
                    .members
                    .values()
                    .filter(|m| m.state == MemberState::Normal)
                    .map(|m| m.address.clone()),
            );
            let mut last = None;
            for contact in contacts.iter().filter(|c| !c.is_empty()) {
                match self.link.admin(contact, &request, ADMIN_TIMEOUT).await {
                    AdminReply::Done { .. } => {
                        last = None;
                        break;
                    }
                    other => last = Some(other),
                }
            }
            if let Some(other) = last {
                return Err(format!("joining the metadata group: {other:?}"));
            }
            self.wait_until(|s| s.members.contains_key(&me), LEADER_WAIT * 3)
                .await?;
        }
        match self.group.state().members.get(&me).map(|m| m.state) {
            Some(MemberState::Joining) => {}
            Some(MemberState::Left) => {
                tracing::error!("this node's join was rolled back; it owns nothing");
                return Ok(());
            }
            _ => return Ok(()),
        }
        let report = self
            .stream(|r| r.replicas.contains(&self.ctx.self_id))
            .await?;
        tracing::info!(?report, "joined: streamed the ranges this node gains");
        match self
            .on_leader(AdminRequest::FinishJoin { host_id: me })
            .await
        {
            AdminReply::Done { epoch, .. } => {
                tracing::info!(epoch, "join finished; this node now serves reads");
                Ok(())
            }
            other => Err(format!("finishing the join: {other:?}")),
        }
    }

    async fn wait_until(
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
    async fn settle(&self) -> Result<(), String> {
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
    async fn stream(
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

    /// Sends `request` to the metadata leader (handling it here when this
    /// node leads), waiting through an election.
    async fn on_leader(&self, request: AdminRequest) -> AdminReply {
        let started = Instant::now();
        loop {
            match self.group.leader_address() {
                Some((leader, _)) if leader == self.ctx.self_id.0 => {
                    return self.lead(request).await
                }
                Some((_, address)) => {
                    let reply = self.link.admin(&address, &request, ADMIN_TIMEOUT).await;
                    let retry = matches!(&reply, AdminReply::Failed { reason } if reason.contains("not the metadata leader"));
                    if !retry || started.elapsed() > LEADER_WAIT {
                        return reply;
                    }
                }
                None if started.elapsed() > LEADER_WAIT => {
                    return AdminReply::Failed {
                        reason: "no metadata leader (is a majority of voters up?)".into(),
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Carries out a request on the leader.
    async fn lead(&self, request: AdminRequest) -> AdminReply {
        let state = self.group.state();
        match request {
            AdminRequest::Register {
                cluster_name,
                address,
                rack,
            } => {
                if let Some((id, _)) = state
                    .members
                    .iter()
                    .find(|(_, m)| m.address == address && m.state == MemberState::Joining)
                {
                    return AdminReply::Done {
                        epoch: state.epoch,
                        host_id: Some(*id),
                    };
                }
                let tokens = state.allocate_tokens(self.vnodes, &mut rand::rng());
                reply_of(
                    self.group
                        .propose(Command::Join {
                            cluster_name,
                            address,
                            rack,
                            tokens,
                        })
                        .await,
                )
            }
            AdminRequest::AddToGroup { host_id, address } => {
                match state.members.get(&host_id) {
                    None => {
                        return AdminReply::Refused {
                            reason: format!("host {host_id} is not registered"),
                        }
                    }
                    Some(m) if m.state == MemberState::Left => {
                        return AdminReply::Refused {
                            reason: format!("host {host_id} left the cluster"),
                        }
                    }
                    Some(m) if m.address != address => {
                        return AdminReply::Refused {
                            reason: format!("host {host_id} is registered at {}", m.address),
                        }
                    }
                    Some(_) => {}
                }
                // A voter that never answers would cost the group its
                // majority: only a node that answers as this host joins it.
                if let Err(reason) = self.answers_as(host_id, &address).await {
                    return AdminReply::Refused { reason };
                }
                let (current, _) = self.group.members();
                let voters = state.choose_voters(&current);
                match self.group.add_member(host_id, &address, voters).await {
                    Ok(()) => AdminReply::Done {
                        epoch: self.group.state().epoch,
                        host_id: Some(host_id),
                    },
                    Err(e) => AdminReply::Failed { reason: e },
                }
            }
            AdminRequest::FinishJoin { host_id } => {
                // Reads switch to the new node with this step: it must be
                // alive and hold its ranges, whoever asks.
                let Some(member) = state.members.get(&host_id) else {
                    return AdminReply::Refused {
                        reason: format!("host {host_id} is not a member"),
                    };
                };
                if member.state != MemberState::Joining {
                    return AdminReply::Refused {
                        reason: format!("host {host_id} is {:?}, not joining", member.state),
                    };
                }
                if let Err(reason) = self.answers_as(host_id, &member.address).await {
                    return AdminReply::Refused { reason };
                }
                let joining = HostId(host_id);
                if let Err(e) = self.stream(|r| r.replicas.contains(&joining)).await {
                    return AdminReply::Refused {
                        reason: format!("the ranges host {host_id} gains are not streamed: {e}"),
                    };
                }
                reply_of(
                    self.group
                        .propose(Command::FinishJoin { host: host_id })
                        .await,
                )
            }
            AdminRequest::StartLeave { host_id } => reply_of(
                self.group
                    .propose(Command::StartLeave { host: host_id })
                    .await,
            ),
            AdminRequest::Abort { host_id } => {
                reply_of(self.group.propose(Command::Abort { host: host_id }).await)
            }
            AdminRequest::Remove { host_id } => {
                // The state machine removes only a leaving member; the
                // leader also checks that its ranges reached their next
                // owners (a second pass after the leave's own stream costs
                // one Merkle exchange per range), whoever asks.
                match state.members.get(&host_id).map(|m| m.state) {
                    Some(MemberState::Leaving) => {}
                    Some(other) => {
                        return AdminReply::Refused {
                            reason: format!("host {host_id} is {other:?}: only a leaving member is removed (decommission it, or removenode it once it is down)"),
                        }
                    }
                    None => {
                        return AdminReply::Refused {
                            reason: format!("host {host_id} is not a member"),
                        }
                    }
                }
                if let Err(e) = self.stream(|_| true).await {
                    return AdminReply::Failed {
                        reason: format!(
                            "the ranges of host {host_id} are not streamed: {e} (it stays leaving)"
                        ),
                    };
                }
                let reply = reply_of(self.group.propose(Command::Remove { host: host_id }).await);
                if let AdminReply::Done { .. } = reply {
                    let (current, _) = self.group.members();
                    let voters = self.group.state().choose_voters(&current);
                    if let Err(e) = self.group.remove_member(host_id, voters).await {
                        tracing::warn!(host_id, error = %e, "removed from the ring but not yet from the metadata group");
                    }
                }
                reply
            }
            AdminRequest::CreateNamespace { name, spec } => {
                let wanted = match Namespace::parse(&name, &spec) {
                    Ok(ns) => ns,
                    Err(e) => return AdminReply::Refused { reason: e },
                };
                let existing = match self.ctx.store.namespaces_read().get(&name) {
                    Some(ns) => Some(ns.clone()),
                    None => state
                        .namespaces
                        .get(&name)
                        .and_then(|s| Namespace::parse(&name, s).ok()),
                };
                if let Some(existing) = existing {
                    // Creating what exists is a no-op when it is the same
                    // definition; anything else would change how stored
                    // cells are read, so it is refused.
                    return if existing == wanted {
                        AdminReply::Done {
                            epoch: state.epoch,
                            host_id: None,
                        }
                    } else {
                        AdminReply::Refused {
                            reason: format!(
                                "namespace {name:?} exists as {:?}; a namespace is never redefined",
                                existing.spec()
                            ),
                        }
                    };
                }
                reply_of(
                    self.group
                        .propose(Command::CreateNamespace { name, spec })
                        .await,
                )
            }
            AdminRequest::AlterNamespace { name, spec } => {
                let wanted = match Namespace::parse(&name, &spec) {
                    Ok(ns) => ns,
                    Err(e) => return AdminReply::Refused { reason: e },
                };
                let Some(current) = state
                    .namespaces
                    .get(&name)
                    .and_then(|s| Namespace::parse(&name, s).ok())
                else {
                    return AdminReply::Refused {
                        reason: format!(
                            "namespace {name:?} is not one the cluster created (the built-in and configured ones change in the nodes' config)"
                        ),
                    };
                };
                if let Some((dropped, _)) =
                    current.resolutions.iter().find(|(r, _)| !wanted.keeps(*r))
                {
                    return AdminReply::Refused {
                        reason: format!(
                            "namespace {name:?} keeps {dropped}: a change may alter retention or add resolutions, never drop one"
                        ),
                    };
                }
                if current == wanted {
                    return AdminReply::Done {
                        epoch: state.epoch,
                        host_id: None,
                    };
                }
                reply_of(
                    self.group
                        .propose(Command::AlterNamespace {
                            name,
                            spec: wanted.spec(),
                        })
                        .await,
                )
            }
            other => AdminReply::Failed {
                reason: format!("{other:?} is not a leader request"),
            },
        }
    }

    /// Whether the node at `address` answers, and as host `host_id`.
    async fn answers_as(&self, host_id: u64, address: &str) -> Result<(), String> {
        match self
            .link
            .call(address, &tally_client::Request::Status, ANSWER_WAIT)
            .await
        {
            Ok(tally_client::Response::Status(s)) if s.node_id == host_id => Ok(()),
            Ok(tally_client::Response::Status(s)) => Err(format!(
                "the node at {address} is host {}, not {host_id}",
                s.node_id
            )),
            Ok(other) => Err(format!("the node at {address} answered {other:?}")),
            Err(e) => Err(format!("host {host_id} does not answer at {address}: {e}")),
        }
    }

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

    /// Moves `host`'s ranges to their next owners and removes it: run by
    /// the leaving node itself (decommission) or by a live node for a dead
    /// one (removenode).
    async fn leave(&self, host_id: u64) -> AdminReply {
        let state = self.group.state();
        match state.members.get(&host_id).map(|m| m.state) {
            Some(MemberState::Normal) => {
                match self.on_leader(AdminRequest::StartLeave { host_id }).await {
                    AdminReply::Done { .. } => {}
                    other => return other,
                }
            }
            Some(MemberState::Leaving) => {} // resuming
            Some(state) => {
                return AdminReply::Refused {
                    reason: format!("host {host_id} is {state:?}"),
                }
            }
            None => {
                return AdminReply::Refused {
                    reason: format!("host {host_id} is not a member"),
                }
            }
        }
        // This node's own map must show the leave before it streams.
        if let Err(e) = self
            .wait_until(
                |s| s.members.get(&host_id).map(|m| m.state) == Some(MemberState::Leaving),
                LEADER_WAIT,
            )
            .await
        {
            return AdminReply::Failed { reason: e };
        }
        while self.ctx.map().pending_ranges().is_empty()
            && self.group.state().change_in_progress().is_some()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.stream(|_| true).await {
            Ok(report) => tracing::info!(host_id, ?report, "streamed a leaving node's ranges"),
            Err(e) => {
                return AdminReply::Failed {
                    reason: format!("streaming: {e} (host {host_id} stays leaving; run the command again, or `tally abort {host_id}`)"),
                }
            }
        }
        self.on_leader(AdminRequest::Remove { host_id }).await
    }

    /// Drops the cells of ranges this node no longer replicates (after a
    /// join took some of them). Refused while a topology change is in
    /// progress: its pending ranges may still need them.
    async fn cleanup(&self) -> AdminReply {
        if let Some((host, state)) = self.group.state().change_in_progress() {
            return AdminReply::Refused {
                reason: format!("host {host} is {state:?}: clean up once the change is done"),
            };
        }
        let map = self.ctx.map();
        if map.members().next().is_none() {
            return AdminReply::Refused {
                reason: "this node has no ring yet".into(),
            };
        }
        let me = self.ctx.self_id;
        let store = self.ctx.store.clone();
        let keep =
            move |token: u64| map.replicas(token).contains(&me) || map.pending(token).contains(&me);
        match tokio::task::spawn_blocking(move || store.cleanup(keep)).await {
            Ok(Ok(cells)) => {
                tracing::info!(cells, "cleanup dropped the cells of ranges this node lost");
                AdminReply::Cleaned { cells }
            }
            Ok(Err(e)) => AdminReply::Failed { reason: e.message },
            Err(e) => AdminReply::Failed {
                reason: e.to_string(),
            },
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
