//! Cluster metadata and replica placement.
//!
//! - [`Ring`] (virtual nodes, preference lists), the [`token_allocator`]
//!   that picks a joining node's tokens, and [`ClusterMap`], the data
//!   path's read-only view of members, tokens and placement at one epoch.
//! - [`ClusterState`] and [`Command`]: the metadata (host ids assigned from
//!   the log and never reused, addresses, racks, tokens, member states,
//!   the replication factor, namespaces, the epoch) and its changes, with
//!   the business rules answered in [`CommandResult`].
//! - [`MetadataGroup`]: one node's member of the openraft group (openraft
//!   0.9.25, pinned) over a durable [`LogStore`] (fsynced before openraft
//!   is told) and [`StateMachine`] (snapshots), talking through a
//!   [`RaftTransport`] the node provides; the state is published on a
//!   watch channel, so readers never wait on Raft.
//!
//! The node implements the transport over its framed protocol and runs
//! joins, leaves and streaming (`tally-node`'s `topology` module);
//! [`ClusterState::choose_voters`] picks the group's voters.

mod cluster_map;
mod cluster_state;
mod log_store;
mod metadata_group;
mod network;
mod raft_types;
mod ring;
mod state_machine;
pub mod token_allocator;

pub use cluster_map::{ClusterMap, MapError, Member};
pub use cluster_state::{ClusterState, Command, CommandResult, MemberRecord, MemberState};
pub use log_store::LogStore;
pub use metadata_group::{GroupConfig, MetadataGroup, ProposeError};
pub use network::{RaftReply, RaftRpc, RaftTransport, TransportFuture};
pub use raft_types::{NodeId, TypeConfig};
pub use ring::{HostId, Ring, Token, TokenRange};
pub use state_machine::StateMachine;
