//! This node's own copy of the data: the counter store over the storage
//! engine, the one write thread, the op ids it led, the hints it keeps for
//! others, which shard it writes (its identity), and the summaries of
//! what it led (trending). Local state only; nothing here talks to
//! another node.

pub mod hint_store;
pub mod identity;
pub mod op_window;
mod retention;
pub mod store;
mod stripes;
pub mod trending;
pub mod write_pipeline;
