//! Gossip membership and phi-accrual failure detection. The core has no I/O:
//! the caller passes the time, the random number generator and delivers the
//! messages, so the same code runs in a deterministic simulation and in the
//! node over real sockets.
//!
//! - [`Gossiper`]: per-node state (generation, heartbeat, versioned
//!   entries), scuttlebutt reconciliation (`Syn` / `Ack` / `Ack2`), up/down
//!   events. See `ALGORITHM.md`.
//! - [`PhiAccrual`]: the failure detector.
//! - [`simulation::Simulation`]: a seeded in-process network of gossipers.
//! - [`codec`]: the byte encoding of messages, for the node's transport.

pub mod codec;
mod error;
mod gossiper;
mod phi;
pub mod simulation;

pub use error::Error;
pub use gossiper::{
    Beat, Delta, Digest, Event, GossipConfig, Gossiper, Message, NodeId, NodeState,
};
pub use phi::PhiAccrual;
