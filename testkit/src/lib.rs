//! tally-testkit: real `tally-node` processes on this machine, for the
//! tests of every crate, the harness and the local demo.
//!
//! - [`NodeProcess`]: one node on a data directory and a loopback port,
//!   ready once it answers `Status`, killed when dropped;
//!   [`node_bin`] finds the binary.
//! - [`Cluster`]: several nodes with a static member list.
//! - [`unused_local_port`]: a port for a node about to start (not port 0,
//!   see there).
//! - [`http`]: one request to a node's HTTP API, as any client sends it.
//!
//! Test tooling: a failure here is a failed test, so the test helpers
//! panic with what they saw; what the demo uses ([`NodeCommand`],
//! [`NodeProcess::spawn`], [`NodeProcess::stop`]) returns errors.

#![allow(clippy::unwrap_used)]

mod cluster;
mod http;
mod port;
mod process;

pub use cluster::Cluster;
pub use http::{http, http_as, HttpAnswer};
pub use port::unused_local_port;
pub use process::{free_port, inc, local_members, node_bin, now_ms, NodeCommand, NodeProcess};
