//! The op ids a leader applied, as its replicas record them: answering a
//! leader that asks for its own back, and, on that leader, refusing op ids
//! it may have applied until the replicas told (after an unclean stop its
//! own record may be lost with an unsynced WAL tail).

use tally_storage::WriteBatch;

use super::{storage_error, CounterStore};
use crate::counter::limits::{refuse, RequestError};
use crate::replica::op_window;

impl CounterStore {
    /// The live op ids this replica holds as applied by host `leader`.
    pub fn led_op_ids(&self, leader: u64) -> Result<Vec<u128>, RequestError> {
        let now_ms = self.clock.now_ms();
        let skew = self.limits.max_future_skew.as_millis() as i64;
        let prefix = op_window::led_op_prefix(leader);
        let mut ids = Vec::new();
        self.db
            .scan_with(&prefix, None, |k, _| {
                if !k.starts_with(&prefix) {
                    return false;
                }
                if let Some((_, id)) = op_window::led_op_of_key(k) {
                    if self.limits.op_window.is_live(id, now_ms, skew) {
                        ids.push(id);
                    }
                }
                true
            })
            .map_err(storage_error)?;
        Ok(ids)
    }

    /// After an unclean stop: until [`CounterStore::finish_relearning`],
    /// op ids made at or before `before_ms` that this node does not hold
    /// are refused with `Unavailable` (nothing applied; the client retries
    /// with backoff). The previous incarnation may have applied one and
    /// lost its record with an unsynced WAL tail, while the other replicas
    /// already hold the states it raised: counting it again would count it
    /// twice.
    pub fn start_relearning(&self, before_ms: i64) {
        *self.relearning_before_ms.lock() = Some(before_ms);
    }

    /// Whether op ids are still being learned back.
    pub fn relearning(&self) -> bool {
        self.relearning_before_ms.lock().is_some()
    }

    /// Adds op ids another replica holds as applied by this node to the
    /// window, durably (one write), so that their retries count nothing.
    pub fn learn_op_ids(&self, ids: &[u128]) -> Result<usize, RequestError> {
        let now_ms = self.clock.now_ms();
        let skew = self.limits.max_future_skew.as_millis() as i64;
        let mut ops = self.ops.lock();
        let mut batch = WriteBatch::new();
        let mut learned = Vec::new();
        for &id in ids {
            if self.limits.op_window.is_live(id, now_ms, skew) && !ops.contains(id) {
                batch.put(op_window::op_key(id), op_window::OP_VALUE);
                learned.push(id);
            }
        }
        if learned.is_empty() {
            return Ok(0);
        }
        let point = self.db.write_unsynced(batch).map_err(storage_error)?;
        self.wait_durable(point)
            .map_err(|code| refuse(code, "learned op ids not durable"))?;
        for &id in &learned {
            // Past the bound too: forgetting an applied id could count it twice.
            ops.restore(id);
        }
        Ok(learned.len())
    }

    /// Ends [`CounterStore::start_relearning`]: every other replica told.
    pub fn finish_relearning(&self) {
        *self.relearning_before_ms.lock() = None;
    }
}
