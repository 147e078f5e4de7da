//! tally's storage engine: a log-structured merge tree for counter cells.
//!
//! Each node keeps its data in one [`Db`]: writes go to a write-ahead log
//! ([`Durability`] says when they are acknowledged) and an in-memory
//! memtable; full memtables are flushed to immutable SSTables with bloom
//! filters; leveled compaction merges SSTables in the background. The
//! engine is generic over a [`MergeOperator`], so a counter increment is a
//! blind write that the engine folds into the stored value lazily, and over
//! a [`CompactionFilter`], through which the node drops expired buckets.
//!
//! The engine never returns a wrong value: every byte read from disk is
//! checksummed, damage is reported as [`Error::Corruption`] with the file and
//! offset, and a failed WAL fsync poisons the engine instead of being
//! retried. The file system is injected ([`Fs`]): [`RealFs`] in production,
//! [`SimFs`] to simulate power loss, a full disk and failing fsyncs, and
//! [`LossyFs`] (real files, unsynced bytes kept in memory) so that a
//! kill -9 of a real process loses what a power loss would.
//!
//! Not here (non-goals for now): snapshots and transactions, column
//! families, prefix compression in blocks, and subcompactions.
//!
//! The byte layouts of the WAL, SSTables and manifest are in
//! `docs/format.md`.
//!
//! ```
//! use std::sync::Arc;
//! use tally_storage::{AddI64, Db, Durability, Options};
//!
//! # fn main() -> tally_storage::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let opts = Options { durability: Durability::Sync, ..Options::default() };
//! let db = Db::open(dir.path(), opts, Arc::new(AddI64))?;
//! // Blind increments: no read before the write.
//! db.merge(b"video:42/views", &AddI64::encode(3))?;
//! db.merge(b"video:42/views", &AddI64::encode(4))?;
//! let total = db.get(b"video:42/views")?.and_then(|v| AddI64::decode(&v));
//! assert_eq!(total, Some(7));
//! db.close()?;
//! # Ok(())
//! # }
//! ```

mod block;
mod block_cache;
mod bloom;
mod compaction;
mod cursor;
mod db;
mod decoder;
mod entry;
mod error;
mod fs;
mod inline_key;
mod key_prefix;
mod lossy_fs;
mod manifest;
mod memtable;
mod merge;
mod merger;
mod metrics;
mod options;
mod real_fs;
mod record_log;
mod sim_fs;
mod table;
mod table_builder;
mod version;
mod wal;
mod write_batch;

pub use db::{Db, Health, SyncPoint};
pub use error::{Error, Result};
pub use fs::{Fs, FsFile};
pub use inline_key::{mix64, InlineKey};
pub use lossy_fs::LossyFs;
pub use merge::{AddI64, CompactionFilter, FilterDecision, MergeOperator};
pub use metrics::{LatencySnapshot, MetricsSnapshot, SYNC_LATENCY_BOUNDS_MICROS};
pub use options::{Durability, Options};
pub use real_fs::RealFs;
pub use sim_fs::SimFs;
pub use write_batch::WriteBatch;
