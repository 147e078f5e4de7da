//! [`CellMerge`]: the storage engine's merge operator, one rule per cell
//! kind, and [`CellValue`], a decoded value that reads merge across
//! replicas by the same rules. The key says the kind (`cell_key`): a counter cell's values are
//! shard sets merged shard by shard (`shard_set`), a distinct cell's are
//! HyperLogLog sketches merged register by register (`hll`). Both rules
//! are commutative, associative and idempotent, so replication, hints,
//! read repair, anti-entropy and streaming need not know which they carry.
//!
//! The operator keeps the name counter-only nodes recorded in their
//! manifests (`tally.counter_shards.v1`): it merges every counter cell as
//! before, so their data directories open unchanged. A node of an older
//! version cannot read distinct cells, so a cluster that has distinct
//! namespaces is not downgraded.

use tally_storage::MergeOperator;

use crate::counter::cell_key::{self, CellKind};
use crate::counter::hll;
use crate::counter::shard_set::ShardSet;

/// The merge operator of the node's cells.
#[derive(Debug, Default, Clone, Copy)]
pub struct CellMerge;

/// Whether `value` is a well-formed value of a cell of `kind`.
pub fn valid_value(kind: CellKind, value: &[u8]) -> bool {
    match kind {
        CellKind::Counter => ShardSet::is_valid(value),
        CellKind::Distinct => hll::is_valid(value),
    }
}

/// Whether `value` is a well-formed value for the cell `key` (of the kind
/// the key names).
pub fn valid_for_key(key: &[u8], value: &[u8]) -> bool {
    cell_key::kind_of(key).is_some_and(|kind| valid_value(kind, value))
}

impl MergeOperator for CellMerge {
    fn name(&self) -> &str {
        "tally.counter_shards.v1"
    }

    fn check(&self, operand: &[u8]) -> Result<(), String> {
        // The engine checks operands without their keys: a value is one
        // of the two forms (their lengths differ in parity, so none is
        // both); `valid_cell` checks the pair before a write.
        if ShardSet::is_valid(operand) || hll::is_valid(operand) {
            Ok(())
        } else {
            Err("malformed cell value (neither a shard set nor a sketch)".to_owned())
        }
    }

    fn merge(&self, key: &[u8], older: &[u8], newer: &[u8]) -> Vec<u8> {
        let mut merged = older.to_vec();
        self.merge_into(key, &mut merged, newer);
        merged
    }

    fn merge_into(&self, key: &[u8], older: &mut Vec<u8>, newer: &[u8]) {
        // Both passed `check` on the way in (disk bytes are checksummed);
        // should either still be malformed, the valid one is kept.
        let kind = cell_key::kind_of(key).unwrap_or(CellKind::Counter);
        let merged = match kind {
            CellKind::Counter => {
                ShardSet::merge_in_place(older, newer) || {
                    match ShardSet::merge_encoded(older, newer) {
                        Some(m) => {
                            *older = m;
                            true
                        }
                        None => false,
                    }
                }
            }
            CellKind::Distinct => hll::merge_encoded_into(older, newer),
        };
        if !merged && !valid_value(kind, older) && valid_value(kind, newer) {
            *older = newer.to_vec();
        }
    }
}

/// A cell's value, decoded: what reads merge across replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum CellValue {
    /// A counter's shards.
    Counter(ShardSet),
    /// A distinct count's sketch.
    Distinct(hll::Sketch),
}

impl CellValue {
    /// The value of a cell of `kind`; `None` if malformed.
    pub fn decode(kind: CellKind, bytes: &[u8]) -> Option<CellValue> {
        match kind {
            CellKind::Counter => ShardSet::decode(bytes).map(CellValue::Counter),
            CellKind::Distinct => hll::Sketch::decode(bytes).ok().map(CellValue::Distinct),
        }
    }

    /// Merges `other` in by its kind's rule (values of two kinds never
    /// meet: the key names the kind).
    pub fn merge(&mut self, other: &CellValue) {
        match (self, other) {
            (CellValue::Counter(a), CellValue::Counter(b)) => a.merge(b),
            (CellValue::Distinct(a), CellValue::Distinct(b)) => a.merge(b),
            _ => {}
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            CellValue::Counter(s) => s.encode(),
            CellValue::Distinct(s) => s.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::hll::Sketch;
    use crate::counter::shard_set::Shard;
    use tally_client::Resolution;

    #[test]
    fn the_key_picks_the_rule() {
        let counter = cell_key::encode(CellKind::Counter, "events", b"v", Resolution::Total, 0);
        let distinct = cell_key::encode(CellKind::Distinct, "viewers", b"v", Resolution::Total, 0);
        let shard = |id, clock, sum| Shard {
            id,
            clock,
            sum,
            count: 1,
        };
        let a = ShardSet::encode_single(&shard(1, 1, 5));
        let b = ShardSet::encode_single(&shard(2, 1, 7));
        let merged = ShardSet::decode(&CellMerge.merge(&counter, &a, &b)).unwrap();
        assert_eq!(merged.sum(), 12);

        let sketch = |members: &[&str]| {
            let mut s = Sketch::new(14);
            for m in members {
                s.add(m.as_bytes());
            }
            s.encode()
        };
        let merged = CellMerge.merge(&distinct, &sketch(&["ann", "bob"]), &sketch(&["bob", "cy"]));
        assert_eq!(Sketch::decode(&merged).unwrap().estimate().round(), 3.0);
        assert!(CellMerge.check(&merged).is_ok());
        assert!(CellMerge.check(&a).is_ok());
        assert!(CellMerge.check(b"junk").is_err());
        // A sketch's length is odd, a shard set's even: no value is both.
        assert!(!ShardSet::is_valid(&merged) && !hll::is_valid(&a));
    }

    #[test]
    fn a_malformed_value_never_replaces_a_good_one() {
        let distinct = cell_key::encode(CellKind::Distinct, "viewers", b"v", Resolution::Total, 0);
        let mut good = Sketch::new(14);
        good.add(b"ann");
        let mut older = good.encode();
        CellMerge.merge_into(&distinct, &mut older, b"H\x0e\x00junk");
        assert_eq!(older, good.encode());
        let mut broken = b"junk".to_vec();
        CellMerge.merge_into(&distinct, &mut broken, &good.encode());
        assert_eq!(broken, good.encode());
    }
}
