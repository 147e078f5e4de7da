//! A key's first eight bytes as a big-endian integer: the memtable's outer
//! key and the table index's first search, since comparing one packed
//! integer is cheaper than comparing bytes behind a pointer (and tally's
//! keys start with an 8-byte token, so the prefix nearly always decides).
//!
//! A shorter key pads its prefix with zeros, the smallest byte, so the
//! prefix never orders two keys against their bytes: `prefix_of(a) <
//! prefix_of(b)` implies `a < b`, and equal prefixes leave the order to the
//! whole keys.

/// A key's first eight bytes (zero-padded) as a big-endian integer.
pub(crate) fn prefix_of(key: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = key.len().min(8);
    word[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prefix_order_never_contradicts_byte_order(
            a in proptest::collection::vec(0u8..3, 0..12),
            b in proptest::collection::vec(0u8..3, 0..12),
        ) {
            if prefix_of(&a) < prefix_of(&b) {
                prop_assert!(a < b);
            }
        }
    }
}
