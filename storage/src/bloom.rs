//! [`Bloom`]: a per-SSTable bloom filter, so a point read skips the files
//! that cannot hold its key without reading a data block.
//!
//! ~10 bits per key and 7 probes give about 1% false positives. Probes use
//! double hashing (`h1 + i * h2`, Kirsch and Mitzenmacher) over one stable
//! 64-bit hash of the key; the hash is part of the file format.
//!
//! Encoded as the bit array followed by one byte with the probe count.

/// A bloom filter over keys, built once per SSTable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    probes: u8,
}

/// A stable 64-bit hash (multiply-xorshift over 8-byte words). Not
/// cryptographic; stable across platforms and releases.
pub(crate) fn hash64(key: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(M);
        h ^= h >> 29;
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(M);
    h ^= h >> 32;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 31)
}

/// The bit positions probed for a key hash.
fn probe_bits(h: u64, num_bits: usize, probes: u8) -> impl Iterator<Item = usize> {
    let num_bits = num_bits as u64;
    let h2 = h.rotate_left(17) | 1;
    (0..u64::from(probes)).map(move |i| (h.wrapping_add(i.wrapping_mul(h2)) % num_bits) as usize)
}

impl Bloom {
    /// Builds a filter over the given key hashes.
    pub(crate) fn build(hashes: &[u64], bits_per_key: usize) -> Bloom {
        let num_bits = (hashes.len() * bits_per_key).max(64);
        let bytes = num_bits.div_ceil(8);
        let probes = ((bits_per_key as f64) * std::f64::consts::LN_2)
            .round()
            .clamp(1.0, 30.0) as u8;
        let mut bloom = Bloom {
            bits: vec![0; bytes],
            probes,
        };
        for &h in hashes {
            for bit in probe_bits(h, bytes * 8, probes) {
                bloom.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        bloom
    }

    /// False means the key is certainly absent.
    pub(crate) fn may_contain(&self, h: u64) -> bool {
        probe_bits(h, self.bits.len() * 8, self.probes)
            .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.bits);
        buf.push(self.probes);
    }

    /// Decodes a filter; `None` if malformed.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Bloom> {
        let (&probes, bits) = bytes.split_last()?;
        if bits.is_empty() || probes == 0 || probes > 30 {
            return None;
        }
        Some(Bloom {
            bits: bits.to_vec(),
            probes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let keys: Vec<u64> = (0..10_000u32)
            .map(|i| hash64(format!("key{i}").as_bytes()))
            .collect();
        let bloom = Bloom::build(&keys, 10);
        assert!(keys.iter().all(|&h| bloom.may_contain(h)));
        let false_positives = (0..10_000u32)
            .filter(|i| bloom.may_contain(hash64(format!("other{i}").as_bytes())))
            .count();
        assert!(
            false_positives < 200,
            "{false_positives} false positives in 10,000"
        );
    }

    #[test]
    fn round_trips() {
        let bloom = Bloom::build(&[1, 2, 3], 10);
        let mut buf = Vec::new();
        bloom.encode(&mut buf);
        assert_eq!(Bloom::decode(&buf), Some(bloom));
        assert_eq!(Bloom::decode(&[]), None);
    }
}
