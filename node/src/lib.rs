//! The `tally-node` server: it stores time-bucketed counters in its own
//! storage engine, replicates them to the other replicas of each key, and
//! serves clients and other nodes over tally's framed TCP protocol.
//!
//! [`Node::start`] builds a node from its [`NodeConfig`]; the rest is in
//! wings whose imports point one way, from the top:
//!
//! - [`http`] and [`server`]: the fronts, HTTP/JSON and the binary TCP
//!   protocol, the only places wire requests meet the node, within the
//!   node-wide bounds of its admission.
//! - [`topology`]: the Raft-agreed metadata into the data path; joins,
//!   decommission, removenode.
//! - [`coordinator`] (one client request over its replicas) and
//!   [`convergence`] (what brings replicas together later: hint replay,
//!   anti-entropy, relearning op ids after an unclean stop).
//! - [`replication`]: moving cell states between replicas.
//! - [`replica`]: this node's own copy (the counter store, the write
//!   thread, the op-id window, the hint store, its identity).
//! - [`cluster`]: who is there and how to reach them (peers, gossip, the
//!   cluster map's source, the Raft transport).
//! - [`security`]: who may talk to the node (the cluster secret, API
//!   tokens and their roles), asked by both fronts.
//! - [`counter`]: what a counter is, pure: the CRDT, cell keys,
//!   namespaces, read plans, request limits.
//!
//! Beside them: [`NodeContext`] (the parts every service shares),
//! [`NodeConfig`], the [`Clock`], and [`BrokenMode`] (the harness's
//! deliberately wrong behaviours).

pub mod cluster;
pub mod convergence;
pub mod coordinator;
pub mod counter;
pub mod http;
pub mod replica;
pub mod replication;
pub mod security;
pub mod server;
pub mod topology;

mod clock;
mod config;
mod context;
mod fault_modes;
mod log_limit;
pub mod metrics;
mod node;
mod units;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use cluster::membership::Membership;
pub use cluster::metadata::{FollowedMetadata, Metadata, StaticMetadata};
pub use cluster::peers::{PeerConfig, Peers};
pub use cluster::raft_link::RaftLink;
pub use config::{
    ClusterConfig, DurabilityMode, GossipSettings, HttpConfig, NodeConfig, StorageConfig,
    TestConfig,
};
pub use context::NodeContext;
pub use convergence::anti_entropy::Repairer;
pub use convergence::hint_replay::HintConfig;
pub use coordinator::{needed, Coordinator, CoordinatorConfig};
pub use counter::cell_merge::CellMerge;
pub use counter::limits::{RequestError, StoreLimits};
pub use counter::namespace::{Namespace, Namespaces, DEFAULT_NAMESPACE, DEFAULT_SPEC};
pub use counter::read_plan::{cover, Read, ReadAnswer, ReadKind, ReadPlan};
pub use counter::shard_set::{Shard, ShardSet};
pub use fault_modes::BrokenMode;
pub use node::{Node, NodeHandle};
pub use replica::hint_store::{Hint, HintCounts, HintMerge, HintStore};
pub use replica::identity::Identity;
pub use replica::store::lead::Led;
pub use replica::store::{valid_cell, CounterStore};
pub use replica::write_pipeline::{Durable, WritePipeline, WriterThreads};
pub use replication::replicator::{Replicator, ReplicatorConfig};
pub use server::admission::{Admission, ServerLimits};
pub use server::{Server, ServerOptions, Services};
pub use topology::{RaftParts, Topology};
