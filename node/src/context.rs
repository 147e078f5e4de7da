//! [`NodeContext`]: what every service of a node shares, built once by
//! [`Node::start`](crate::Node::start) and handed to each service, so no
//! service reaches through another for its parts.
//!
//! It holds this node's parts, not its services: the coordinator,
//! anti-entropy, gossip and topology each take the context and name the
//! other services they call.

use std::sync::Arc;

use tally_consensus::{ClusterMap, HostId};

use crate::clock::OffsetClock;
use crate::cluster::metadata::Metadata;
use crate::cluster::peers::Peers;
use crate::fault_modes::BrokenMode;
use crate::replica::hint_store::HintStore;
use crate::replica::store::CounterStore;
use crate::replica::write_pipeline::WritePipeline;
use crate::replication::read_repair::ReadRepair;
use crate::replication::replica_reads::ReplicaReads;
use crate::replication::replicator::Replicator;

/// A node's shared parts.
#[derive(Debug)]
pub struct NodeContext {
    /// This node's host id.
    pub self_id: HostId,
    /// The address other nodes and clients reach this node at.
    pub address: String,
    /// The node's clock (test hooks may shift it).
    pub clock: Arc<OffsetClock>,
    /// This node's counters.
    pub store: Arc<CounterStore>,
    /// The one write thread over `store`.
    pub writer: WritePipeline,
    /// Hints kept for replicas that missed writes.
    pub hints: Arc<HintStore>,
    /// Connections to the other nodes, and who is up.
    pub peers: Arc<Peers>,
    /// Where the cluster map comes from.
    pub metadata: Arc<dyn Metadata>,
    /// Coalesced delivery of cell states to the other replicas.
    pub replicator: Arc<Replicator>,
    /// Cells gathered from R replicas (reads, the debug read,
    /// anti-entropy).
    pub reads: ReplicaReads,
    /// Merged cells sent to the replicas that were behind.
    pub read_repair: ReadRepair,
    /// Deliberately wrong behaviour (the harness's self-tests only).
    pub broken: Option<BrokenMode>,
}

impl NodeContext {
    /// The current cluster map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.metadata.map()
    }

    /// The metadata epoch this node routes with.
    pub fn epoch(&self) -> u64 {
        self.metadata.map().epoch()
    }
}
