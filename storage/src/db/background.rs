//! Background work: flushing frozen memtables to L0, running compactions
//! (and writing their output), and the three loops (flush, compaction,
//! periodic WAL sync) with their pause after an error.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{meta_of, open_table, table_name, write_l0, Inner, BACKGROUND_RETRY};
use crate::compaction;
use crate::compaction::{OutputSink, Plan};
use crate::entry::Kind;
use crate::error::Result;
use crate::manifest::VersionEdit;
use crate::metrics::add;
use crate::table_builder::TableBuilder;
use crate::version::LiveTable;
use crate::wal;

impl Inner {
    pub(super) fn flush(&self) -> Result<()> {
        self.check_poisoned()?;
        self.with_leadership(|| {
            if self.state.lock().active.is_empty() {
                Ok(())
            } else {
                self.rotate()
            }
        })?;
        // Flush inline (serialized with the flush thread by `flushing`), so
        // a failure is reported to the caller instead of retried forever.
        while !self.state.lock().immutables.is_empty() {
            self.check_poisoned()?;
            self.flush_oldest()?;
        }
        Ok(())
    }

    /// Flushes the oldest frozen memtable to an L0 table and installs it.
    pub(super) fn flush_oldest(&self) -> Result<()> {
        let _flushing = self.flushing.lock();
        let Some(mem) = self.state.lock().immutables.first().cloned() else {
            return Ok(());
        };
        let table = if mem.is_empty() {
            None
        } else {
            let table = write_l0(
                &self.fs,
                &self.dir,
                &self.opts,
                &self.next_file_number,
                &mem,
                &self.block_cache,
            )?;
            add(&self.metrics.flushes, 1);
            add(&self.metrics.flush_bytes, table.meta.size);
            Some(Arc::new(table))
        };
        let manifest = self.manifest.lock();
        let log_number = {
            let state = self.state.lock();
            state
                .immutables
                .get(1)
                .map_or(state.active.wal_number(), |m| m.wal_number())
        };
        let edit = VersionEdit {
            log_number: Some(log_number),
            next_file_number: Some(self.next_file_number.load(Ordering::SeqCst)),
            added: table.iter().map(|t| (0, t.meta.clone())).collect(),
            ..Default::default()
        };
        if let Err(e) = manifest.append(&edit) {
            self.poison(&e);
            return Err(e);
        }
        {
            let mut state = self.state.lock();
            state.version = Arc::new(
                state
                    .version
                    .with_changes(&[], table.into_iter().map(|t| (0, t)).collect()),
            );
            state.immutables.remove(0);
            self.state_changed.notify_all();
        }
        drop(manifest);
        self.remove_file(&self.dir.join(wal::wal_name(mem.wal_number())));
        Ok(())
    }

    pub(super) fn remove_file(&self, path: &Path) {
        if let Err(e) = self.fs.remove(path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove obsolete file");
        }
    }

    pub(super) fn run_compaction(&self, plan: Plan) -> Result<()> {
        let started = Instant::now();
        let description = compaction::describe(&plan);
        let deleted: Vec<(usize, u64)> = plan
            .inputs
            .iter()
            .map(|(l, t)| (*l, t.meta.number))
            .collect();
        let added: Vec<(usize, Arc<LiveTable>)> = if plan.trivial_move {
            plan.inputs
                .iter()
                .map(|(_, t)| (plan.output_level, t.clone()))
                .collect()
        } else {
            let mut sink = CompactionOutput {
                inner: self,
                builder: None,
                outputs: Vec::new(),
            };
            let merged = compaction::merge_into(
                &plan,
                self.op.clone(),
                self.opts.compaction_filter.as_deref(),
                &mut sink,
            )
            .and_then(|()| sink.finish_table());
            if let Err(e) = merged {
                if let Some((_, builder)) = sink.builder.take() {
                    builder.abandon();
                }
                for table in &sink.outputs {
                    self.remove_file(table.table.path());
                }
                return Err(e);
            }
            add(
                &self.metrics.compaction_read_bytes,
                compaction::input_bytes(&plan),
            );
            sink.outputs
                .into_iter()
                .map(|t| (plan.output_level, t))
                .collect()
        };
        let written: u64 = if plan.trivial_move {
            0
        } else {
            added.iter().map(|(_, t)| t.meta.size).sum()
        };
        add(&self.metrics.compaction_write_bytes, written);
        add(&self.metrics.compactions, 1);

        let manifest = self.manifest.lock();
        let edit = VersionEdit {
            next_file_number: Some(self.next_file_number.load(Ordering::SeqCst)),
            added: added.iter().map(|(l, t)| (*l, t.meta.clone())).collect(),
            deleted: deleted.clone(),
            ..Default::default()
        };
        if let Err(e) = manifest.append(&edit) {
            self.poison(&e);
            return Err(e);
        }
        {
            let mut state = self.state.lock();
            state.version = Arc::new(state.version.with_changes(&deleted, added));
            self.state_changed.notify_all();
        }
        drop(manifest);
        if !plan.trivial_move {
            for (_, table) in &plan.inputs {
                self.remove_file(table.table.path());
            }
        }
        tracing::info!(
            compaction = %description,
            written_bytes = written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction finished"
        );
        Ok(())
    }

    pub(super) fn flush_loop(&self) {
        loop {
            {
                let mut state = self.state.lock();
                while state.immutables.is_empty() && !self.shutdown.load(Ordering::SeqCst) {
                    self.state_changed.wait(&mut state);
                }
            }
            if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.flush_oldest() {
                tracing::error!(error = %e, "memtable flush failed; retrying");
                self.pause_after_error();
            }
        }
    }

    pub(super) fn compaction_loop(&self) {
        loop {
            {
                let mut state = self.state.lock();
                while !compaction::needs_compaction(&state.version, &self.opts)
                    && !self.shutdown.load(Ordering::SeqCst)
                {
                    self.state_changed.wait(&mut state);
                }
            }
            if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                return;
            }
            let mut pointers = self.compaction.lock();
            let version = self.state.lock().version.clone();
            let Some(plan) = compaction::pick(&version, &self.opts, &mut pointers) else {
                continue;
            };
            if let Err(e) = self.run_compaction(plan) {
                drop(pointers);
                tracing::error!(error = %e, "compaction failed; retrying");
                self.pause_after_error();
            }
        }
    }

    pub(super) fn pause_after_error(&self) {
        let mut state = self.state.lock();
        if !self.shutdown.load(Ordering::SeqCst) {
            self.state_changed.wait_for(&mut state, BACKGROUND_RETRY);
        }
    }

    pub(super) fn sync_loop(&self, interval: Duration) {
        loop {
            let wal = {
                let mut state = self.state.lock();
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                self.state_changed.wait_for(&mut state, interval);
                if self.shutdown.load(Ordering::SeqCst) || self.poisoned.load(Ordering::SeqCst) {
                    return;
                }
                state.wal.clone()
            };
            let started = std::time::Instant::now();
            match wal.sync() {
                Ok(true) => {
                    add(&self.metrics.wal_syncs, 1);
                    self.sync_latency.record(started.elapsed());
                }
                Ok(false) => {}
                Err(e) => {
                    self.poison(&e);
                    return;
                }
            }
        }
    }
}

/// Receives compaction output, cutting tables at the target size.
struct CompactionOutput<'a> {
    inner: &'a Inner,
    builder: Option<(u64, TableBuilder)>,
    outputs: Vec<Arc<LiveTable>>,
}

impl CompactionOutput<'_> {
    fn finish_table(&mut self) -> Result<()> {
        if let Some((number, builder)) = self.builder.take() {
            let summary = builder.finish()?;
            let table = open_table(
                &*self.inner.fs,
                &self.inner.dir,
                meta_of(number, summary),
                &self.inner.block_cache,
            )?;
            self.outputs.push(Arc::new(table));
        }
        Ok(())
    }
}

impl OutputSink for CompactionOutput<'_> {
    fn add(&mut self, key: &[u8], kind: Kind, value: &[u8]) -> Result<()> {
        if self.builder.is_none() {
            let number = self.inner.next_file_number.fetch_add(1, Ordering::SeqCst);
            let path = self.inner.dir.join(table_name(number));
            let opts = &self.inner.opts;
            let builder = TableBuilder::create(
                self.inner.fs.clone(),
                path,
                opts.block_bytes,
                opts.bloom_bits_per_key,
            )?;
            self.builder = Some((number, builder));
        }
        if let Some((_, builder)) = self.builder.as_mut() {
            builder.add(key, kind, value)?;
            if builder.approximate_size() >= self.inner.opts.target_file_bytes {
                self.finish_table()?;
            }
        }
        Ok(())
    }
}
