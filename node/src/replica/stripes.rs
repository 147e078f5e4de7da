//! The lock stripes of the lead algorithm and their own-shard cache:
//! trap (a) of DESIGN.md §3 (two concurrent increments both reading clock
//! `c` and both writing `c + 1`) is closed by locking a batch's cells, in
//! stripe order, from the read of this node's shard until the write is
//! acknowledged; the cache spares that read for recently raised cells.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;

use crate::counter::shard_set::Shard;

/// Lock stripes of a store.
pub(crate) const LOCK_STRIPES: usize = 4096;
/// Own shards remembered per stripe (about a million cells in all).
pub(crate) const CACHED_SHARDS_PER_STRIPE: usize = 256;

/// One lock stripe: it serializes updates of its cells, and remembers this
/// node's shard of recently updated cells so that an increment need not
/// read the cell back from storage. Only this node writes its own shard,
/// and only under this lock, so a remembered shard is always current.
#[derive(Debug, Default)]
pub(crate) struct Stripe {
    /// This node's shard of recently raised cells, by cell key.
    pub(crate) own_shards: HashMap<Vec<u8>, Shard, BuildHasherDefault<CellHasher>>,
}

/// FxHash-style hasher for cell keys in the own-shard cache: SipHash
/// showed up in the write path's profile. Cell keys start with the key's
/// XXH64 token, and a stripe's map is bounded, so hash flooding can at
/// worst slow one stripe's 256 entries.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CellHasher(u64);

impl Hasher for CellHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64: the table uses both the low bits (bucket) and
        // the top seven (tag), and the multiply alone mixes neither well.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A cell's lock stripe, from its counter's token (the key's first eight
/// bytes): the cells of one counter, which an increment updates together,
/// share one stripe and one lock.
pub(crate) fn stripe_of(cell: &[u8]) -> usize {
    (crc32fast::hash(&cell[..cell.len().min(8)]) as usize) % LOCK_STRIPES
}

/// A store's stripes, all unlocked and empty.
pub(crate) fn new_stripes() -> Vec<Mutex<Stripe>> {
    (0..LOCK_STRIPES)
        .map(|_| Mutex::new(Stripe::default()))
        .collect()
}
