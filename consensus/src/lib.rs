//! Cluster metadata and replica placement.
//!
//! Today: the consistent-hash [`Ring`] with virtual nodes and preference
//! lists, the [`token_allocator`] that picks a joining node's tokens, and
//! [`ClusterMap`], the data path's read-only view of members, tokens and
//! placement at one epoch.
//! To come (the metadata issue): members with host ids, node states,
//! namespaces and the epoch, agreed through openraft; the data path reads
//! them locally and never waits on Raft.

mod cluster_map;
mod ring;
pub mod token_allocator;

pub use cluster_map::{ClusterMap, MapError, Member};
pub use ring::{HostId, Ring, Token, TokenRange};
