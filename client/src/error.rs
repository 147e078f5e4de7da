//! Error codes on the wire and the client library's error type.

/// Why a node refused or failed a request. Codes are stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or body could not be decoded. Nothing was applied.
    MalformedFrame,
    /// The frame's protocol version is not spoken here. Nothing applied.
    UnsupportedVersion,
    /// The frame's crc32 does not match its body. Nothing applied.
    ChecksumMismatch,
    /// Unknown message kind. Nothing applied.
    UnknownMessage,
    /// The frame exceeds the size limit; the connection is closed.
    FrameTooLarge,
    /// The namespace does not exist. Nothing applied.
    UnknownNamespace,
    /// The key is empty or longer than 1,024 bytes. Nothing applied.
    InvalidKey,
    /// Too many increments in one batch. Nothing applied.
    BatchTooLarge,
    /// The timestamp is too far in the future (or before 1970). Nothing applied.
    TimestampOutOfRange,
    /// The range is empty, inverted or too long. Nothing read.
    InvalidRange,
    /// The namespace does not keep that resolution. Nothing read.
    ResolutionNotKept,
    /// The increment's op id is not live: made longer ago than the node's
    /// op-id window (10 minutes by default), or too far ahead of its
    /// clock, so a retry could not be told from a new increment. Nothing
    /// applied (it may have been counted by an earlier attempt).
    OpIdExpired,
    /// The increment would take a counter past what it can hold: its sum
    /// past the `i64` range, or its shard's version clock past 2^62; or a
    /// read's sum over shards or buckets is past the `i64` range. Nothing
    /// applied (nothing read).
    Overflow,
    /// The namespace is of the other kind: increments go to counter
    /// namespaces, adds of members to distinct ones (and a distinct read
    /// asks a distinct namespace). Nothing applied (nothing read).
    WrongKind,
    /// A member to add is empty or longer than 1,024 bytes. Nothing
    /// applied.
    InvalidMember,
    /// The node sheds load; retry later with backoff. Nothing applied.
    Overloaded,
    /// The deadline passed; the outcome of a write is unknown.
    Timeout,
    /// Too few replicas are up to meet the consistency level, so the node
    /// did not try. Nothing applied.
    Unavailable,
    /// The node is shutting down. Nothing applied.
    ShuttingDown,
    /// The sender routed with an older ring (metadata epoch) than the
    /// receiver; refresh the routing table and retry. Nothing applied.
    StaleRing,
    /// The caller is known but may not do this: its token's role is too
    /// low, or the node's configuration does not allow the request (a
    /// test hook on a node started without `--test-hooks`). Nothing
    /// applied.
    Forbidden,
    /// The connection has not proved who it is, or failed to: no token or
    /// a wrong one (or one revoked since), or the wrong cluster secret.
    /// Nothing applied; the node closes a connection that was never
    /// authenticated.
    Unauthenticated,
    /// The node's storage failed (disk full, I/O error, corruption).
    Storage,
    /// A bug or an unexpected condition on the node.
    Internal,
    /// The node that led the write stopped answering after the request
    /// reached it (connection lost): whether it applied is unknown.
    PeerLost,
    /// A code this client does not know (from a newer node).
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::ChecksumMismatch => 3,
            ErrorCode::UnknownMessage => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::UnknownNamespace => 10,
            ErrorCode::InvalidKey => 11,
            ErrorCode::BatchTooLarge => 12,
            ErrorCode::TimestampOutOfRange => 13,
            ErrorCode::InvalidRange => 14,
            ErrorCode::ResolutionNotKept => 15,
            ErrorCode::OpIdExpired => 16,
            ErrorCode::Overflow => 17,
            ErrorCode::WrongKind => 18,
            ErrorCode::InvalidMember => 19,
            ErrorCode::Overloaded => 20,
            ErrorCode::Timeout => 21,
            ErrorCode::Unavailable => 22,
            ErrorCode::ShuttingDown => 23,
            ErrorCode::StaleRing => 24,
            ErrorCode::Forbidden => 25,
            ErrorCode::Unauthenticated => 26,
            ErrorCode::Storage => 30,
            ErrorCode::Internal => 31,
            ErrorCode::PeerLost => 32,
            ErrorCode::Unknown(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u16(v: u16) -> ErrorCode {
        const KNOWN: [ErrorCode; 25] = [
            ErrorCode::MalformedFrame,
            ErrorCode::UnsupportedVersion,
            ErrorCode::ChecksumMismatch,
            ErrorCode::UnknownMessage,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownNamespace,
            ErrorCode::InvalidKey,
            ErrorCode::BatchTooLarge,
            ErrorCode::TimestampOutOfRange,
            ErrorCode::InvalidRange,
            ErrorCode::ResolutionNotKept,
            ErrorCode::OpIdExpired,
            ErrorCode::Overflow,
            ErrorCode::WrongKind,
            ErrorCode::InvalidMember,
            ErrorCode::Overloaded,
            ErrorCode::Timeout,
            ErrorCode::Unavailable,
            ErrorCode::ShuttingDown,
            ErrorCode::StaleRing,
            ErrorCode::Forbidden,
            ErrorCode::Unauthenticated,
            ErrorCode::Storage,
            ErrorCode::Internal,
            ErrorCode::PeerLost,
        ];
        KNOWN
            .into_iter()
            .find(|c| c.as_u16() == v)
            .unwrap_or(ErrorCode::Unknown(v))
    }

    /// Whether a request refused with this code was certainly not applied,
    /// so that retrying it is safe. A code this client does not know counts
    /// as "maybe applied".
    pub fn nothing_applied(self) -> bool {
        !matches!(
            self,
            ErrorCode::Timeout
                | ErrorCode::Storage
                | ErrorCode::Internal
                | ErrorCode::PeerLost
                | ErrorCode::Unknown(_)
        )
    }

    /// Whether the same request may succeed later (load, timing, failures).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
                | ErrorCode::ShuttingDown
                | ErrorCode::StaleRing
        )
    }
}

impl ClientError {
    /// Whether a node refused who the caller is or what it may do
    /// (`Unauthenticated`, `Forbidden`): trying again cannot help.
    pub fn is_access_refused(&self) -> bool {
        matches!(
            self,
            ClientError::Node {
                code: ErrorCode::Unauthenticated | ErrorCode::Forbidden,
                ..
            }
        )
    }
}

/// Errors of the client library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node answered with an error.
    #[error("node refused the request: {code:?}: {message}")]
    Node {
        /// The code.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// No node could be reached (connect failed or every breaker is open).
    #[error("no node reachable: {0}")]
    Unreachable(String),
    /// The request's deadline passed before an answer arrived.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The connection broke while the request was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The node's answer could not be decoded or did not fit the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request is invalid before it is sent (e.g. a key too long).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}
