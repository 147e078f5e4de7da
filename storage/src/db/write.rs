//! The write path: group commit (one leader appends every queued batch in
//! one write and one fsync), making room (rotating the memtable, stalling
//! behind flushes), durability waits, and poisoning on a WAL failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, SyncPoint, MAX_GROUP_BYTES};
use crate::entry::Kind;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::metrics::add;
use crate::options::Durability;
use crate::record_log::MAX_PAYLOAD_LEN;
use crate::wal::Wal;
use crate::write_batch::{Op, WriteBatch};

impl Inner {
    pub(super) fn validate(&self, batch: &WriteBatch) -> Result<()> {
        if batch.approximate_size() > MAX_PAYLOAD_LEN / 2 {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes exceeds {} bytes",
                batch.approximate_size(),
                MAX_PAYLOAD_LEN / 2
            )));
        }
        for Op { kind, key, value } in batch.ops() {
            if key.is_empty() || key.len() > self.opts.max_key_bytes {
                return Err(Error::InvalidArgument(format!(
                    "key of {} bytes: keys must be 1..={} bytes",
                    key.len(),
                    self.opts.max_key_bytes
                )));
            }
            if value.len() > self.opts.max_value_bytes {
                return Err(Error::InvalidArgument(format!(
                    "value of {} bytes exceeds {} bytes",
                    value.len(),
                    self.opts.max_value_bytes
                )));
            }
            if kind == Kind::Merge {
                self.op.check(value).map_err(Error::InvalidArgument)?;
            }
        }
        Ok(())
    }

    pub(super) fn write(&self, batch: WriteBatch, sync: bool) -> Result<SyncPoint> {
        self.validate(&batch)?;
        if batch.is_empty() {
            return Ok(SyncPoint::default());
        }
        self.check_poisoned()?;
        add(&self.metrics.user_bytes, batch.approximate_size() as u64);
        let mut queue = self.queue.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, batch, sync));
        loop {
            if let Some(result) = queue.results.remove(&ticket) {
                return result;
            }
            if !queue.leader_active {
                break;
            }
            self.queue_changed.wait(&mut queue);
        }
        // Lead one group; our own batch is in it (it is still pending, and
        // groups are taken from the front).
        queue.leader_active = true;
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut rest = std::mem::take(&mut queue.pending).into_iter();
        let mut sync_group = false;
        for (t, b, sync) in rest.by_ref() {
            bytes += b.approximate_size();
            sync_group |= sync;
            group.push((t, b));
            if bytes >= MAX_GROUP_BYTES && group.iter().any(|(t, _)| *t == ticket) {
                break;
            }
        }
        queue.pending = rest.collect();
        drop(queue);

        let tickets: Vec<u64> = group.iter().map(|(t, _)| *t).collect();
        let result = self.commit_group(group.into_iter().map(|(_, b)| b).collect(), sync_group);

        let mut queue = self.queue.lock();
        for t in tickets {
            if t != ticket {
                let r = match &result {
                    Ok(point) => Ok(*point),
                    Err(e) => Err(e.duplicate()),
                };
                queue.results.insert(t, r);
            }
        }
        queue.leader_active = false;
        self.queue_changed.notify_all();
        result
    }

    /// Writes one group to the WAL and the memtable; fsyncs first when
    /// `sync` and the engine is in `sync` mode.
    pub(super) fn commit_group(&self, group: Vec<WriteBatch>, sync: bool) -> Result<SyncPoint> {
        let (memtable, wal) = self.make_room()?;
        let mut records = Vec::with_capacity(group.iter().map(|b| b.approximate_size() + 16).sum());
        for batch in &group {
            batch.encode_record(&mut records);
        }
        if let Err(e) = wal.append(&records) {
            self.poison(&e);
            return Err(e);
        }
        add(&self.metrics.wal_bytes, records.len() as u64);
        let point = SyncPoint {
            wal: wal.number(),
            end: wal.bytes_written(),
        };
        if sync && self.opts.durability == Durability::Sync {
            self.sync_wal(&wal)?;
        }
        add(&self.metrics.commit_groups, 1);
        add(&self.metrics.batches, group.len() as u64);
        memtable.apply(group.iter().flat_map(WriteBatch::ops), &*self.op);
        Ok(point)
    }

    /// Fsyncs `wal` (a no-op when nothing new was written); a failure
    /// poisons the engine.
    pub(super) fn sync_wal(&self, wal: &Wal) -> Result<()> {
        let started = std::time::Instant::now();
        match wal.sync() {
            Ok(synced) => {
                if synced {
                    add(&self.metrics.wal_syncs, 1);
                    self.sync_latency.record(started.elapsed());
                }
                Ok(())
            }
            Err(e) => {
                self.poison(&e);
                Err(e)
            }
        }
    }

    pub(super) fn wait_durable(&self, point: SyncPoint) -> Result<()> {
        if self.opts.durability != Durability::Sync || point == SyncPoint::default() {
            return Ok(());
        }
        let wal = self.state.lock().wal.clone();
        if wal.number() != point.wal {
            // `point`'s WAL was rotated out, and rotation fsyncs the old
            // WAL before replacing it, unless that failed and poisoned us.
            return self.check_poisoned();
        }
        if wal.bytes_synced() >= point.end {
            return Ok(());
        }
        self.check_poisoned()?;
        self.sync_wal(&wal)
    }

    /// Returns the memtable and WAL to write to, rotating a full memtable
    /// and waiting (bounded) while flushes or compactions are behind. Called
    /// only by the group leader.
    pub(super) fn make_room(&self) -> Result<(Arc<Memtable>, Arc<Wal>)> {
        let started = Instant::now();
        let mut stalled = false;
        let mut state = self.state.lock();
        loop {
            self.check_poisoned()?;
            let l0 = state.version.levels[0].len();
            let l0_blocked = self.opts.background_work && l0 >= self.opts.l0_stop_trigger;
            let full = state.active.approximate_bytes() >= self.opts.memtable_bytes
                || state.wal.bytes_written() >= self.opts.max_wal_bytes;
            let can_rotate = state.immutables.len() < self.opts.max_immutable_memtables;
            if !full && !l0_blocked {
                break;
            }
            if full && can_rotate && !l0_blocked {
                drop(state);
                self.rotate()?;
                state = self.state.lock();
                continue;
            }
            if !self.opts.background_work {
                drop(state);
                self.flush_oldest()?;
                state = self.state.lock();
                continue;
            }
            stalled = true;
            let waited = started.elapsed();
            let Some(remaining) = self.opts.write_stall_timeout.checked_sub(waited) else {
                self.note_stall(started);
                return Err(Error::WriteStall { waited });
            };
            self.state_changed
                .wait_for(&mut state, remaining.min(Duration::from_millis(100)));
        }
        if stalled {
            self.note_stall(started);
        }
        let slowdown = self.opts.background_work
            && state.version.levels[0].len() >= self.opts.l0_slowdown_trigger;
        let result = (state.active.clone(), state.wal.clone());
        drop(state);
        if slowdown {
            add(&self.metrics.write_slowdowns, 1);
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(result)
    }

    pub(super) fn note_stall(&self, started: Instant) {
        add(&self.metrics.write_stalls, 1);
        add(
            &self.metrics.write_stall_micros,
            started.elapsed().as_micros() as u64,
        );
    }

    /// Freezes the active memtable and starts a new one with a new WAL.
    /// Called only by the group leader (or with leadership held).
    pub(super) fn rotate(&self) -> Result<()> {
        let old_wal = self.state.lock().wal.clone();
        // Only the newest WAL may have a torn tail: finish the old one first.
        if let Err(e) = old_wal.sync() {
            self.poison(&e);
            return Err(e);
        }
        let number = self.next_file_number.fetch_add(1, Ordering::SeqCst);
        let wal = match Wal::create(&*self.fs, &self.dir, number) {
            Ok(wal) => wal,
            // No file was made (out of file descriptors, or of space for a
            // name): nothing is lost, the active memtable and its WAL stay,
            // and the next write tries again. Anything else (the directory
            // fsync) poisons.
            Err(e) if e.nothing_written() => {
                tracing::warn!(error = %e, "could not start a new WAL; writes wait for it");
                return Err(e);
            }
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        let mut state = self.state.lock();
        let frozen = std::mem::replace(&mut state.active, Arc::new(Memtable::new(number)));
        state.immutables.push(frozen);
        state.wal = Arc::new(wal);
        self.state_changed.notify_all();
        Ok(())
    }

    /// Takes write leadership, so that memtable rotation cannot race a group.
    pub(super) fn with_leadership<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut queue = self.queue.lock();
        while queue.leader_active {
            self.queue_changed.wait(&mut queue);
        }
        queue.leader_active = true;
        drop(queue);
        let result = f();
        let mut queue = self.queue.lock();
        queue.leader_active = false;
        self.queue_changed.notify_all();
        result
    }
}
