//! Reads of this node's cells: point `get`s and one scan per range, on
//! the async worker when few and on the blocking pool (a few at a time)
//! when many; cleanup of ranges this node no longer replicates; and the
//! answer of a read from this node's copy alone.

use std::sync::Arc;

use tally_client::message::MAX_CELLS;
use tally_client::{CellState, ErrorCode, KeyRange};
use tally_storage::WriteBatch;

use super::{malformed_cell, storage_error, CounterStore};
use crate::counter::cell_key;
use crate::counter::cell_merge::{valid_for_key, CellValue};
use crate::counter::limits::{refuse, RequestError};
use crate::counter::read_plan::{self, ReadAnswer, ReadPlan};

impl CounterStore {
    /// The replica's cells in `ranges`, in key order, at most `max_cells`
    /// (more is an `InvalidRange` error: the caller asked for too much).
    /// A point range (one key, see `read_plan::point`) is one `get`, which
    /// the bloom filters make cheap; any other range is one scan.
    pub fn read_cells(
        &self,
        ranges: &[KeyRange],
        max_cells: usize,
    ) -> Result<Vec<CellState>, RequestError> {
        self.read_cells_up_to(ranges, max_cells)?.ok_or_else(|| {
            refuse(
                ErrorCode::InvalidRange,
                format!("the read spans more than {max_cells} cells"),
            )
        })
    }

    /// Like [`CounterStore::read_cells`], but `Ok(None)` past `max_cells`.
    pub fn read_cells_up_to(
        &self,
        ranges: &[KeyRange],
        max_cells: usize,
    ) -> Result<Option<Vec<CellState>>, RequestError> {
        let mut out = Vec::new();
        let mut spans: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for range in ranges {
            if read_plan::is_point(range) {
                if let Some(value) = self.db.get(&range.start).map_err(storage_error)? {
                    if !valid_for_key(&range.start, &value) {
                        return Err(malformed_cell());
                    }
                    out.push(CellState {
                        key: range.start.clone(),
                        value,
                    });
                }
            } else if range.start < range.end {
                spans.push((&range.start, Some(&range.end)));
            }
        }
        if out.len() > max_cells {
            return Ok(None);
        }
        // The ranges of one plan are disjoint; in key order they make one
        // pass over each table.
        spans.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut bad = false;
        self.db
            .scan_ranges_with(&spans, |k, v| {
                if cell_key::is_system(k) {
                    return true;
                }
                if !valid_for_key(k, v) {
                    bad = true;
                    return false;
                }
                out.push(CellState {
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
                out.len() <= max_cells
            })
            .map_err(storage_error)?;
        if bad {
            return Err(malformed_cell());
        }
        if out.len() > max_cells {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// Cells a replica read gathers on the async worker itself: enough for a
/// total (one cell) or a 30-day stats (about 200), which come from
/// memtables and cached blocks in microseconds, where a hop to the
/// blocking pool and back costs two thread wake-ups. A larger read is
/// redone on the blocking pool so that it never holds a worker for long.
const INLINE_READ_CELLS: usize = 512;

/// The replica's cells in `ranges` (see [`CounterStore::read_cells`]),
/// on the worker when they are few, else on the blocking pool.
pub async fn read_cells_async(
    store: &Arc<CounterStore>,
    ranges: Vec<KeyRange>,
) -> Result<Vec<CellState>, RequestError> {
    if let Some(cells) = store.read_cells_up_to(&ranges, INLINE_READ_CELLS)? {
        return Ok(cells);
    }
    heavy_read(store, move |store| store.read_cells(&ranges, MAX_CELLS))
        .await
        .and_then(|r| r)
}

/// Runs `read` on the blocking pool once one of the store's heavy-read
/// slots is free. Cancel-safe: a caller that goes away before its turn
/// never starts the read.
pub async fn heavy_read<T: Send + 'static>(
    store: &Arc<CounterStore>,
    read: impl FnOnce(&CounterStore) -> T + Send + 'static,
) -> Result<T, RequestError> {
    let _slot = store
        .heavy_reads
        .acquire()
        .await
        .map_err(|_| refuse(ErrorCode::ShuttingDown, "the store is closing"))?;
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| refuse(ErrorCode::Internal, format!("read task failed: {e}")))
}

impl CounterStore {
    /// Deletes every cell whose token `keep` refuses (`tally cleanup`:
    /// the ranges this node no longer replicates after a join). Scans in
    /// chunks of 10,000 keys, each deleted in one write; returns how many.
    pub fn cleanup(&self, keep: impl Fn(u64) -> bool) -> Result<u64, RequestError> {
        const CHUNK: usize = 10_000;
        let mut from: Vec<u8> = Vec::new();
        let mut deleted = 0u64;
        loop {
            let mut doomed: Vec<Vec<u8>> = Vec::new();
            let mut seen = 0usize;
            let mut last: Option<Vec<u8>> = None;
            self.db
                .scan_with(&from, None, |k, _| {
                    seen += 1;
                    if let Some(token) = cell_key::token_of(k) {
                        if !keep(token) {
                            doomed.push(k.to_vec());
                        }
                    }
                    if seen >= CHUNK {
                        last = Some(k.to_vec());
                        return false;
                    }
                    true
                })
                .map_err(storage_error)?;
            if !doomed.is_empty() {
                let mut batch = WriteBatch::new();
                for k in &doomed {
                    batch.delete(k.as_slice());
                }
                self.db.write(batch).map_err(storage_error)?;
                deleted += doomed.len() as u64;
            }
            match last {
                Some(mut k) => {
                    k.push(0);
                    from = k;
                }
                None => return Ok(deleted),
            }
        }
    }

    /// Answers `plan` from this node's cells alone (no other replica).
    /// For tests: the node answers reads from R replicas.
    #[doc(hidden)]
    pub fn read_local(&self, plan: &ReadPlan) -> Result<ReadAnswer, RequestError> {
        let cells = self.read_cells(&plan.ranges, MAX_CELLS)?;
        let sets: Vec<(&[u8], CellValue)> = cells
            .iter()
            .map(|c| {
                let value = cell_key::kind_of(&c.key)
                    .and_then(|kind| CellValue::decode(kind, &c.value))
                    .ok_or_else(malformed_cell)?;
                Ok((c.key.as_slice(), value))
            })
            .collect::<Result<_, RequestError>>()?;
        plan.answer(sets.iter().map(|(k, s)| (*k, s)), self.clock.now_ms())
    }
}
