//! The lock stripes of the lead algorithm and their own-shard cache:
//! trap (a) of DESIGN.md §3 (two concurrent increments both reading clock
//! `c` and both writing `c + 1`) is closed by locking a batch's cells, in
//! stripe order, from the read of this node's shard until the write is
//! acknowledged; the cache spares that read for recently raised cells.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;
use tally_storage::{mix64, InlineKey};

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
    pub(crate) own_shards: HashMap<CachedKey, Shard, BuildHasherDefault<CellHasher>>,
}

/// Cell key bytes up to this length sit in the cache's table itself.
const INLINE_KEY_BYTES: usize = 46;

/// A cell key in the own-shard cache: inline when short (counter cells
/// of keys up to about 20 bytes), so that a lookup compares bytes in the
/// slot it probed instead of following a pointer to another cache line,
/// and an insertion allocates nothing.
pub(crate) type CachedKey = InlineKey<INLINE_KEY_BYTES>;

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
        mix64(self.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_keys_are_found_by_their_bytes_inline_or_not() {
        let mut stripe = Stripe::default();
        let short = vec![7u8; INLINE_KEY_BYTES];
        let long = vec![7u8; INLINE_KEY_BYTES + 1];
        let shard = |clock| Shard {
            id: 1,
            clock,
            sum: 0,
            count: 0,
        };
        stripe.own_shards.insert(CachedKey::new(&short), shard(1));
        stripe.own_shards.insert(CachedKey::new(&long), shard(2));
        assert!(matches!(CachedKey::new(&short), CachedKey::Inline(..)));
        assert!(matches!(CachedKey::new(&long), CachedKey::Heap(_)));
        assert_eq!(stripe.own_shards[short.as_slice()].clock, 1);
        assert_eq!(stripe.own_shards[long.as_slice()].clock, 2);
        assert!(!stripe.own_shards.contains_key(&short[1..]));
        assert!(stripe.own_shards.remove(long.as_slice()).is_some());
        assert_eq!(stripe.own_shards.len(), 1);
    }
}
