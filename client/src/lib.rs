//! tally's client side: the wire protocol, the async client library and the
//! `tally` CLI.
//!
//! - [`frame`]: framing (length prefix, version, request id, crc32) and its
//!   tokio codec; [`message`]: requests and responses and their encoding;
//!   [`token()`]: the key-to-token hash, part of the protocol;
//!   [`RoutingTable`]: token ranges and their replicas, for token-aware
//!   routing.
//! - [`Client`]: connects to seed nodes, times out, retries with backoff
//!   and jitter where that is safe, trips a circuit breaker per node, and
//!   bounds the requests in flight. Writes report [`Outcome`]: `Ok`,
//!   `Failed` (nothing applied) or `Indeterminate` (maybe applied).
//!
//! - [`Producer`]: the aggregating producer; sums the events of one cell
//!   for a few milliseconds and sends the sums in batches, each with an
//!   op id, spooling to local disk what it cannot settle.
//! - [`Ingestor`]: exactly-once ingestion from a log with offsets (a file,
//!   a Kafka partition): sums per range of offsets, spooled and
//!   checkpointed ([`ingest`]).
//! - [`admin`]: operator requests (join, decommission, namespaces) as JSON
//!   inside the `Admin` frame.
//! - [`new_op_id`]: time-ordered operation ids, which make an increment's
//!   retries safe (counted once).
//!
//! This crate depends on no other tally crate, so that users and the
//! fault-injection harness can take it alone. The byte layout is specified
//! in `docs/protocol.md`.

pub mod admin;
pub mod auth;
mod breaker;
mod client;
mod config;
mod connection;
mod error;
pub mod frame;
pub mod ingest;
pub mod message;
mod op_id;
pub mod overview;
mod resolution;
pub mod routing;
pub mod timespec;
pub mod tls;
pub mod token;

pub use client::{Client, Outcome};
pub use config::{ClientConfig, Secret};
pub use connection::{Connection, Delivery};
pub use error::{ClientError, ErrorCode};
pub use ingest::{Ingestor, Producer, ProducerConfig, ProducerReport};
pub use message::{
    Add, AuthStep, CellBatch, CellState, Consistency, Count, DistinctPoint, Increment, ItemResult,
    KeyRange, NamespaceInfo, NamespaceKind, NodeStatus, PeerStatus, Point, RepairReport,
    ReplicaView, Request, Resolution, Response, ShardView, StorageHealth, SummaryEntry, TopKey,
};
pub use op_id::{new_op_id, op_id_at, op_id_made_ms};
pub use routing::{RoutingNode, RoutingRange, RoutingTable};
pub use token::{token, Token};
