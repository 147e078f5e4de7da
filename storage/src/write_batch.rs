//! [`WriteBatch`]: a group of puts, merges and deletes applied atomically:
//! one WAL record, so after a crash either all of it is there or none.
//!
//! A batch is kept in its WAL encoding from the start: adding an op copies
//! its bytes once into one buffer (no allocation per key or value), the
//! WAL record is that buffer behind a count, and the memtable reads the
//! ops in place, allocating only for keys it does not hold yet.

#[cfg(test)]
use crate::decoder::put_varint;
use crate::decoder::{put_bytes, varint_bytes, Decoder};
use crate::entry::Kind;
use crate::record_log::encode_record_parts;

/// An atomic group of writes, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Per op: `kind: u8 | key: varint len + bytes | value: varint len + bytes`.
    rep: Vec<u8>,
    count: usize,
    bytes: usize,
}

/// One op of a batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op<'a> {
    pub(crate) kind: Kind,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(Kind::Put, key.as_ref(), value.as_ref())
    }

    /// Merges `operand` into `key` with the engine's merge operator.
    pub fn merge(&mut self, key: impl AsRef<[u8]>, operand: impl AsRef<[u8]>) -> &mut Self {
        self.push(Kind::Merge, key.as_ref(), operand.as_ref())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(Kind::Delete, key.as_ref(), &[])
    }

    fn push(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> &mut Self {
        self.bytes += key.len() + value.len() + 12;
        self.count += 1;
        // One growth of the buffer per op at most (two varints of up to
        // five bytes for lengths below 4 GiB).
        self.rep.reserve(11 + key.len() + value.len());
        self.rep.push(kind as u8);
        put_bytes(&mut self.rep, key);
        put_bytes(&mut self.rep, value);
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Approximate encoded size in bytes.
    pub fn approximate_size(&self) -> usize {
        self.bytes
    }

    /// The ops, in order.
    pub(crate) fn ops(&self) -> impl Iterator<Item = Op<'_>> {
        // `rep` is only ever written by `push` (or by `decode`, which
        // checked every op), so it decodes to the end.
        let mut d = Decoder::new(&self.rep);
        std::iter::from_fn(move || {
            Some(Op {
                kind: Kind::from_u8(d.u8()?)?,
                key: d.length_prefixed()?,
                value: d.length_prefixed()?,
            })
        })
    }

    /// The WAL payload: `count: varint`, then the ops.
    #[cfg(test)]
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.count as u64);
        buf.extend_from_slice(&self.rep);
    }

    /// Appends the batch as one WAL record to `buf`.
    pub(crate) fn encode_record(&self, buf: &mut Vec<u8>) {
        let (count, len) = varint_bytes(self.count as u64);
        encode_record_parts(buf, &[&count[..len], &self.rep]);
    }

    /// Decodes a WAL payload; `None` if it is malformed.
    pub(crate) fn decode(payload: &[u8]) -> Option<WriteBatch> {
        let mut d = Decoder::new(payload);
        let count = d.varint()?;
        let mut batch = WriteBatch::new();
        for _ in 0..count {
            let kind = Kind::from_u8(d.u8()?)?;
            let key = d.length_prefixed()?;
            let value = d.length_prefixed()?;
            batch.push(kind, key, value);
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
            let mut want = Vec::new();
            for (kind, key, value) in &ops {
                match kind {
                    0 => batch.put(key, value),
                    1 => batch.merge(key, value),
                    _ => batch.delete(key),
                };
                let (kind, value) = match kind {
                    0 => (Kind::Put, &value[..]),
                    1 => (Kind::Merge, &value[..]),
                    _ => (Kind::Delete, &[][..]),
                };
                want.push(Op { kind, key, value });
            }
            prop_assert_eq!(batch.ops().collect::<Vec<_>>(), want);
            let mut buf = Vec::new();
            batch.encode(&mut buf);
            let decoded = WriteBatch::decode(&buf);
            prop_assert_eq!(decoded.as_ref(), Some(&batch));
            prop_assert_eq!(batch.len(), ops.len());
            if !ops.is_empty() {
                let (mut whole, mut parts) = (Vec::new(), Vec::new());
                crate::record_log::encode_record(&mut whole, &buf);
                batch.encode_record(&mut parts);
                prop_assert_eq!(parts, whole);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = WriteBatch::decode(&bytes);
        }
    }
}
