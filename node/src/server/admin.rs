//! Operators, metadata and test hooks: status, the routing table, the
//! debug read of every replica's copy, repair, namespaces, Raft messages
//! and operator requests (to the topology), and the clock hook.

use std::time::Instant;

use tally_client::admin::{AdminReply, AdminRequest};
use tally_client::{
    ErrorCode, NodeStatus, ReplicaView, Request, Resolution, Response, RoutingNode, RoutingRange,
    RoutingTable, ShardView, StorageHealth,
};
use tally_consensus::MemberState;
use tally_storage::Health;

use super::client::refusal;
use super::Server;
use crate::clock::Clock;
use crate::convergence::repair_schedule::schedule_view;
use crate::counter::cell_key::{self, CellKind};
use crate::counter::limits::lookup;
use crate::counter::read_plan;
use crate::counter::shard_set::ShardSet;

impl Server {
    /// This node's status, for `tally status`.
    pub(super) async fn status(&self) -> Response {
        Response::Status(self.node_status().await)
    }

    /// This node's status.
    pub(super) async fn node_status(&self) -> NodeStatus {
        let ctx = self.ctx.clone();
        let (hints_pending, disk_bytes, wal_bytes) = tokio::task::spawn_blocking(move || {
            let hints = &ctx.hints;
            let pending = hints.pending().unwrap_or(u64::MAX);
            let counters = ctx.store.db();
            let wal = counters.wal_bytes() + hints.storage().wal_bytes();
            let disk = counters.disk_bytes() + hints.storage().disk_bytes();
            (pending, disk, wal)
        })
        .await
        .unwrap_or((u64::MAX, 0, 0));
        // The counters' engine first: hints are worth less than counts.
        let (storage, storage_error) = match (
            self.ctx.store.db().health(),
            self.ctx.hints.storage().health(),
        ) {
            (Health::DiskFull { reason }, _) | (Health::Ok, Health::DiskFull { reason }) => {
                (StorageHealth::DiskFull, reason)
            }
            (Health::Poisoned { reason }, _) | (Health::Ok, Health::Poisoned { reason }) => {
                (StorageHealth::Poisoned, reason)
            }
            (Health::Ok, Health::Ok) => (StorageHealth::Ok, String::new()),
        };
        let store = &self.ctx.store;
        let counts = self.ctx.hints.counts();
        NodeStatus {
            node_id: u64::from(store.identity().host_id),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            address: self.ctx.address.clone(),
            increments: store.increments(),
            disk_bytes,
            epoch: self.ctx.epoch(),
            hints_pending,
            hints_written: counts.written,
            hints_replayed: counts.replayed,
            hints_dropped: counts.dropped,
            read_repairs: self.ctx.read_repair.repaired(),
            repair_ranges_done: self.repairer.progress().0,
            repair_ranges_total: self.repairer.progress().1,
            storage,
            storage_error,
            wal_bytes,
            connections: self.admission.connections().min(u32::MAX as usize) as u32,
            overloaded: self.admission.refused(),
            peers: {
                let mut peers = self.ctx.peers.statuses();
                self.membership.annotate(&mut peers);
                peers
            },
            reads: self.reads.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Every replica's raw copy of a key's total cell (a shard set, or a
    /// distinct namespace's sketch).
    pub(super) async fn inspect(&self, namespace: &str, key: &[u8]) -> Response {
        let kind = {
            let namespaces = self.ctx.store.namespaces();
            let ns = match lookup(&namespaces, namespace) {
                Ok(ns) => ns,
                Err(e) => return refusal(e),
            };
            if let Err(e) = self.ctx.store.limits().check_key(key) {
                return refusal(e);
            }
            if !ns.keeps(Resolution::Total) {
                return Response::Error {
                    code: ErrorCode::ResolutionNotKept,
                    message: format!("namespace {namespace} keeps no total cell to inspect"),
                };
            }
            CellKind::of(ns.kind)
        };
        let range = read_plan::point(cell_key::encode(kind, namespace, key, Resolution::Total, 0));
        let token = tally_client::token(namespace, key);
        let map = self.ctx.metadata.map();
        let request = Request::ReplicaRead {
            epoch: map.epoch(),
            ranges: vec![range],
        };
        let deadline = Instant::now() + self.read_timeout;
        let replicas = map.replicas(token.0).to_vec();
        let reads = replicas
            .iter()
            .map(|&h| self.ctx.reads.read_replica(h, &request, deadline));
        let views = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .map(|(host, cells)| {
                let address = map
                    .member(host)
                    .map(|m| m.address.clone())
                    .unwrap_or_default();
                let value = match &cells {
                    Ok(cells) => cells.first().map(|c| c.value.clone()).unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                let (error, shards) = match cells {
                    Ok(cells) => match cells.first().map(|c| ShardSet::decode(&c.value)) {
                        None => (None, Vec::new()),
                        Some(_) if kind == CellKind::Distinct => (None, Vec::new()),
                        Some(Some(set)) => (
                            None,
                            set.shards()
                                .iter()
                                .map(|s| ShardView {
                                    id: s.id,
                                    clock: s.clock,
                                    sum: s.sum,
                                    count: s.count,
                                })
                                .collect(),
                        ),
                        Some(None) => (Some("malformed cell".to_owned()), Vec::new()),
                    },
                    Err(e) => (Some(e), Vec::new()),
                };
                ReplicaView {
                    host_id: host.0,
                    address,
                    error,
                    shards,
                    value,
                }
            })
            .collect();
        Response::Replicas(views)
    }

    /// The routing table clients use.
    pub(super) fn routing(&self) -> RoutingTable {
        let map = self.ctx.metadata.map();
        RoutingTable {
            epoch: map.epoch(),
            replication_factor: map.replication_factor() as u32,
            nodes: map
                .members()
                .map(|m| RoutingNode {
                    host_id: m.host_id.0,
                    address: m.address.clone(),
                })
                .collect(),
            ranges: map
                .ranges()
                .into_iter()
                .map(|r| RoutingRange {
                    end_token: r.end,
                    replicas: r.replicas.iter().map(|h| h.0).collect(),
                })
                .collect(),
        }
    }

    /// Anti-entropy over every range this node replicates.
    pub(super) async fn repair(&self) -> Response {
        match self.repairer.repair_all().await {
            Ok(report) => Response::RepairReport(report),
            Err(message) => Response::Error {
                code: ErrorCode::Overloaded,
                message,
            },
        }
    }

    /// The clock test hook (the harness's clock nemesis).
    pub(super) fn adjust_clock(&self, offset_ms: i64) -> Response {
        if !self.test_hooks {
            return Response::Error {
                code: ErrorCode::Forbidden,
                message: "test hooks are disabled on this node (start it with --test-hooks)".into(),
            };
        }
        self.ctx.clock.set_offset_ms(offset_ms);
        tracing::warn!(offset_ms, "test hook: wall clock shifted");
        Response::Ack
    }

    /// A Raft message from another member of the metadata group.
    pub(super) async fn raft(&self, payload: &[u8]) -> Response {
        match &self.topology {
            Some(t) => match t.group().handle(payload).await {
                Ok(reply) => Response::Raft(reply),
                Err(message) => Response::Error {
                    code: ErrorCode::MalformedFrame,
                    message,
                },
            },
            None => Response::Error {
                code: ErrorCode::Forbidden,
                message: "this node runs with static membership (--members): no Raft".into(),
            },
        }
    }

    /// An operator request (topology changes, namespaces, the cluster
    /// view).
    pub(super) async fn admin(&self, payload: &[u8]) -> Response {
        let request = AdminRequest::from_bytes(payload);
        if let Ok(request) = &request {
            // Anti-entropy's requests work in static clusters too.
            if let AdminRequest::RepairSchedule = request {
                return Response::Admin(
                    AdminReply::RepairSchedule(schedule_view(&self.repairer)).to_bytes(),
                );
            }
            if let Some(reply) = self.repairer.answer(request) {
                return Response::Admin(reply.to_bytes());
            }
        }
        let reply = match (request, &self.topology) {
            (Err(reason), _) => AdminReply::Refused { reason },
            (Ok(_), None) => AdminReply::Refused {
                reason: "this node runs with static membership (--members): topology changes need a cluster started with --init/--seed".into(),
            },
            (Ok(request), Some(t)) => t.handle(request).await,
        };
        Response::Admin(reply.to_bytes())
    }

    /// Every namespace this node knows.
    pub(super) fn list_namespaces(&self) -> Response {
        let namespaces = self.ctx.store.namespaces_read();
        Response::Namespaces(namespaces.iter().map(|ns| ns.info()).collect())
    }

    /// One namespace.
    pub(super) fn describe_namespace(&self, name: &str) -> Response {
        match lookup(&self.ctx.store.namespaces_read(), name) {
            Ok(ns) => Response::Namespaces(vec![ns.info()]),
            Err(e) => refusal(e),
        }
    }

    /// This node's clock, in ms.
    pub(crate) fn now_ms(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    /// Whether this node can serve: both storage engines healthy, and a
    /// member of the ring in the normal state (not joining or leaving).
    /// `Err` says why not.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        for (what, health) in [
            ("counters", self.ctx.store.db().health()),
            ("hints", self.ctx.hints.storage().health()),
        ] {
            match health {
                Health::Ok => {}
                Health::DiskFull { reason } => {
                    return Err(format!("{what} storage: disk full: {reason}"))
                }
                Health::Poisoned { reason } => return Err(format!("{what} storage: {reason}")),
            }
        }
        let me = self.ctx.self_id;
        match &self.topology {
            Some(topology) => match topology.member_state(me) {
                Some(MemberState::Normal) => Ok(()),
                Some(state) => Err(format!(
                    "this node is {}",
                    format!("{state:?}").to_lowercase()
                )),
                None => {
                    Err("this node is joining: the metadata it follows does not list it yet".into())
                }
            },
            None if self.ctx.map().member(me).is_some() => Ok(()),
            None => Err("this node is not in the member list".into()),
        }
    }
}
