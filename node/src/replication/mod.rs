//! Moving cell states between replicas: coalesced delivery to peers with
//! a hint for any that miss it, gathering cells from R replicas, and read
//! repair of the ones that were behind.

pub mod read_repair;
pub mod replica_reads;
pub mod replicator;
