//! [`Metadata`]: where the data path gets its view of the cluster.
//!
//! The coordinator asks for the current [`ClusterMap`] once per request and
//! never waits on whoever produces maps: either a static map built from
//! the node's configuration ([`StaticMetadata`], `--members`), or the map
//! of the Raft-agreed metadata ([`FollowedMetadata`], replaced by the
//! topology module whenever the metadata group applies a change).

use std::sync::Arc;

use parking_lot::RwLock;
use tally_consensus::ClusterMap;

/// A source of cluster maps.
pub trait Metadata: Send + Sync + std::fmt::Debug + 'static {
    /// The current map: an `Arc` clone, never a wait on consensus.
    fn map(&self) -> Arc<ClusterMap>;
}

/// A map fixed at start from configuration: every node given the same
/// member list computes the same tokens ([`ClusterMap::allocate`]).
#[derive(Debug)]
pub struct StaticMetadata {
    map: Arc<ClusterMap>,
}

impl StaticMetadata {
    /// Metadata that always answers `map`.
    pub fn new(map: ClusterMap) -> StaticMetadata {
        StaticMetadata { map: Arc::new(map) }
    }
}

impl Metadata for StaticMetadata {
    fn map(&self) -> Arc<ClusterMap> {
        self.map.clone()
    }
}

/// The latest map of the metadata group, swapped in as changes apply.
#[derive(Debug)]
pub struct FollowedMetadata {
    map: RwLock<Arc<ClusterMap>>,
}

impl FollowedMetadata {
    /// Starts with `map` (the empty map before this node joined).
    pub fn new(map: ClusterMap) -> FollowedMetadata {
        FollowedMetadata {
            map: RwLock::new(Arc::new(map)),
        }
    }

    /// Makes `map` current (readers holding the old one keep it).
    pub fn set(&self, map: ClusterMap) {
        *self.map.write() = Arc::new(map);
    }
}

impl Metadata for FollowedMetadata {
    fn map(&self) -> Arc<ClusterMap> {
        self.map.read().clone()
    }
}
