//! The lead algorithm: one storage write (one WAL record) for a write
//! group: the batches this node leads, each cell's shard raised under its
//! stripe's lock (from the own-shard cache or read back), the op ids they
//! apply, and the blind merges of other nodes' states.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_client::{CellBatch, CellState, ErrorCode, Increment, ItemResult};
use tally_storage::{SyncPoint, WriteBatch};

use super::{decode_cell, CounterStore};
use crate::counter::cell_key::{self, CellKind};
use crate::counter::op_id;
use crate::counter::shard_set::{Shard, ShardSet, MAX_CLOCK};
use crate::log_limit::LogLimit;
use crate::replica::op_window;
use crate::replica::stripes::{stripe_of, CachedKey, CACHED_SHARDS_PER_STRIPE};

/// One cell's share of a write: the summed delta and event count, and
/// the shard state it produced.
#[derive(Debug, Default)]
struct CellUpdate {
    /// Widened: a write group's deltas never overflow while summed.
    delta: i128,
    events: u64,
    state: Vec<u8>,
    /// The lead batches touching the cell, in order, each once.
    batches: Batches,
}

/// A cell's lead batches: nearly always one, so that one is inline (an
/// allocation per cell showed in the write path's profile).
#[derive(Debug, Default)]
struct Batches {
    first: Option<u32>,
    more: Vec<u32>,
}

impl Batches {
    /// Records `b` unless it is the last one recorded.
    fn note(&mut self, b: u32) {
        match self.first {
            None => self.first = Some(b),
            Some(first) if self.more.last().copied().unwrap_or(first) != b => self.more.push(b),
            Some(_) => {}
        }
    }

    /// All but the last, and the last.
    fn split_last(&self) -> Option<(u32, impl Iterator<Item = u32> + '_)> {
        let first = self.first?;
        let last = self.more.last().copied().unwrap_or(first);
        let rest = self.more.len();
        Some((
            last,
            std::iter::once(first)
                .chain(self.more.iter().copied())
                .take(rest),
        ))
    }
}

/// What leading one batch did.
#[derive(Debug, Default)]
pub struct Led {
    /// One result per item, in order.
    pub results: Vec<ItemResult>,
    /// The new state of this node's shard of every cell the batch touched,
    /// for the other replicas (empty unless the batch was applied).
    pub cells: Vec<CellState>,
}

/// Turns every `Ok` in `results` into `Indeterminate(code)`: the write
/// happened but did not reach the durability or the acknowledgements an
/// `Ok` promises.
pub fn unconfirmed(results: &mut [ItemResult], code: ErrorCode) {
    for r in results {
        if *r == ItemResult::Ok {
            *r = ItemResult::Indeterminate(code);
        }
    }
}

/// `old` raised by one update: the next clock, the sums added; `None`
/// when the sum would leave the `i64` range or the clock pass
/// [`MAX_CLOCK`] (never wrapped: a wrapped shard would lose against the
/// one the replicas hold, and the increment would count nowhere).
fn raised(old: Shard, update: &CellUpdate) -> Option<Shard> {
    Some(Shard {
        id: old.id,
        clock: old.clock.checked_add(1).filter(|c| *c <= MAX_CLOCK)?,
        sum: i64::try_from(i128::from(old.sum) + update.delta).ok()?,
        count: old.count.checked_add(update.events)?,
    })
}

/// Why [`CounterStore::apply`] wrote nothing (or may not have).
#[derive(Debug)]
enum Applied {
    /// Nothing written: these cells' shards cannot take their updates
    /// (sum past the `i64` range, or clock past [`MAX_CLOCK`]).
    Overflow(HashSet<Vec<u8>>),
    /// The write failed; `maybe_applied` when it may have reached the WAL.
    Failed {
        code: ErrorCode,
        maybe_applied: bool,
    },
}

impl CounterStore {
    /// Applies a batch this node leads; one result per item, in order.
    /// Invalid items are refused alone; the valid ones are applied
    /// together, atomically. For tests and benches: the node leads
    /// through the write pipeline's groups.
    #[doc(hidden)]
    pub fn increment(&self, items: &[Increment]) -> Led {
        let (mut led, written) = self.write_group(&[items], Vec::new());
        let mut led = led.pop().unwrap_or_default();
        if let Err(code) = written.and_then(|point| self.wait_durable(point)) {
            unconfirmed(&mut led.results, code);
            led.cells.clear();
        }
        led
    }

    /// One storage write (one WAL record) for everything the write
    /// pipeline has queued: `leads`, batches this node leads (it raises its
    /// own shard of each cell), and `merges`, cell states from other nodes
    /// (replication, hints, read repair) merged blindly by the CRDT rule.
    /// Returns what each lead did, and whether the write happened
    /// (`Err(code)`: maybe not). The write is visible at once but, in
    /// `sync` mode, durable only after [`CounterStore::wait_durable`] with
    /// the returned point: the caller acknowledges nothing before.
    ///
    /// Callers validate merge cells first ([`valid_cell`](super::valid_cell)): one bad cell
    /// would fail the whole write.
    pub fn write_group(
        &self,
        leads: &[&[Increment]],
        merges: Vec<CellBatch>,
    ) -> (Vec<Led>, Result<SyncPoint, ErrorCode>) {
        let now_ms = self.clock.now_ms();
        let mut led: Vec<Led> = leads
            .iter()
            .map(|b| Led {
                results: vec![ItemResult::Ok; b.len()],
                cells: Vec::new(),
            })
            .collect();
        // Op ids: one held already marks a retry, which raises its cells by
        // nothing, so that this node's current shards go to the replicas
        // again and the retry's acknowledgement means what the first one
        // would have; a new one is written with the cells it raised. The
        // window stays locked until the write is done.
        let mut ops = self.ops.lock();
        ops.expire(now_ms);
        // Items refused because they would overflow a cell: the group is
        // built again without them (rare: a sum near the i64 bounds).
        let mut overflowing: HashSet<(usize, usize)> = HashSet::new();
        let relearning_before_ms = *self.relearning_before_ms.lock();
        let (cells, valid, fresh, retries, events, outcome) = loop {
            let mut fresh: HashSet<u128> = HashSet::new();
            let mut retries = 0u64;
            let mut events = 0u64;
            // Same-cell deltas are summed: one shard update per cell per write.
            let mut cells: BTreeMap<Vec<u8>, CellUpdate> = BTreeMap::new();
            let mut valid = Vec::new();
            let namespaces = self.namespaces.read();
            for (b, items) in leads.iter().enumerate() {
                for (i, item) in items.iter().enumerate() {
                    if overflowing.contains(&(b, i)) {
                        led[b].results[i] = ItemResult::Failed(ErrorCode::Overflow);
                        continue;
                    }
                    match self.limits.check_increment(&namespaces, item, now_ms) {
                        Ok(ns) => {
                            let retry = match item.op_id {
                                None => false,
                                Some(id) if ops.contains(id) || fresh.contains(&id) => true,
                                // Maybe applied by the previous incarnation,
                                // whose record of it was lost: not until the
                                // other replicas told.
                                Some(id)
                                    if relearning_before_ms
                                        .is_some_and(|t| op_id::made_ms(id) <= t) =>
                                {
                                    led[b].results[i] = ItemResult::Failed(ErrorCode::Unavailable);
                                    continue;
                                }
                                Some(id) => {
                                    if !ops.has_room(fresh.len() + 1) {
                                        led[b].results[i] =
                                            ItemResult::Failed(ErrorCode::Overloaded);
                                        continue;
                                    }
                                    fresh.insert(id);
                                    false
                                }
                            };
                            retries += u64::from(retry);
                            if !retry {
                                events += u64::from(item.events);
                            }
                            valid.push((b, i));
                            for (res, _) in &ns.resolutions {
                                let bucket = res.bucket_start(item.timestamp_ms);
                                let cell = cell_key::encode(
                                    CellKind::Counter,
                                    &ns.name,
                                    &item.key,
                                    *res,
                                    bucket,
                                );
                                let e = cells.entry(cell).or_default();
                                if !retry {
                                    e.delta += i128::from(item.delta);
                                    e.events += u64::from(item.events);
                                }
                                e.batches.note(b as u32);
                            }
                        }
                        Err(e) => led[b].results[i] = ItemResult::Failed(e.code),
                    }
                }
            }
            drop(namespaces);
            if cells.is_empty() && merges.iter().all(|m| m.is_empty()) {
                return (led, Ok(SyncPoint::default()));
            }
            match self.apply(&mut cells, &merges, &fresh) {
                Err(Applied::Overflow(bad)) => {
                    let namespaces = self.namespaces.read();
                    for &(b, i) in &valid {
                        let item = &leads[b][i];
                        let Some(ns) = namespaces.get(&item.namespace) else {
                            continue;
                        };
                        let touches = ns.resolutions.iter().any(|(res, _)| {
                            let bucket = res.bucket_start(item.timestamp_ms);
                            bad.contains(&cell_key::encode(
                                CellKind::Counter,
                                &ns.name,
                                &item.key,
                                *res,
                                bucket,
                            ))
                        });
                        if touches {
                            overflowing.insert((b, i));
                        }
                    }
                }
                Err(Applied::Failed {
                    code,
                    maybe_applied,
                }) => {
                    break (
                        cells,
                        valid,
                        fresh,
                        retries,
                        events,
                        Err((code, maybe_applied)),
                    )
                }
                Ok(point) => break (cells, valid, fresh, retries, events, Ok(point)),
            }
        };
        if !matches!(outcome, Err((_, false))) {
            // Applied, or maybe: either way a retry must not count again.
            for id in fresh {
                // Room was checked above, under the same lock.
                let _ = ops.insert(id);
            }
        }
        drop(ops);
        for &(b, i) in &valid {
            led[b].results[i] = match &outcome {
                Ok(_) => ItemResult::Ok,
                Err((code, false)) => ItemResult::Failed(*code),
                Err((code, true)) => ItemResult::Indeterminate(*code),
            };
        }
        if outcome.is_ok() {
            self.increments
                .fetch_add(valid.len() as u64 - retries, Ordering::Relaxed);
            self.duplicates.fetch_add(retries, Ordering::Relaxed);
            self.events.fetch_add(events, Ordering::Relaxed);
            self.trending.record(
                cells
                    .iter()
                    .map(|(key, update)| (key.as_slice(), update.delta)),
            );
            // Each batch gets the states of its cells, in key order; the
            // keys move out of the map (copied only for cells shared by
            // several batches).
            for (key, update) in cells {
                let Some((last, rest)) = update.batches.split_last() else {
                    continue;
                };
                for b in rest {
                    led[b as usize].cells.push(CellState {
                        key: key.clone(),
                        value: update.state.clone(),
                    });
                }
                led[last as usize].cells.push(CellState {
                    key,
                    value: update.state,
                });
            }
            // The op ids travel with the states they raised (a retry's
            // too), so that the other replicas can tell this node which
            // ones it applied should it lose its own record.
            let leader = u64::from(self.identity.host_id);
            for &(b, i) in &valid {
                if let Some(id) = leads[b][i].op_id {
                    led[b].cells.push(CellState {
                        key: op_window::led_op_key(leader, id).to_vec(),
                        value: op_window::LED_OP_VALUE.to_vec(),
                    });
                }
            }
        }
        (led, outcome.map_err(|(code, _)| code))
    }

    /// Raises this node's shard of every cell under the cells' locks, and
    /// merges `merges`, in one storage write that also records the op ids
    /// `applied`. Fills in each cell's new state.
    /// `Err((code, maybe_applied))`.
    fn apply(
        &self,
        cells: &mut BTreeMap<Vec<u8>, CellUpdate>,
        merges: &[CellBatch],
        applied: &HashSet<u128>,
    ) -> Result<SyncPoint, Applied> {
        // Locks taken in stripe order, so two groups cannot deadlock.
        let cell_stripes: Vec<usize> = cells.keys().map(|c| stripe_of(c)).collect();
        let mut stripes = cell_stripes.clone();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards: Vec<_> = stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let shard_id = self.identity.shard_id();
        let mut batch = WriteBatch::new();
        // The cache takes each new shard before the write, in the same
        // lookup that found the old one: the stripes stay locked until
        // the write is done, and a failed write takes them out again.
        let mut guard_of = Vec::with_capacity(cells.len());
        let mut unreadable = None;
        let mut overflowing = HashSet::new();
        for ((cell, update), stripe) in cells.iter_mut().zip(cell_stripes) {
            // Every cell's stripe is locked: the search cannot miss.
            let g = stripes.binary_search(&stripe).unwrap_or_default();
            guard_of.push(g);
            let own = &mut guards[g].own_shards;
            let new = match own.get_mut(cell.as_slice()) {
                Some(cached) => match raised(*cached, update) {
                    Some(new) => {
                        *cached = new;
                        new
                    }
                    None => {
                        overflowing.insert(cell.clone());
                        continue;
                    }
                },
                None => {
                    let stored = match self.stored_shard(cell, shard_id) {
                        Ok(stored) => stored,
                        Err(code) => {
                            unreadable = Some(code);
                            break;
                        }
                    };
                    let old = stored.unwrap_or(Shard {
                        id: shard_id,
                        clock: 0,
                        sum: 0,
                        count: 0,
                    });
                    let Some(new) = raised(old, update) else {
                        overflowing.insert(cell.clone());
                        continue;
                    };
                    if own.len() >= CACHED_SHARDS_PER_STRIPE {
                        own.clear();
                    }
                    own.insert(CachedKey::new(cell), new);
                    new
                }
            };
            update.state = ShardSet::encode_single(&new);
            batch.merge(cell, &update.state);
        }
        let outcome = match unreadable {
            Some(code) => Err(Applied::Failed {
                code,
                maybe_applied: false,
            }),
            None if !overflowing.is_empty() => Err(Applied::Overflow(overflowing)),
            None => {
                for (key, value) in merges.iter().flat_map(CellBatch::iter) {
                    batch.merge(key, value);
                }
                for &id in applied {
                    batch.put(op_window::op_key(id), op_window::OP_VALUE);
                }
                self.db.write_unsynced(batch).map_err(|e| {
                    static FAILED: LogLimit = LogLimit::every(Duration::from_secs(1));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %e, held_back, "counter write failed");
                    }
                    let maybe_applied = !e.nothing_written();
                    let code = if matches!(e, tally_storage::Error::WriteStall { .. }) {
                        ErrorCode::Overloaded
                    } else {
                        ErrorCode::Storage
                    };
                    Applied::Failed {
                        code,
                        maybe_applied,
                    }
                })
            }
        };
        if outcome.is_err() {
            // Not written, or not known to be: the raised shards leave the
            // cache, and the next write reads the cell back.
            for (cell, g) in cells.keys().zip(guard_of) {
                guards[g].own_shards.remove(cell.as_slice());
            }
        }
        outcome
    }

    /// Shard `shard_id` of `cell` as storage holds it.
    fn stored_shard(&self, cell: &[u8], shard_id: u64) -> Result<Option<Shard>, ErrorCode> {
        match self.db.get(cell) {
            Ok(Some(bytes)) => Ok(decode_cell(&bytes).map_err(|e| e.code)?.shard(shard_id)),
            Ok(None) => Ok(None),
            Err(e) => {
                static UNREADABLE: LogLimit = LogLimit::every(Duration::from_secs(1));
                if let Some(held_back) = UNREADABLE.allow() {
                    tracing::error!(error = %e, held_back, "reading a counter cell failed");
                }
                Err(ErrorCode::Storage)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_names_each_of_its_batches_once_in_order() {
        let batches = |seq: &[u32]| {
            let mut b = Batches::default();
            for &x in seq {
                b.note(x);
            }
            b.split_last()
                .map(|(last, rest)| (rest.collect::<Vec<_>>(), last))
        };
        assert_eq!(batches(&[]), None);
        assert_eq!(batches(&[3, 3]), Some((vec![], 3)));
        assert_eq!(batches(&[0, 0, 1, 2, 2]), Some((vec![0, 1], 2)));
    }
}
