//! [`Sum`]: what an aggregating producer sends, one increment standing
//! for the events of one cell (namespace, key, minute), with the op id
//! that makes its resends count once; and the two ways such ids are made.
//!
//! An op id's top 48 bits say when it was made (nodes count its retries
//! once only while it is live, 10 minutes by default; see
//! [`new_op_id`](crate::new_op_id)). The low 80 bits name the sum:
//!
//! - [`OpIds`], for a producer fed by `add`: a producer id and a sequence
//!   number, so a sum found in a spool says which producer made it and in
//!   which order;
//! - [`source_op_id`], for a consumer of a log: a hash of the source, the
//!   offset range the sum's events came from, and the cell, so that the
//!   same range of the same log always names its sums the same way.
//!
//! Either way the id is written to the spool before the sum is sent, so a
//! producer restarted after a crash resends the very ids its previous run
//! may have sent.

use crate::error::ClientError;
use crate::message::Increment;
use crate::token::Xxh64;

/// The finest bucket any namespace keeps: sums are per minute.
pub const MINUTE_MS: i64 = 60_000;

/// The events of one cell summed, as sent and as spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sum {
    /// The namespace.
    pub namespace: String,
    /// The counter's key.
    pub key: Vec<u8>,
    /// The start of the minute the events fall in (ms since the epoch).
    pub minute_ms: i64,
    /// The deltas summed.
    pub delta: i64,
    /// How many events the sum stands for.
    pub events: u32,
    /// Counted once however often it is sent, while live.
    pub op_id: u128,
}

impl Sum {
    /// The increment that sends it.
    pub fn to_increment(&self) -> Increment {
        Increment {
            namespace: self.namespace.clone(),
            key: self.key.clone(),
            timestamp_ms: self.minute_ms,
            delta: self.delta,
            events: self.events,
            op_id: Some(self.op_id),
        }
    }
}

/// The minute bucket `timestamp_ms` falls in.
pub fn minute_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Refuses a key no request could carry. The nodes enforce their own
/// key limit (a setting); this is only what could never be sent.
pub(crate) fn sendable_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() || key.len() > usize::from(u16::MAX) {
        return Err(ClientError::InvalidRequest(format!(
            "key of {} bytes cannot be sent",
            key.len()
        )));
    }
    Ok(())
}

const LOW_BITS: u32 = 80;
const LOW_MASK: u128 = (1 << LOW_BITS) - 1;

fn with_time(made_ms: i64, low: u128) -> u128 {
    let made = (made_ms.max(0) as u128) & ((1 << 48) - 1);
    (made << LOW_BITS) | (low & LOW_MASK)
}

/// Op ids for a producer: `made_ms`, then 32 bits of the producer's id,
/// then a 48-bit sequence number that never repeats within one id.
#[derive(Debug, Clone)]
pub struct OpIds {
    producer: u32,
    next: u64,
}

impl OpIds {
    /// Ids for producer `producer`, starting at sequence `next`.
    pub fn new(producer: u32, next: u64) -> OpIds {
        OpIds { producer, next }
    }

    /// The next id, made at `made_ms`.
    pub fn next(&mut self, made_ms: i64) -> u128 {
        let seq = u128::from(self.next & ((1 << 48) - 1));
        self.next = self.next.wrapping_add(1);
        with_time(made_ms, (u128::from(self.producer) << 48) | seq)
    }
}

/// Where a sum's events came from: a log (file, stream, partition) and
/// the offsets `[start, end)` in it that a batch of sums covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRange {
    /// The log's name (a path, `topic/partition`, ...).
    pub source: String,
    /// The first offset the batch covers.
    pub start: u64,
    /// The offset after the last one it covers.
    pub end: u64,
}

/// The op id of the sum for cell (`namespace`, `key`, `minute_ms`) over
/// `range`, made at `made_ms`: the same arguments give the same id.
pub fn source_op_id(
    range: &SourceRange,
    namespace: &str,
    key: &[u8],
    minute_ms: i64,
    made_ms: i64,
) -> u128 {
    let hash = |seed: u64| {
        let mut h = Xxh64::new(seed);
        h.update(&(range.source.len() as u64).to_le_bytes());
        h.update(range.source.as_bytes());
        h.update(&range.start.to_le_bytes());
        h.update(&range.end.to_le_bytes());
        h.update(&(namespace.len() as u64).to_le_bytes());
        h.update(namespace.as_bytes());
        h.update(&minute_ms.to_le_bytes());
        h.update(key);
        h.finish()
    };
    with_time(made_ms, (u128::from(hash(1)) << 64) | u128::from(hash(2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op_id_made_ms;

    #[test]
    fn a_sum_never_straddles_two_minutes() {
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(120_000), 120_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn producer_ids_carry_time_producer_and_sequence() {
        let mut ids = OpIds::new(7, 41);
        let a = ids.next(1_764_000_000_000);
        let b = ids.next(1_764_000_000_000);
        assert_eq!(op_id_made_ms(a), 1_764_000_000_000);
        assert_eq!(a & ((1 << 48) - 1), 41);
        assert_eq!(b & ((1 << 48) - 1), 42);
        assert_eq!((a >> 48) & 0xffff_ffff, 7);
        assert_ne!(OpIds::new(8, 41).next(1_764_000_000_000), a);
    }

    #[test]
    fn source_ids_are_a_function_of_range_and_cell() {
        let range = SourceRange {
            source: "views.jsonl".into(),
            start: 0,
            end: 100,
        };
        let id = |r: &SourceRange, key: &[u8]| source_op_id(r, "views", key, 60_000, 5_000);
        assert_eq!(id(&range, b"a"), id(&range, b"a"));
        assert_eq!(op_id_made_ms(id(&range, b"a")), 5_000);
        assert_ne!(id(&range, b"a"), id(&range, b"b"));
        let later = SourceRange {
            start: 100,
            end: 200,
            ..range.clone()
        };
        assert_ne!(id(&range, b"a"), id(&later, b"a"));
        assert_ne!(
            source_op_id(&range, "views", b"a", 60_000, 5_000),
            source_op_id(&range, "views", b"a", 120_000, 5_000)
        );
    }
}
