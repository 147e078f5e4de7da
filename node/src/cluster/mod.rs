//! Who is in the cluster and how to reach them: connections to peers and
//! who is up, gossip with its failure detector, where the cluster map
//! comes from, and the Raft transport. It knows nothing of counters.

pub mod membership;
pub mod metadata;
pub mod peers;
pub mod raft_link;
