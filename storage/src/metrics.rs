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

/// Upper bounds of the WAL fsync latency buckets, in microseconds: 50 us
/// doubling to about 1.6 s. A quiet SSD syncs in 0.1 ms, a busy one in
/// milliseconds; a stall of seconds is what an operator must see.
pub const SYNC_LATENCY_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    819_200, 1_638_400,
];

/// How long WAL fsyncs took: counts per bucket of
/// [`SYNC_LATENCY_BOUNDS_MICROS`] (and one past the last), and their sum.
#[derive(Debug, Default)]
pub(crate) struct SyncLatency {
    buckets: [AtomicU64; SYNC_LATENCY_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl SyncLatency {
    /// Records one fsync that took `took`.
    pub(crate) fn record(&self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(SYNC_LATENCY_BOUNDS_MICROS.len());
        add(&self.buckets[bucket], 1);
        add(&self.sum_micros, micros);
    }

    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Counts per bucket (not cumulative): bucket `i < 16` holds durations
    /// up to `SYNC_LATENCY_BOUNDS_MICROS[i]`, the last one those above.
    pub buckets: [u64; SYNC_LATENCY_BOUNDS_MICROS.len() + 1],
    /// The sum of all recorded durations, in microseconds.
    pub sum_micros: u64,
}

impl LatencySnapshot {
    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sync_latencies_land_in_their_buckets_and_add_up() {
        let h = SyncLatency::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(51));
        h.record(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[16], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_micros, 10 + 50 + 51 + 5_000_000);
    }
}
