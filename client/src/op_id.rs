//! [`new_op_id`]: operation ids that make an increment's retries safe.
//!
//! A node counts an increment carrying an op id at most once, and exactly
//! once if any attempt was acknowledged, for as long as the id is *live*:
//! from the moment it was made until the node's op-id window (10 minutes
//! by default) has passed. The id says when it was made (its top 48 bits
//! are milliseconds since the Unix epoch, as in a UUIDv7; the low 80 are
//! random), so that a node can refuse a retry older than its window with
//! `OpIdExpired` rather than count it again. An id that is not made this
//! way (a random or upstream id) is refused the same way.

use rand::Rng;

/// A fresh op id made at `now_ms` (milliseconds since the Unix epoch).
pub fn op_id_at(now_ms: i64) -> u128 {
    let made = (now_ms.max(0) as u128) & ((1 << 48) - 1);
    let random: u128 = rand::rng().random::<u128>() & ((1 << 80) - 1);
    (made << 80) | random
}

/// A fresh op id made now, by this machine's clock.
pub fn new_op_id() -> u128 {
    op_id_at(now_ms())
}

/// This machine's clock in ms since the Unix epoch: when an op id is
/// made.
#[allow(clippy::disallowed_methods)] // an op id records when it was made
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When op id `id` was made, in milliseconds since the Unix epoch.
pub fn op_id_made_ms(id: u128) -> i64 {
    (id >> 80) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_id_carries_its_making_time_and_random_bits() {
        let a = op_id_at(1_764_000_000_123);
        let b = op_id_at(1_764_000_000_123);
        assert_eq!(op_id_made_ms(a), 1_764_000_000_123);
        assert_eq!(op_id_made_ms(b), 1_764_000_000_123);
        assert_ne!(a, b, "80 random bits");
        assert!(op_id_made_ms(new_op_id()) > 1_764_000_000_000);
    }
}
