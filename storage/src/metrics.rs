//! [`Metrics`]: counters the engine keeps about itself, read as a
//! [`MetricsSnapshot`]. Lock-free; updated with relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub(crate) struct Metrics { $(pub(crate) $name: AtomicU64,)* }

        /// A point-in-time copy of the engine's counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct MetricsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl Metrics {
            pub(crate) fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

metrics! {
    /// Key and value bytes submitted by users.
    user_bytes,
    /// Write batches committed.
    batches,
    /// Commit groups (one WAL write each).
    commit_groups,
    /// Bytes appended to WAL files.
    wal_bytes,
    /// WAL fsyncs.
    wal_syncs,
    /// Memtables flushed to L0.
    flushes,
    /// Bytes written by flushes.
    flush_bytes,
    /// Compactions run (trivial moves included).
    compactions,
    /// Bytes read by compactions.
    compaction_read_bytes,
    /// Bytes written by compactions.
    compaction_write_bytes,
    /// Write groups delayed because L0 is at the slowdown trigger.
    write_slowdowns,
    /// Writes that had to wait for a flush or compaction.
    write_stalls,
    /// Total time writes spent stalled, in microseconds.
    write_stall_micros,
    /// Point reads answered.
    gets,
    /// SSTable lookups skipped thanks to bloom filters.
    bloom_skips,
    /// Data blocks found in the block cache.
    block_cache_hits,
    /// Data blocks read from their files.
    block_cache_misses,
    /// Data blocks put in the block cache (compaction's reads are not).
    block_cache_adds,
}

impl MetricsSnapshot {
    /// Bytes written to disk (WAL + flush + compaction) per user byte.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes == 0 {
            return 0.0;
        }
        (self.wal_bytes + self.flush_bytes + self.compaction_write_bytes) as f64
            / self.user_bytes as f64
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
