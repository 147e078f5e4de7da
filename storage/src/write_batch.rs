//! [`WriteBatch`]: a group of puts, merges and deletes applied atomically:
//! one WAL record, so after a crash either all of it is there or none.

use crate::decoder::{put_bytes, put_varint, Decoder};
use crate::entry::{Entry, Kind};

/// An atomic group of writes, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Entry)>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.push(key.into(), Entry::put(value.into()))
    }

    /// Merges `operand` into `key` with the engine's merge operator.
    pub fn merge(&mut self, key: impl Into<Vec<u8>>, operand: impl Into<Vec<u8>>) -> &mut Self {
        self.push(key.into(), Entry::merge(operand.into()))
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.push(key.into(), Entry::delete())
    }

    fn push(&mut self, key: Vec<u8>, entry: Entry) -> &mut Self {
        self.bytes += key.len() + entry.value.len() + 12;
        self.ops.push((key, entry));
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate encoded size in bytes.
    pub fn approximate_size(&self) -> usize {
        self.bytes
    }

    pub(crate) fn ops(&self) -> &[(Vec<u8>, Entry)] {
        &self.ops
    }

    pub(crate) fn into_ops(self) -> Vec<(Vec<u8>, Entry)> {
        self.ops
    }

    /// The WAL payload: `count: varint`, then per op
    /// `kind: u8 | key: varint len + bytes | value: varint len + bytes`.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.ops.len() as u64);
        for (key, entry) in &self.ops {
            buf.push(entry.kind as u8);
            put_bytes(buf, key);
            put_bytes(buf, &entry.value);
        }
    }

    /// Decodes a WAL payload; `None` if it is malformed.
    pub(crate) fn decode(payload: &[u8]) -> Option<WriteBatch> {
        let mut d = Decoder::new(payload);
        let count = d.varint()?;
        let mut batch = WriteBatch::new();
        for _ in 0..count {
            let kind = Kind::from_u8(d.u8()?)?;
            let key = d.length_prefixed()?.to_vec();
            let value = d.length_prefixed()?.to_vec();
            batch.push(key, Entry { kind, value });
        }
        d.is_empty().then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(ops in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 0..20)),
            0..20,
        )) {
            let mut batch = WriteBatch::new();
            for (kind, key, value) in ops {
                match kind {
                    0 => batch.put(key, value),
                    1 => batch.merge(key, value),
                    _ => batch.delete(key),
                };
            }
            let mut buf = Vec::new();
            batch.encode(&mut buf);
            prop_assert_eq!(WriteBatch::decode(&buf), Some(batch));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = WriteBatch::decode(&bytes);
        }
    }
}
