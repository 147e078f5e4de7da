//! The merge operator and the compaction filter: the two hooks through which
//! the node teaches the engine about counters.
//!
//! A merge writes an *operand* without reading the old value (a blind
//! increment). The engine combines operands with the operator as late as it
//! can: in place in the memtable, on read across memtables and SSTables, and
//! during compaction. For that to be correct the operator must be a
//! semigroup over one value type:
//!
//! - **associative**: `merge(merge(a, b), c) == merge(a, merge(b, c))`, so
//!   operands can be combined in any grouping (memtable, flush, compaction);
//! - **total** over the values it accepted through `check`: it never fails
//!   and never panics on them (bytes on disk are checksummed, so they are the
//!   bytes that passed `check`).
//!
//! A merge onto nothing is the operand itself; a merge onto a deletion is the
//! operand itself. Commutativity is not required: the engine always merges
//! an older value with a newer one, in that order.

use std::fmt::Debug;

/// Combines values; see the module docs for the laws.
pub trait MergeOperator: Send + Sync + Debug + 'static {
    /// A stable name, recorded in the manifest: a directory refuses to open
    /// with an operator of another name.
    fn name(&self) -> &str;

    /// Rejects operands the operator could not merge; called before an
    /// operand reaches the WAL. The default accepts everything.
    fn check(&self, operand: &[u8]) -> Result<(), String> {
        let _ = operand;
        Ok(())
    }

    /// Combines an older value with a newer operand.
    fn merge(&self, key: &[u8], older: &[u8], newer: &[u8]) -> Vec<u8>;

    /// Combines `newer` into `older` in place, with the same result as
    /// [`MergeOperator::merge`]. The memtable calls this for every operand
    /// folded into a value it holds; an operator whose result usually fits
    /// the older buffer can skip an allocation. The default calls `merge`.
    fn merge_into(&self, key: &[u8], older: &mut Vec<u8>, newer: &[u8]) {
        *older = self.merge(key, older, newer);
    }
}

/// What a [`CompactionFilter`] decides for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// Keep the entry.
    Keep,
    /// Remove the entry: dropped outright when the compaction writes the
    /// bottom of the tree for its key range, otherwise replaced by a
    /// deletion so older copies deeper in the tree stay hidden.
    Remove,
}

/// Decides during compaction which entries to drop (for example counter
/// buckets past their retention). It sees each live entry once per
/// compaction; for a merge operand the value is a partial value, so the
/// decision should depend on the key (or on parts of the value every
/// operand carries).
pub trait CompactionFilter: Send + Sync + Debug + 'static {
    /// Decides for one entry.
    fn decide(&self, key: &[u8], value: &[u8]) -> FilterDecision;
}

/// Adds little-endian `i64`s with wrapping: RocksDB's `uint64add`, for tests
/// and the engine benchmark. Operands must be exactly 8 bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct AddI64;

impl AddI64 {
    /// Encodes a value or operand.
    pub fn encode(v: i64) -> [u8; 8] {
        v.to_le_bytes()
    }

    /// Decodes a value; `None` unless exactly 8 bytes.
    pub fn decode(bytes: &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(bytes.try_into().ok()?))
    }
}

impl MergeOperator for AddI64 {
    fn name(&self) -> &str {
        "tally.add_i64"
    }

    fn check(&self, operand: &[u8]) -> Result<(), String> {
        if operand.len() == 8 {
            Ok(())
        } else {
            Err(format!(
                "add_i64 operand must be 8 bytes, got {}",
                operand.len()
            ))
        }
    }

    fn merge(&self, _key: &[u8], older: &[u8], newer: &[u8]) -> Vec<u8> {
        // Both were checked on the way in; treat anything else as 0 rather
        // than panic (the checksums make this unreachable for disk bytes).
        let a = AddI64::decode(older).unwrap_or(0);
        let b = AddI64::decode(newer).unwrap_or(0);
        AddI64::encode(a.wrapping_add(b)).to_vec()
    }
}
