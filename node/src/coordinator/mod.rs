//! [`Coordinator`]: runs a client's request across the key's replicas.
//!
//! Any node coordinates any request. For each key it looks up the
//! preference list (the first N distinct nodes clockwise from the key's
//! token, from the local [`ClusterMap`](tally_consensus::ClusterMap); never a wait on metadata).
//!
//! **Writes.** A batch is validated, then split by replica set; the parts
//! run in parallel and results are reported per item. For each part:
//!
//! 1. `W` comes from the consistency level (ONE = 1, QUORUM = N/2 + 1,
//!    ALL = N). If fewer than `W` replicas are up, the part fails with
//!    `Unavailable` and nothing is applied (like Cassandra's
//!    `UnavailableException`).
//! 2. The *leader* applies the deltas to its own shard of each cell: this
//!    node when it is a replica, else the part is forwarded to the first
//!    live replica, which leads it (a forwarded part is never forwarded
//!    again). The leader's write is durable per the node's durability mode
//!    before anything is sent.
//! 3. The leader sends the resulting shard *states* (never deltas) to the
//!    other replicas and answers once `W - 1` of them acknowledged. A
//!    replica that is down, refuses or times out gets a hint.
//! 4. `Failed` only when nothing can have been applied (validation,
//!    unavailable, a local write that certainly did not land); once the
//!    leader applied, a missing acknowledgement is `Indeterminate`.
//!
//! **Reads.** The coordinator asks `R` replicas (itself first when it is
//! one), replacing any that fail by the next live replica, and asking the
//! next one as well when an answer is late (speculative retry), merges their
//! cells by the CRDT rule, and answers from the merge. Replicas that were
//! behind get the merged state (read repair): before the answer for
//! QUORUM and ALL, so that QUORUM reads are monotonic (a later read meets
//! at least one replica holding what this one returned), and for a sample
//! of ONE reads in the background, reading the other live replicas too.
//!
//! With `W + R > N` every acknowledged increment is visible to every later
//! read.
//!
//! **Adds** (distinct namespaces) need no leader: the coordinator builds
//! the sketches and merges them into every replica (`add`).
//!
//! **Top** merges every node's summary of what it led to pick candidates,
//! then reads their exact counts (`top`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tally_client::Consistency;

use crate::context::NodeContext;

mod add;
mod read;
pub mod top;
mod write;

pub use write::op_leader;

/// How the coordinator waits and repairs (the `[coordinator]` section of
/// the node's config).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Deadline of a write whose request names none (`timeout_ms = 0`).
    #[serde(rename = "default_write_timeout_ms", with = "crate::units::millis")]
    pub default_write_timeout: Duration,
    /// Longest deadline a write may ask for.
    #[serde(rename = "max_write_timeout_ms", with = "crate::units::millis")]
    pub max_write_timeout: Duration,
    /// Deadline of a read.
    #[serde(rename = "read_timeout_ms", with = "crate::units::millis")]
    pub read_timeout: Duration,
    /// A read still missing answers this long after it asked also asks the
    /// next replica (Cassandra's speculative retry).
    #[serde(rename = "speculative_retry_ms", with = "crate::units::millis")]
    pub speculative_retry: Duration,
    /// One ONE read in this many also reads the other live replicas in the
    /// background and repairs them (0: never).
    pub one_read_repair_every: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            default_write_timeout: Duration::from_secs(2),
            max_write_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(2),
            speculative_retry: Duration::from_millis(50),
            one_read_repair_every: 10,
        }
    }
}

/// Replicas that must answer at `consistency` out of `replicas`.
pub fn needed(consistency: Consistency, replicas: usize) -> usize {
    match consistency {
        Consistency::One => 1.min(replicas),
        Consistency::Quorum => replicas / 2 + 1,
        Consistency::All => replicas,
    }
}

/// Coordinates requests over the cluster: the write path is in `write`,
/// the read path in `read`.
#[derive(Debug)]
pub struct Coordinator {
    ctx: Arc<NodeContext>,
    config: CoordinatorConfig,
    /// ONE reads since start, to sample one in `one_read_repair_every`.
    one_reads: AtomicU64,
}

impl Coordinator {
    /// A coordinator over the node's parts.
    pub fn new(ctx: Arc<NodeContext>, config: CoordinatorConfig) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            ctx,
            config,
            one_reads: AtomicU64::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_needs_a_majority() {
        assert_eq!(needed(Consistency::One, 3), 1);
        assert_eq!(needed(Consistency::Quorum, 3), 2);
        assert_eq!(needed(Consistency::Quorum, 4), 3);
        assert_eq!(needed(Consistency::Quorum, 1), 1);
        assert_eq!(needed(Consistency::All, 3), 3);
    }
}
