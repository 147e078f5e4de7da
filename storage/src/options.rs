//! [`Options`]: the engine's configuration, plain data with defaults and a
//! `validate`.

use std::sync::Arc;
use std::time::Duration;

use crate::merge::CompactionFilter;

/// When a write is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the WAL record is fsynced. Concurrent writers share
    /// one write and one fsync (group commit). Survives power loss.
    Sync,
    /// Acknowledge after write(2) to the WAL; a background thread fsyncs
    /// every `interval`. Survives a process crash (kill -9); a power loss
    /// loses at most the last `interval` of acknowledged writes.
    Periodic {
        /// Time between background fsyncs.
        interval: Duration,
    },
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Periodic {
            interval: Duration::from_millis(10),
        }
    }
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// When writes are acknowledged.
    pub durability: Durability,
    /// A memtable is frozen and flushed once it holds this many bytes.
    pub memtable_bytes: usize,
    /// A memtable is also frozen once its WAL holds this many bytes, so
    /// that increments folded in place into a small memtable cannot grow
    /// the WAL (and recovery time) without bound.
    pub max_wal_bytes: u64,
    /// Frozen memtables allowed to wait for flush before writes stall.
    pub max_immutable_memtables: usize,
    /// Target size of a data block.
    pub block_bytes: usize,
    /// Bloom filter bits per key (~1% false positives at 10).
    pub bloom_bits_per_key: usize,
    /// Memory for verified data blocks read by users (0: no cache).
    pub block_cache_bytes: usize,
    /// SSTables written by compaction are cut at this size.
    pub target_file_bytes: u64,
    /// Target size of level 1; each deeper level is 10x larger.
    pub level1_bytes: u64,
    /// L0 table count that triggers an L0 -> L1 compaction.
    pub l0_compaction_trigger: usize,
    /// L0 table count from which each write group is delayed by 1 ms.
    pub l0_slowdown_trigger: usize,
    /// L0 table count at which writes wait for compaction.
    pub l0_stop_trigger: usize,
    /// How long a write may wait for room before failing with
    /// [`crate::Error::WriteStall`].
    pub write_stall_timeout: Duration,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value or operand accepted.
    pub max_value_bytes: usize,
    /// Drops entries during compaction (e.g. expired counter buckets).
    pub compaction_filter: Option<Arc<dyn CompactionFilter>>,
    /// Run flushes and compactions on background threads. Off, they run
    /// only through [`crate::Db::flush`] and [`crate::Db::compact`] (for
    /// deterministic tests).
    pub background_work: bool,
    /// Recovery keeps the records of the newest WAL before its first
    /// damaged one and drops the rest, instead of refusing to open. For an
    /// operator who accepts that loss (after a clean close, damage is
    /// otherwise corruption); every drop is logged with file and offset.
    pub salvage_wal_tail: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            memtable_bytes: 32 << 20,
            max_wal_bytes: 64 << 20,
            max_immutable_memtables: 2,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            target_file_bytes: 16 << 20,
            level1_bytes: 64 << 20,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 8,
            l0_stop_trigger: 12,
            write_stall_timeout: Duration::from_secs(10),
            max_key_bytes: 16 << 10,
            max_value_bytes: 1 << 20,
            compaction_filter: None,
            background_work: true,
            salvage_wal_tail: false,
        }
    }
}

impl Options {
    /// Checks that the options are consistent.
    pub fn validate(&self) -> Result<(), String> {
        if self.memtable_bytes < 4096 {
            return Err("memtable_bytes must be at least 4 KiB".into());
        }
        if self.max_immutable_memtables == 0 {
            return Err("max_immutable_memtables must be at least 1".into());
        }
        if !(256..=1 << 20).contains(&self.block_bytes) {
            return Err("block_bytes must be between 256 B and 1 MiB".into());
        }
        if !(1..=32).contains(&self.bloom_bits_per_key) {
            return Err("bloom_bits_per_key must be between 1 and 32".into());
        }
        if !(self.l0_compaction_trigger < self.l0_slowdown_trigger
            && self.l0_slowdown_trigger < self.l0_stop_trigger)
        {
            return Err(
                "need l0_compaction_trigger < l0_slowdown_trigger < l0_stop_trigger".into(),
            );
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 1 << 20 {
            return Err("max_key_bytes must be between 1 B and 1 MiB".into());
        }
        if self.max_value_bytes > 16 << 20 {
            return Err("max_value_bytes must be at most 16 MiB".into());
        }
        if let Durability::Periodic { interval } = self.durability {
            if interval.is_zero() {
                return Err("the periodic fsync interval must be positive".into());
            }
        }
        Ok(())
    }
}
