//! [`BlockCache`]: verified SSTable data blocks kept in memory, bounded by
//! bytes, so that a hot counter's reads stop paying a `pread` and a crc
//! check per block.
//!
//! Without it, a 30-day stats read (five bucket ranges, each a cursor per
//! table) spent a fifth of its CPU in `pread` copying the same blocks out
//! of the page cache again and checking their crc again.
//!
//! Blocks are keyed by `(table file number, block offset)`: a table's
//! blocks never change and its number is never reused, so an entry can
//! never be stale; a deleted table's blocks simply age out. Eviction is
//! CLOCK (second chance): a block read since the hand last passed it
//! survives one more pass. The cache is split into shards, each under its
//! own lock, so that readers on different blocks rarely meet.
//!
//! Compaction reads through the cache but does not fill it: a whole-table
//! scan would push out the blocks readers want.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::metrics::{add, Metrics};

const SHARDS: usize = 16;

/// `(table file number, block offset)`.
type BlockKey = (u64, u64);

/// Whether a read should leave the blocks it loads in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Reads by users: keep what they load.
    Yes,
    /// Compaction: use what is cached, keep nothing new.
    No,
}

/// A bounded, sharded cache of verified block bodies.
#[derive(Debug)]
pub(crate) struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    shard_bytes: usize,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Shard {
    blocks: HashMap<BlockKey, Cached>,
    /// The CLOCK: keys in insertion order, the hand at the front.
    clock: VecDeque<BlockKey>,
    bytes: usize,
}

#[derive(Debug)]
struct Cached {
    body: Arc<[u8]>,
    referenced: AtomicBool,
}

impl BlockCache {
    /// A cache of at most about `capacity_bytes` of block bodies; 0 keeps
    /// nothing.
    pub(crate) fn new(capacity_bytes: usize, metrics: Arc<Metrics>) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes: capacity_bytes / SHARDS,
            metrics,
        }
    }

    fn shard(&self, key: BlockKey) -> &Mutex<Shard> {
        // Offsets step by about a block; mix in the table so that one
        // table's blocks spread over every shard.
        let mixed = (key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (key.1 >> 12))
            .wrapping_mul(0xff51_afd7_ed55_8ccd);
        &self.shards[(mixed >> 60) as usize % SHARDS]
    }

    /// The cached body of a block, if any.
    pub(crate) fn get(&self, table: u64, offset: u64) -> Option<Arc<[u8]>> {
        let key = (table, offset);
        let found = self.shard(key).lock().blocks.get(&key).map(|cached| {
            cached.referenced.store(true, Ordering::Relaxed);
            cached.body.clone()
        });
        match found {
            Some(_) => add(&self.metrics.block_cache_hits, 1),
            None => add(&self.metrics.block_cache_misses, 1),
        }
        found
    }

    /// Keeps `body` as the block at `offset` of `table`, evicting blocks
    /// not read since the hand last passed them until it fits.
    pub(crate) fn insert(&self, table: u64, offset: u64, body: Arc<[u8]>) {
        if body.len() > self.shard_bytes {
            return;
        }
        let key = (table, offset);
        let mut shard = self.shard(key).lock();
        if shard.blocks.contains_key(&key) {
            return;
        }
        shard.bytes += body.len();
        shard.blocks.insert(
            key,
            Cached {
                body,
                referenced: AtomicBool::new(false),
            },
        );
        shard.clock.push_back(key);
        add(&self.metrics.block_cache_adds, 1);
        while shard.bytes > self.shard_bytes {
            let Some(oldest) = shard.clock.pop_front() else {
                break;
            };
            let keep = shard
                .blocks
                .get(&oldest)
                .is_some_and(|c| c.referenced.swap(false, Ordering::Relaxed));
            if keep {
                shard.clock.push_back(oldest);
            } else if let Some(gone) = shard.blocks.remove(&oldest) {
                shard.bytes -= gone.body.len();
            }
        }
    }

    /// Bytes of block bodies held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize, byte: u8) -> Arc<[u8]> {
        vec![byte; len].into()
    }

    #[test]
    fn a_cached_block_is_returned_and_counted() {
        let metrics = Arc::new(Metrics::default());
        let cache = BlockCache::new(1 << 20, metrics.clone());
        assert!(cache.get(7, 0).is_none());
        cache.insert(7, 0, body(100, 1));
        assert_eq!(cache.get(7, 0).as_deref(), Some(&[1u8; 100][..]));
        assert!(cache.get(7, 4096).is_none());
        assert!(cache.get(8, 0).is_none());
        let m = metrics.snapshot();
        assert_eq!((m.block_cache_hits, m.block_cache_misses), (1, 3));
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_keeps_what_is_read() {
        let cache = BlockCache::new(SHARDS * 4096 * 4, Arc::new(Metrics::default()));
        // One hot block, read between every insert of many cold ones.
        cache.insert(1, 0, body(4096, 9));
        for i in 1..2000u64 {
            assert!(
                cache.get(1, 0).is_some(),
                "hot block evicted after {i} inserts"
            );
            cache.insert(2, i * 4096, body(4096, 0));
            assert!(cache.bytes() <= SHARDS * 4096 * 4);
        }
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = BlockCache::new(0, Arc::new(Metrics::default()));
        cache.insert(1, 0, body(10, 1));
        assert!(cache.get(1, 0).is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
