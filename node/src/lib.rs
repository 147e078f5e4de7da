//! The `tally-node` server: it stores time-bucketed counters in its own
//! storage engine, replicates them to the other replicas of each key, and
//! serves clients and other nodes over tally's framed TCP protocol.
//!
//! - [`Coordinator`]: runs a request over the key's replicas (quorums,
//!   leaders, forwarding, read repair). [`Peers`]: connections to the
//!   other nodes and who is up; [`Membership`]: gossip and its phi-accrual
//!   failure detector, feeding `Peers`. [`Replicator`]: coalesced delivery of cell
//!   states to peers. [`HintStore`] and [`handoff`]: hinted handoff for
//!   replicas that miss writes. [`Repairer`]: Merkle anti-entropy.
//!   [`Metadata`]: where the cluster map comes from (static
//!   configuration, or [`Topology`] following the Raft-agreed metadata and
//!   running joins and leaves, over [`RaftLink`]).
//! - [`CounterStore`]: increments, cell reads and merges over cells keyed
//!   by [`cell_key`], valued by the CRDT [`ShardSet`]; [`ReadPlan`]: a read
//!   as key ranges and its answer from cells; [`WritePipeline`]: the one
//!   write thread.
//! - [`Server`]: the TCP front end, within the node-wide bounds of
//!   [`Admission`]. [`NodeConfig`]: settings. [`Identity`]: host id and
//!   incarnation (which shard this node writes); after an unclean stop
//!   [`relearn_op_ids`] learns the op ids it led back from the replicas.

mod admission;
pub mod cell_key;
mod clock;
mod config;
mod context;
mod coordinator;
mod fault_modes;
pub mod handoff;
mod hints;
mod identity;
mod limits;
mod log_limit;
mod membership;
pub mod merkle;
mod metadata;
mod namespace;
mod node;
mod op_relearn;
pub mod op_window;
mod peers;
mod query;
mod raft_link;
mod repair;
mod replicator;
mod server;
mod shard_set;
mod store;
mod topology;
mod units;
mod write_pipeline;

pub use admission::{Admission, ServerLimits};
pub use clock::{Clock, OffsetClock, SystemClock};
pub use config::{
    ClusterConfig, DurabilityMode, GossipSettings, NodeConfig, StorageConfig, TestConfig,
};
pub use context::NodeContext;
pub use coordinator::{needed, Coordinator, CoordinatorConfig};
pub use fault_modes::BrokenMode;
pub use hints::{Hint, HintCounts, HintMerge, HintStore};
pub use identity::Identity;
pub use limits::{RequestError, StoreLimits};
pub use membership::Membership;
pub use metadata::{FollowedMetadata, Metadata, StaticMetadata};
pub use namespace::{Namespace, Namespaces, DEFAULT_NAMESPACE, DEFAULT_SPEC};
pub use node::{Node, NodeHandle};
pub use op_relearn::relearn_op_ids;
pub use peers::{PeerConfig, Peers};
pub use query::{cover, ReadPlan};
pub use raft_link::RaftLink;
pub use repair::Repairer;
pub use replicator::{Replicator, ReplicatorConfig};
pub use server::{Server, Services};
pub use shard_set::{CounterMerge, Shard, ShardSet};
pub use store::{valid_cell, CounterStore, Led};
pub use topology::{check_still_member, register, RaftParts, Topology};
pub use write_pipeline::{Durable, WritePipeline, WriterThreads};
