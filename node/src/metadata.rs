//! [`Metadata`]: where the data path gets its view of the cluster.
//!
//! The coordinator asks for the current [`ClusterMap`] once per request and
//! never waits on whoever produces maps. Today the map is static, built
//! from the node's configuration ([`StaticMetadata`]); the metadata issue
//! replaces it with one fed by openraft, behind this same trait.

use std::sync::Arc;

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
