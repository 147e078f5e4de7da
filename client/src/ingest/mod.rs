//! Getting events into tally exactly once: the aggregating [`Producer`]
//! for a program's own events, the [`Ingestor`] for a consumer of a log
//! with offsets (a file, a Kafka partition), and what they share: sums
//! with deterministic op ids ([`Sum`]), the outbox that
//! resends them until settled, the on-disk [`Spool`] and the
//! [`Checkpoint`].

mod checkpoint;
mod ingestor;
mod members;
mod outbox;
mod producer;
mod spool;
mod sums;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use ingestor::{
    Aggregate, IngestError, IngestReport, Ingestor, IngestorConfig, SpoolFullPolicy,
};
pub use members::MembersReport;
pub use outbox::Delivered;
pub use producer::{Producer, ProducerConfig, ProducerReport};
pub use spool::{Recovered, Spool, SpoolConfig, SpoolError};
pub use sums::{minute_of, source_op_id, OpIds, SourceRange, Sum, MINUTE_MS};

/// Locks `m`; a panic elsewhere while it was held leaves data that is
/// still whole (every update here is one assignment), so poisoning is
/// ignored.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
