//! Moving cell states between replicas: coalesced delivery to peers, with
//! a hint for any that miss it.

pub mod replicator;
