//! [`Entry`]: what the engine stores under a key in a memtable or SSTable,
//! and how a newer entry combines with an older one.
//!
//! There is one entry per key per memtable and per SSTable; which source is
//! newer is known from where it sits (active memtable, immutables newest
//! first, L0 newest first, then L1, L2, ...), so entries carry no sequence
//! numbers.

use crate::merge::MergeOperator;

/// The kind byte stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Put = 1,
    Merge = 2,
    Delete = 3,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Merge),
            3 => Some(Kind::Delete),
            _ => None,
        }
    }
}

/// A stored entry: a full value, a merge operand (older entries may still
/// lie below it), or a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) value: Vec<u8>,
}

impl Entry {
    pub(crate) fn put(value: Vec<u8>) -> Entry {
        Entry {
            kind: Kind::Put,
            value,
        }
    }

    #[cfg(test)]
    pub(crate) fn merge(value: Vec<u8>) -> Entry {
        Entry {
            kind: Kind::Merge,
            value,
        }
    }

    pub(crate) fn delete() -> Entry {
        Entry {
            kind: Kind::Delete,
            value: Vec::new(),
        }
    }

    /// Combines `self` (older) with `newer` in place.
    pub(crate) fn absorb(&mut self, key: &[u8], newer: Entry, op: &dyn MergeOperator) {
        match newer.kind {
            Kind::Put | Kind::Delete => *self = newer,
            Kind::Merge => match self.kind {
                Kind::Put | Kind::Merge => op.merge_into(key, &mut self.value, &newer.value),
                Kind::Delete => *self = Entry::put(newer.value),
            },
        }
    }

    /// [`Entry::absorb`] of an op borrowed from a write batch: a merge
    /// folds into this entry's value in place, allocating nothing.
    pub(crate) fn absorb_op(
        &mut self,
        key: &[u8],
        kind: Kind,
        value: &[u8],
        op: &dyn MergeOperator,
    ) {
        match (kind, self.kind) {
            (Kind::Delete, _) => *self = Entry::delete(),
            (Kind::Merge, Kind::Put | Kind::Merge) => op.merge_into(key, &mut self.value, value),
            (Kind::Put, _) | (Kind::Merge, Kind::Delete) => {
                self.kind = Kind::Put;
                self.value.clear();
                self.value.extend_from_slice(value);
            }
        }
    }

    /// Whether older entries below this one can still matter.
    pub(crate) fn is_complete(&self) -> bool {
        self.kind != Kind::Merge
    }

    /// The user-visible value, once nothing older remains to merge.
    pub(crate) fn into_value(self) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Put | Kind::Merge => Some(self.value),
            Kind::Delete => None,
        }
    }

    /// Bytes this entry adds to a memtable (key, value, bookkeeping).
    pub(crate) fn charge(key_len: usize, value_len: usize) -> usize {
        key_len + value_len + 48
    }
}

/// Resolves a key's entries given newest first: stops at the first complete
/// entry, merges the operands above it.
pub(crate) fn resolve_newest_first(
    key: &[u8],
    entries: Vec<Entry>,
    op: &dyn MergeOperator,
) -> Option<Vec<u8>> {
    let mut iter = entries.into_iter().rev();
    let mut acc = iter.next()?;
    for newer in iter {
        acc.absorb(key, newer, op);
    }
    acc.into_value()
}
