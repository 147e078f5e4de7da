//! Topology changes that move data: bootstrap, join (register, catch up,
//! settle, stream, finish), decommission and removenode (start leaving,
//! settle, stream, remove), and cleanup of ranges a node no longer
//! replicates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::admin::{AdminReply, AdminRequest};
use tally_consensus::{ClusterState, Command, CommandResult, MemberState};

use super::{Topology, ADMIN_TIMEOUT, LEADER_WAIT};

impl Topology {
    /// Bootstraps a new cluster whose first member is this node (host id
    /// 1, in `rack`). Does nothing if the metadata already has a cluster.
    pub async fn bootstrap(
        &self,
        cluster_name: &str,
        replication_factor: usize,
        rack: Option<String>,
    ) -> Result<(), String> {
        if self.group.state().cluster_name.is_some() {
            return Ok(());
        }
        let (voters, _) = self.group.members();
        if voters.is_empty() {
            self.group.initialize(&self.ctx.address).await?;
        }
        let tokens =
            ClusterState::default().allocate_tokens(self.vnodes, rack.as_deref(), &mut rand::rng());
        let command = Command::Bootstrap {
            cluster_name: cluster_name.to_owned(),
            replication_factor,
            address: self.ctx.address.clone(),
            rack,
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

    /// Moves `host`'s ranges to their next owners and removes it: run by
    /// the leaving node itself (decommission) or by a live node for a dead
    /// one (removenode).
    pub(super) async fn leave(&self, host_id: u64) -> AdminReply {
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
    pub(super) async fn cleanup(&self) -> AdminReply {
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
}
