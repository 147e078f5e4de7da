//! The `tally-node` server: coordinator, replica service, hinted handoff,
//! read repair, anti-entropy, streaming and metrics. It wires the storage
//! engine, gossip, consensus and the wire protocol together.
//!
//! Not built yet: the single-node and cluster issues fill this crate.
