//! [`Error`]: what can go wrong in the gossip crate (only decoding: the
//! state machine itself cannot fail).

/// Gossip errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message's bytes do not decode. The message is ignored; the
    /// gossiper's state is unchanged.
    #[error("malformed gossip message: {0}")]
    Malformed(String),
}
