//! Cluster metadata and replica placement.
//!
//! Today: the consistent-hash [`Ring`] with virtual nodes and preference
//! lists, and the [`token_allocator`] that picks a joining node's tokens.
//! To come (the metadata issue): members with host ids, node states,
//! namespaces and the epoch, agreed through openraft; the data path reads
//! them locally and never waits on Raft.

mod ring;
pub mod token_allocator;

pub use ring::{HostId, Ring, Token, TokenRange};
