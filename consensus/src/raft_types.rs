//! The types openraft is instantiated with: metadata [`Command`]s as log
//! data, [`CommandResult`]s as responses, host ids as node ids, and a
//! node's address as its node information.

// openraft's traits return its (large) StorageError; the helpers here
// build and pass it on.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

use crate::cluster_state::{Command, CommandResult};

openraft::declare_raft_types!(
    /// tally's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// A Raft node id: the member's host id.
pub type NodeId = u64;
/// The metadata group's Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;

/// A storage error from any displayable cause.
pub fn storage_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    cause: impl std::fmt::Display,
) -> StorageError {
    openraft::StorageError::from_io_error(subject, verb, std::io::Error::other(cause.to_string()))
}

// Keep the unqualified `Cursor` the macro names in use.
#[allow(dead_code)]
type SnapshotBytes = Cursor<Vec<u8>>;
