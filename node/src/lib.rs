//! The `tally-node` server: it stores time-bucketed counters in the storage
//! engine and serves them over tally's framed TCP protocol.
//!
//! - [`CounterStore`]: increments, totals, ranges and stats over cells
//!   keyed by [`cell_key`], valued by the CRDT [`ShardSet`].
//! - [`Server`]: the TCP front end. [`NodeConfig`]: settings.
//! - [`Identity`]: host id and incarnation (which shard this node writes).
//!
//! Single-node today: replication, hints, repair, gossip and Raft metadata
//! arrive with the cluster issues.

pub mod cell_key;
mod config;
mod identity;
mod namespace;
mod server;
mod shard_set;
mod store;
mod write_pipeline;

pub use config::NodeConfig;
pub use identity::Identity;
pub use namespace::{Namespace, Namespaces, DEFAULT_NAMESPACE};
pub use server::Server;
pub use shard_set::{CounterMerge, Shard, ShardSet};
pub use store::{cover, Clock, CounterStore, RequestError, StoreLimits, SystemClock};
pub use write_pipeline::WritePipeline;
