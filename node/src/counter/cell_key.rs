//! [`CellKey`]: how a counter cell is named in the storage engine.
//!
//! `token: u64 BE | ns_len: u8 | namespace | key_len: u16 BE | key |
//! kind_and_resolution: u8 | bucket_start: u64 BE (sign bit flipped)`.
//!
//! The top bit of the resolution byte marks a distinct cell (a
//! HyperLogLog sketch, see `hll`) rather than a counter cell (a shard
//! set): the storage engine's merge operator sees only keys and values,
//! and the key tells it which rule merges the value, with no namespace
//! lookup and no guessing from the value's bytes.
//!
//! The token comes first so that the cells of a token range are one
//! contiguous key range (streaming and anti-entropy per range become
//! scans); all cells of one key at one resolution are contiguous and in
//! time order, so a range read is one scan. Flipping the sign bit makes
//! signed bucket starts sort numerically.
//!
//! Keys with [`SYSTEM_MARK`] where a cell has its namespace length are
//! the node's own records (applied op ids), never cells: no token range,
//! no scan of cells and no replica message includes them.

use tally_client::{token, Resolution};

/// What a cell holds, and so how its values merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// A counter's shard set.
    Counter,
    /// A distinct-count sketch.
    Distinct,
}

impl CellKind {
    /// The kind of the cells of namespaces of `kind`.
    pub fn of(kind: tally_client::NamespaceKind) -> CellKind {
        match kind {
            tally_client::NamespaceKind::Counter => CellKind::Counter,
            tally_client::NamespaceKind::Distinct { .. } => CellKind::Distinct,
        }
    }
}

/// The bit of the resolution byte that marks a distinct cell.
const DISTINCT_MARK: u8 = 0x80;

/// A decoded cell key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellKey {
    /// What the cell holds.
    pub kind: CellKind,
    /// Namespace.
    pub namespace: String,
    /// Partition key.
    pub key: Vec<u8>,
    /// Bucket width.
    pub resolution: Resolution,
    /// Bucket start in ms (0 for `Total`).
    pub bucket_start_ms: i64,
}

fn prefix(kind: CellKind, namespace: &str, key: &[u8], resolution: Resolution) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + 1 + namespace.len() + 2 + key.len() + 1 + 8);
    buf.extend_from_slice(&token(namespace, key).0.to_be_bytes());
    buf.push(namespace.len() as u8);
    buf.extend_from_slice(namespace.as_bytes());
    buf.extend_from_slice(&(key.len() as u16).to_be_bytes());
    buf.extend_from_slice(key);
    buf.push(match kind {
        CellKind::Counter => resolution.code(),
        CellKind::Distinct => resolution.code() | DISTINCT_MARK,
    });
    buf
}

/// The kind and resolution of a resolution byte.
fn kind_and_resolution(byte: u8) -> Option<(CellKind, Resolution)> {
    let kind = if byte & DISTINCT_MARK != 0 {
        CellKind::Distinct
    } else {
        CellKind::Counter
    };
    Some((kind, Resolution::from_code(byte & !DISTINCT_MARK)?))
}

fn sortable(bucket_start_ms: i64) -> [u8; 8] {
    ((bucket_start_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The storage key of one cell. Callers validate lengths first
/// (namespace <= 64 bytes, key <= 1,024 bytes).
pub fn encode(
    kind: CellKind,
    namespace: &str,
    key: &[u8],
    resolution: Resolution,
    bucket_start_ms: i64,
) -> Vec<u8> {
    let mut buf = prefix(kind, namespace, key, resolution);
    buf.extend_from_slice(&sortable(bucket_start_ms));
    buf
}

/// The storage key range `[start, end)` of a key's buckets starting in
/// `[from_ms, to_ms)` at one resolution.
pub fn bucket_range(
    kind: CellKind,
    namespace: &str,
    key: &[u8],
    resolution: Resolution,
    from_ms: i64,
    to_ms: i64,
) -> (Vec<u8>, Vec<u8>) {
    let p = prefix(kind, namespace, key, resolution);
    let mut start = p.clone();
    start.extend_from_slice(&sortable(from_ms));
    let mut end = p;
    end.extend_from_slice(&sortable(to_ms));
    (start, end)
}

/// Whether `bytes` is a well-formed cell key (what [`decode`] accepts),
/// without allocating: replicas check every cell they are sent.
pub fn is_valid(bytes: &[u8]) -> bool {
    parts(bytes).is_some()
}

/// A cell key's parts, borrowed from its bytes (the leader's write path
/// reads every cell it raised, and allocates nothing for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellParts<'a> {
    /// What the cell holds.
    pub kind: CellKind,
    /// Namespace.
    pub namespace: &'a str,
    /// Partition key.
    pub key: &'a [u8],
    /// Bucket width.
    pub resolution: Resolution,
    /// Bucket start in ms (0 for `Total`).
    pub bucket_start_ms: i64,
}

/// The parts of a storage key; `None` if it is not a well-formed cell key.
pub fn parts(bytes: &[u8]) -> Option<CellParts<'_>> {
    let rest = bytes.get(8..)?;
    let (&ns_len, rest) = rest.split_first()?;
    let namespace = std::str::from_utf8(rest.get(..ns_len as usize)?).ok()?;
    let rest = &rest[ns_len as usize..];
    let key_len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let key = rest.get(2..2 + key_len)?;
    let rest = &rest[2 + key_len..];
    let (&res, rest) = rest.split_first()?;
    let (kind, resolution) = kind_and_resolution(res)?;
    let bucket: [u8; 8] = rest.try_into().ok()?;
    let bucket_start_ms = (u64::from_be_bytes(bucket) ^ (1 << 63)) as i64;
    Some(CellParts {
        kind,
        namespace,
        key,
        resolution,
        bucket_start_ms,
    })
}

/// Decodes a storage key; `None` if it is not a well-formed cell key.
pub fn decode(bytes: &[u8]) -> Option<CellKey> {
    let p = parts(bytes)?;
    Some(CellKey {
        kind: p.kind,
        namespace: p.namespace.to_owned(),
        key: p.key.to_vec(),
        resolution: p.resolution,
        bucket_start_ms: p.bucket_start_ms,
    })
}

/// The kind of a cell key, reading only its lengths and resolution byte
/// (the merge operator asks it of every merge); `None` if malformed.
pub fn kind_of(bytes: &[u8]) -> Option<CellKind> {
    let ns_len = *bytes.get(8)? as usize;
    let at = 9 + ns_len;
    let key_len = u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
    let byte = *bytes.get(at + 2 + key_len)?;
    Some(kind_and_resolution(byte)?.0)
}

/// Byte 8 of a system key (one that is not a cell: an op id's record,
/// see `op_window`). A cell has its namespace length there, 1..=64.
pub const SYSTEM_MARK: u8 = 0xFF;

/// Whether `bytes` is a system key, not a cell: scans of cells skip it.
pub fn is_system(bytes: &[u8]) -> bool {
    bytes.get(8) == Some(&SYSTEM_MARK)
}

/// The token a cell key starts with (its partition key's ring position);
/// `None` for a system key, which belongs to no token range.
pub fn token_of(bytes: &[u8]) -> Option<u64> {
    if is_system(bytes) {
        return None;
    }
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The bucket start of a cell key's value bytes, read from the end of the
/// key (for range scans, which know the rest).
pub fn bucket_of(bytes: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?;
    Some((u64::from_be_bytes(tail) ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_sorts_by_time(
            key in proptest::collection::vec(any::<u8>(), 1..40),
            a in any::<i64>(), b in any::<i64>(),
        ) {
            let ka = encode(CellKind::Counter, "events", &key, Resolution::Minute, a);
            let kb = encode(CellKind::Counter, "events", &key, Resolution::Minute, b);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            let d = decode(&ka).unwrap();
            prop_assert_eq!(d, CellKey { kind: CellKind::Counter, namespace: "events".into(), key: key.clone(), resolution: Resolution::Minute, bucket_start_ms: a });
            prop_assert_eq!(kind_of(&ka), Some(CellKind::Counter));
            let kd = encode(CellKind::Distinct, "viewers", &key, Resolution::Day, a);
            let d = decode(&kd).unwrap();
            prop_assert_eq!((d.kind, d.resolution, d.bucket_start_ms), (CellKind::Distinct, Resolution::Day, a));
            prop_assert_eq!(kind_of(&kd), Some(CellKind::Distinct));
            prop_assert_eq!(bucket_of(&ka), Some(a));
            prop_assert_eq!(token_of(&ka), Some(token("events", &key).0));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(is_valid(&bytes), decode(&bytes).is_some());
            if is_valid(&bytes) {
                prop_assert_eq!(kind_of(&bytes), decode(&bytes).map(|c| c.kind));
            }
        }

        #[test]
        fn a_damaged_key_is_never_valid_unless_it_decodes(
            key in proptest::collection::vec(any::<u8>(), 1..20),
            cut in 0usize..40,
            flip in any::<prop::sample::Index>(),
        ) {
            let mut k = encode(CellKind::Counter, "events", &key, Resolution::Hour, 3_600_000);
            prop_assert!(is_valid(&k));
            let i = flip.index(k.len());
            k[i] ^= 0x80;
            prop_assert_eq!(is_valid(&k), decode(&k).is_some());
            k.truncate(cut.min(k.len()));
            prop_assert_eq!(is_valid(&k), decode(&k).is_some());
        }
    }
}
