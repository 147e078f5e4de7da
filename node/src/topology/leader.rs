//! The metadata leader's side of operator requests: a request that changes
//! the metadata is forwarded to the leader, checked there (one topology
//! change at a time, the node named must answer as itself, its ranges
//! streamed) and proposed.

use std::time::{Duration, Instant};
use tally_client::admin::{AdminReply, AdminRequest};

use tally_consensus::{Command, CommandResult, HostId, MemberState, ProposeError};

use super::{Topology, ADMIN_TIMEOUT, ANSWER_WAIT, LEADER_WAIT};
use crate::counter::namespace::Namespace;

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
    /// Sends `request` to the metadata leader (handling it here when this
    /// node leads), waiting through an election.
    pub(super) async fn on_leader(&self, request: AdminRequest) -> AdminReply {
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
    pub(super) async fn lead(&self, request: AdminRequest) -> AdminReply {
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
                let tokens = state.allocate_tokens(self.vnodes, rack.as_deref(), &mut rand::rng());
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
                if current.kind != wanted.kind {
                    return AdminReply::Refused {
                        reason: format!(
                            "namespace {name:?} is {:?}: its kind (and a distinct namespace's precision) never changes",
                            current.spec()
                        ),
                    };
                }
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
}
