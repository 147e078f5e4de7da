//! [`HintStore`]: cell states kept on a coordinator for replicas that were
//! down or too slow, until they can be delivered (hinted handoff).
//!
//! Hints live in their own storage engine (`<data dir>/hints`) so that
//! they never mix with counter cells (token-range scans, retention), and
//! are written with the node's durability mode. A hint is keyed by
//! `target host id: u64 BE | cell key`, and its value is
//! `written_ms: i64 LE | epoch: u64 LE | shard set`. Because a hint holds a
//! cell *state*, hints for the same target and cell merge by the CRDT rule
//! ([`HintMerge`]): a replica that misses a million increments of a hot
//! counter costs one hint, not a million, and replaying the merged state
//! delivers all of them.
//!
//! Delivery is at least once and harmless to repeat. Removing a delivered
//! hint must not lose a newer hint for the same cell merged in meanwhile,
//! so writers and [`HintStore::delivered`] share one lock, and a hint is
//! deleted only if its stored bytes are still exactly the bytes delivered.
//!
//! A hint older than the hint window (default 3 h, like Cassandra's
//! `max_hint_window`) is dropped, counted and logged, and no hint is
//! written for a replica that has been down longer than the window: past
//! it, anti-entropy repair is the way back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tally_client::CellState;
use tally_consensus::HostId;
use tally_storage::{CompactionFilter, Db, FilterDecision, MergeOperator, WriteBatch};

use crate::clock::Clock;
use crate::counter::cell_merge::CellMerge;

const HEADER_BYTES: usize = 16;

fn written_ms(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

fn epoch_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(8..16)?.try_into().ok()?))
}

fn hint_value(written_ms: i64, epoch: u64, shards: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_BYTES + shards.len());
    v.extend_from_slice(&written_ms.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(shards);
    v
}

fn hint_key(target: HostId, cell: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + cell.len());
    k.extend_from_slice(&target.0.to_be_bytes());
    k.extend_from_slice(cell);
    k
}

/// The hint engine's merge operator: the later write time, the higher
/// epoch, and the CRDT merge of the cell values (by the cell's kind).
#[derive(Debug, Default, Clone, Copy)]
pub struct HintMerge;

impl MergeOperator for HintMerge {
    fn name(&self) -> &str {
        "tally.hints.v1"
    }

    fn check(&self, operand: &[u8]) -> Result<(), String> {
        match operand.get(HEADER_BYTES..) {
            Some(value) if CellMerge.check(value).is_ok() => Ok(()),
            _ => Err("malformed hint".to_owned()),
        }
    }

    fn merge(&self, key: &[u8], older: &[u8], newer: &[u8]) -> Vec<u8> {
        // Both passed `check` on the way in (disk bytes are checksummed).
        let (Some(a), Some(b), Some(cell)) = (
            older.get(HEADER_BYTES..),
            newer.get(HEADER_BYTES..),
            key.get(8..),
        ) else {
            return newer.to_vec();
        };
        let shards = CellMerge.merge(cell, a, b);
        hint_value(
            written_ms(older).max(written_ms(newer)).unwrap_or(0),
            epoch_of(older).max(epoch_of(newer)).unwrap_or(0),
            &shards,
        )
    }
}

/// Drops hints past the window during compaction.
#[derive(Debug)]
struct HintExpiry {
    clock: Arc<dyn Clock>,
    window: Duration,
}

impl CompactionFilter for HintExpiry {
    fn decide(&self, _key: &[u8], value: &[u8]) -> FilterDecision {
        match written_ms(value) {
            Some(t) if t.saturating_add(self.window.as_millis() as i64) < self.clock.now_ms() => {
                FilterDecision::Remove
            }
            _ => FilterDecision::Keep,
        }
    }
}

/// One stored hint, as read for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The cell state to deliver.
    pub cell: CellState,
    key: Vec<u8>,
    raw: Vec<u8>,
}

/// Hints waiting on this node.
#[derive(Debug)]
pub struct HintStore {
    db: Db,
    mutation: Mutex<()>,
    clock: Arc<dyn Clock>,
    window: Duration,
    written: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
}

/// Hint counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintCounts {
    /// Cells hinted.
    pub written: u64,
    /// Hinted cells delivered.
    pub replayed: u64,
    /// Hinted cells dropped (past the window).
    pub dropped: u64,
}

fn prefix_end(target: HostId) -> Option<Vec<u8>> {
    target.0.checked_add(1).map(|t| t.to_be_bytes().to_vec())
}

impl HintStore {
    /// Opens the hint engine in `dir` on `fs`.
    pub fn open(
        fs: Arc<dyn tally_storage::Fs>,
        dir: &Path,
        mut opts: tally_storage::Options,
        clock: Arc<dyn Clock>,
        window: Duration,
    ) -> tally_storage::Result<HintStore> {
        opts.memtable_bytes = opts.memtable_bytes.min(8 << 20);
        opts.compaction_filter = Some(Arc::new(HintExpiry {
            clock: clock.clone(),
            window,
        }));
        Ok(HintStore {
            db: Db::open_with_fs(fs, dir, opts, Arc::new(HintMerge))?,
            mutation: Mutex::new(()),
            clock,
            window,
            written: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The hint window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Stores hints of the cells in `chunks` for `target`, written under
    /// `epoch`, in one storage write. Callers validated the cells (the
    /// coordinator built them).
    pub fn store(
        &self,
        target: HostId,
        epoch: u64,
        chunks: &[&[CellState]],
    ) -> tally_storage::Result<()> {
        let now = self.clock.now_ms();
        let mut batch = WriteBatch::new();
        let mut n = 0;
        for cell in chunks.iter().flat_map(|c| c.iter()) {
            n += 1;
            batch.merge(
                hint_key(target, &cell.key),
                hint_value(now, epoch, &cell.value),
            );
        }
        let _guard = self.mutation.lock();
        self.db.write(batch)?;
        self.written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a hint that was not written because its target has been
    /// down longer than the window.
    pub fn note_dropped(&self, cells: u64) {
        self.dropped.fetch_add(cells, Ordering::Relaxed);
    }

    /// Targets with at least one hint, in host id order.
    pub fn targets(&self) -> tally_storage::Result<Vec<HostId>> {
        let mut out = Vec::new();
        let mut from = Vec::new();
        loop {
            let mut next = None;
            self.db.scan_with(&from, None, |k, _| {
                next = k
                    .get(..8)
                    .and_then(|p| p.try_into().ok())
                    .map(u64::from_be_bytes);
                false
            })?;
            let Some(t) = next else { break };
            out.push(HostId(t));
            match prefix_end(HostId(t)) {
                Some(end) => from = end,
                None => break,
            }
        }
        Ok(out)
    }

    /// Hints waiting, for every target (a scan: for status, not hot paths).
    pub fn pending(&self) -> tally_storage::Result<u64> {
        let mut n = 0u64;
        self.db.scan_with(&[], None, |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Up to `max` hints for `target`, oldest key first. Hints past the
    /// window are removed on the way, counted and logged.
    pub fn batch(&self, target: HostId, max: usize) -> tally_storage::Result<Vec<Hint>> {
        let start = target.0.to_be_bytes();
        let end = prefix_end(target);
        let cutoff = self
            .clock
            .now_ms()
            .saturating_sub(self.window.as_millis() as i64);
        let mut hints = Vec::new();
        let mut expired = Vec::new();
        self.db.scan_with(&start, end.as_deref(), |k, v| {
            match (k.get(8..), v.get(HEADER_BYTES..), written_ms(v)) {
                (Some(cell), Some(shards), Some(t)) if t >= cutoff => hints.push(Hint {
                    cell: CellState {
                        key: cell.to_vec(),
                        value: shards.to_vec(),
                    },
                    key: k.to_vec(),
                    raw: v.to_vec(),
                }),
                _ => expired.push((k.to_vec(), v.to_vec())),
            }
            hints.len() < max
        })?;
        if !expired.is_empty() {
            let n =
                self.remove_unchanged(expired.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
            self.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                target = target.0,
                hints = n,
                window_s = self.window.as_secs(),
                "dropped hints older than the hint window; run repair to converge this replica"
            );
        }
        Ok(hints)
    }

    /// Removes hints that were delivered, unless a newer hint for the same
    /// cell merged into them meanwhile (that one stays for the next round).
    pub fn delivered(&self, hints: &[Hint]) -> tally_storage::Result<()> {
        let n =
            self.remove_unchanged(hints.iter().map(|h| (h.key.as_slice(), h.raw.as_slice())))?;
        self.replayed.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn remove_unchanged<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> tally_storage::Result<u64> {
        let _guard = self.mutation.lock();
        let mut batch = WriteBatch::new();
        for (key, raw) in entries {
            if self.db.get(key)?.as_deref() == Some(raw) {
                batch.delete(key);
            }
        }
        let n = batch.len() as u64;
        if n > 0 {
            self.db.write(batch)?;
        }
        Ok(n)
    }

    /// The engine holding the hints (its disk use and health).
    pub fn storage(&self) -> &Db {
        &self.db
    }

    /// Hints written, replayed and dropped since start.
    pub fn counts(&self) -> HintCounts {
        HintCounts {
            written: self.written.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Closes the engine.
    pub fn close(self) -> tally_storage::Result<()> {
        self.db.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::shard_set::{Shard, ShardSet};
    use std::sync::atomic::AtomicI64;

    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn cell(key: &[u8], clock: u64, sum: i64) -> CellState {
        CellState {
            key: key.to_vec(),
            value: ShardSet::single(Shard {
                id: 1 << 32 | 1,
                clock,
                sum,
                count: clock,
            })
            .encode(),
        }
    }

    fn open(dir: &Path, clock: Arc<ManualClock>) -> HintStore {
        let opts = tally_storage::Options {
            background_work: false,
            ..Default::default()
        };
        HintStore::open(
            Arc::new(tally_storage::RealFs),
            dir,
            opts,
            clock,
            Duration::from_secs(3 * 3600),
        )
        .unwrap()
    }

    #[test]
    fn hints_of_one_cell_merge_into_its_latest_state() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000)));
        let hints = open(dir.path(), clock);
        for c in 1..=50u64 {
            hints
                .store(HostId(2), 1, &[&[cell(b"a", c, c as i64)]])
                .unwrap();
        }
        hints.store(HostId(3), 1, &[&[cell(b"b", 1, 1)]]).unwrap();
        assert_eq!(hints.targets().unwrap(), vec![HostId(2), HostId(3)]);
        assert_eq!(hints.pending().unwrap(), 2);
        let batch = hints.batch(HostId(2), 10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].cell, cell(b"a", 50, 50), "the latest state only");
        assert_eq!(hints.counts().written, 51);
    }

    #[test]
    fn a_hint_merged_during_delivery_survives_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000)));
        let hints = open(dir.path(), clock);
        hints.store(HostId(2), 1, &[&[cell(b"a", 1, 1)]]).unwrap();
        let batch = hints.batch(HostId(2), 10).unwrap();
        // A newer state arrives while the batch is on the wire.
        hints.store(HostId(2), 1, &[&[cell(b"a", 2, 5)]]).unwrap();
        hints.delivered(&batch).unwrap();
        let left = hints.batch(HostId(2), 10).unwrap();
        assert_eq!(left.len(), 1, "the newer hint was kept");
        assert_eq!(left[0].cell, cell(b"a", 2, 5));
        hints.delivered(&left).unwrap();
        assert!(hints.batch(HostId(2), 10).unwrap().is_empty());
        assert_eq!(hints.targets().unwrap(), vec![]);
        assert_eq!(hints.counts().replayed, 1);
    }

    #[test]
    fn hints_past_the_window_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000)));
        let hints = open(dir.path(), clock.clone());
        hints.store(HostId(2), 1, &[&[cell(b"old", 1, 1)]]).unwrap();
        clock.0.store(1_000 + 2 * 3_600_000, Ordering::SeqCst);
        hints.store(HostId(2), 1, &[&[cell(b"new", 1, 1)]]).unwrap();
        clock.0.store(1_000 + 4 * 3_600_000, Ordering::SeqCst);
        let batch = hints.batch(HostId(2), 10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].cell.key, b"new".to_vec());
        assert_eq!(hints.counts().dropped, 1);
        assert_eq!(hints.pending().unwrap(), 1);
    }

    #[test]
    fn malformed_hints_are_refused_before_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000)));
        let hints = open(dir.path(), clock);
        let bad = CellState {
            key: b"a".to_vec(),
            value: vec![9, 9, 9],
        };
        assert!(hints.store(HostId(2), 1, &[&[bad]]).is_err());
        assert_eq!(hints.pending().unwrap(), 0);
    }
}
