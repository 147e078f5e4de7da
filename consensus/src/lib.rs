//! Cluster metadata agreed through openraft: members and their host ids,
//! tokens, node states, replication factor, namespaces and the epoch. The data
//! path reads it locally and never waits on Raft.
//!
//! Not built yet: the metadata issue fills this crate.
