//! What each request needs from its connection (docs/security.md): known
//! from the frame's kind before the body is decoded, so a node refuses a
//! frame its caller may not send without reading it.

use super::{kind, Request};
use crate::auth::Role;

/// What a request needs from its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`Ping`, the authentication steps).
    Nothing,
    /// A token with at least this role (or a peer).
    Role(Role),
    /// A peer: the cluster secret.
    Peer,
}

impl Need {
    /// What a request of wire kind `kind` needs at least, known from the
    /// frame header before the body is decoded. Only `Admin` needs more
    /// once decoded ([`Need::of`]).
    pub fn of_kind(kind: u8) -> Need {
        use super::kind as k;
        match kind {
            k::PING | k::AUTH => Need::Nothing,
            k::TOTAL
            | k::RANGE
            | k::STATS
            | k::LIST_NAMESPACES
            | k::DESCRIBE_NAMESPACE
            | k::STATUS
            | k::ROUTING
            | k::INSPECT_REPLICAS
            | k::DISTINCT
            | k::TOP
            | k::ADMIN => Need::Role(Role::Read),
            k::INCREMENT | k::ADD => Need::Role(Role::Write),
            k::REPAIR | k::ADJUST_CLOCK => Need::Role(Role::Admin),
            k::FORWARDED_INCREMENT
            | k::REPLICA_WRITE
            | k::REPLICA_READ
            | k::GOSSIP
            | k::RAFT
            | k::MERKLE_TREE
            | k::LED_OP_IDS
            | k::TOP_SUMMARY => Need::Peer,
            // Refused as `UnknownMessage` by the decoder, which reads no
            // body for a kind it does not know.
            _ => Need::Nothing,
        }
    }

    /// What a decoded request needs: its kind's need, and for `Admin` the
    /// operator request's (reading the cluster view needs `read`; the
    /// steps nodes take to join and leave need a peer; every change an
    /// operator asks for needs `admin`).
    pub fn of(request: &Request) -> Need {
        use crate::admin::AdminRequest as A;
        match request {
            Request::Admin { payload } => match A::from_bytes(payload) {
                Ok(A::Cluster | A::RepairSchedule) | Err(_) => Need::Role(Role::Read),
                Ok(
                    A::Register { .. }
                    | A::RepairLease { .. }
                    | A::RepairRelease { .. }
                    | A::AddToGroup { .. }
                    | A::FinishJoin { .. }
                    | A::StartLeave { .. }
                    | A::Remove { .. },
                ) => Need::Peer,
                Ok(_) => Need::Role(Role::Admin),
            },
            other => Need::of_kind(other.kind()),
        }
    }
}

/// Whether wire kind `kind` is an authentication step.
pub fn is_auth_kind(wire_kind: u8) -> bool {
    wire_kind == kind::AUTH
}
