//! `/metrics`: the node as Prometheus sees it, gathered when a scrape
//! comes (the hot path records only the fronts'
//! [`RequestMetrics`](crate::metrics::RequestMetrics)). Names follow the
//! Prometheus conventions: a `tally_` prefix, `_total` on counters,
//! `_seconds` and `_bytes` units.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tally_storage::{LatencySnapshot, SYNC_LATENCY_BOUNDS_MICROS};

use super::Server;
use crate::convergence::repair_schedule::schedule_view;

/// A storage engine: the counters' or the hints'.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabel {
    engine: &'static str,
}

/// Who wrote a write group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriterLabel {
    writer: &'static str,
}

/// One peer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    host_id: u64,
}

/// Adds a counter holding `value` now.
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// Adds a gauge holding `value` now.
fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, g),
        None => registry.register(name, help, g),
    }
}

/// Adds a counter per storage engine.
fn engine_counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: [u64; 2],
) {
    let family: Family<EngineLabel, Counter> = Family::default();
    for (engine, value) in ["counters", "hints"].into_iter().zip(values) {
        family.get_or_create(&EngineLabel { engine }).inc_by(value);
    }
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family),
        None => registry.register(name, help, family),
    }
}

/// Adds a gauge per storage engine.
fn engine_gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: [i64; 2],
) {
    let family: Family<EngineLabel, Gauge> = Family::default();
    for (engine, value) in ["counters", "hints"].into_iter().zip(values) {
        family.get_or_create(&EngineLabel { engine }).set(value);
    }
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family),
        None => registry.register(name, help, family),
    }
}

/// Both engines' WAL fsync latencies, exposed as one histogram family
/// labelled by engine. The engine counts them in its own fixed buckets
/// (storage has no metrics library), read when a scrape comes.
#[derive(Debug)]
struct SyncLatencies([LatencySnapshot; 2]);

impl EncodeMetric for SyncLatencies {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (engine, h) in ["counters", "hints"].into_iter().zip(&self.0) {
            let label = EngineLabel { engine };
            // Per bucket, not cumulative (the encoder sums them); the last
            // bound is `f64::MAX`, which the encoder writes as `+Inf`.
            let buckets: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let bound = SYNC_LATENCY_BOUNDS_MICROS
                        .get(i)
                        .map_or(f64::MAX, |&micros| micros as f64 / 1e6);
                    (bound, n)
                })
                .collect();
            encoder
                .encode_family(&label)?
                .encode_histogram::<NoLabelSet>(
                    h.sum_micros as f64 / 1e6,
                    h.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Server {
    /// The OpenMetrics text exposition of this node now (`None`: metrics
    /// are off).
    pub(crate) async fn scrape(&self) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let status = self.node_status().await;
        let mut registry = Registry::with_prefix("tally");
        metrics.register(&mut registry);
        let r = &mut registry;
        let store = &self.ctx.store;
        counter(
            r,
            "increments_applied",
            "Increment items this node applied as their leader (retries of an op id not counted)",
            store.increments(),
        );
        counter(
            r,
            "events_applied",
            "Events the increments this node applied as their leader stand for (an aggregated increment counts its events)",
            store.events(),
        );
        let (by_workers, by_thread) = self.ctx.writer.groups_written();
        let groups: Family<WriterLabel, Counter> = Family::default();
        for (writer, value) in [("worker", by_workers), ("thread", by_thread)] {
            groups.get_or_create(&WriterLabel { writer }).inc_by(value);
        }
        r.register(
            "write_groups",
            "Storage writes of queued leads and merges, by who wrote them: a request's async worker (small groups) or the writer thread",
            groups,
        );
        counter(
            r,
            "op_id_duplicates",
            "Increments whose op id this node had applied already (counted once, by the first)",
            store.duplicates(),
        );
        gauge(
            r,
            "op_window_ids",
            "Live op ids this node holds (the exactly-once window)",
            None,
            store.live_op_ids() as i64,
        );
        gauge(
            r,
            "hints_pending",
            "Hinted cells waiting for their replica",
            None,
            status.hints_pending.min(i64::MAX as u64) as i64,
        );
        counter(
            r,
            "hints_written",
            "Cells hinted for replicas that missed a write",
            status.hints_written,
        );
        counter(
            r,
            "hints_replayed",
            "Hinted cells delivered",
            status.hints_replayed,
        );
        counter(
            r,
            "hints_dropped",
            "Hinted cells dropped past the hint window",
            status.hints_dropped,
        );
        counter(
            r,
            "read_repair_cells",
            "Cells sent to replicas found behind by reads and anti-entropy",
            status.read_repairs,
        );
        counter(
            r,
            "speculative_reads",
            "Reads that also asked the next replica because one was late",
            self.ctx.reads.speculated(),
        );
        gauge(
            r,
            "repair_ranges_done",
            "Ranges done by the anti-entropy repair running now",
            None,
            i64::from(status.repair_ranges_done),
        );
        gauge(
            r,
            "repair_ranges",
            "Ranges of the anti-entropy repair running now (0: none)",
            None,
            i64::from(status.repair_ranges_total),
        );
        let repairs = self.repairer.counts();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            r,
            "repair_ranges_repaired",
            "Ranges this node repaired (scheduled and operator repairs)",
            load(&repairs.ranges_repaired),
        );
        counter(
            r,
            "repair_ranges_failed",
            "Range repairs that failed (a replica down or not answering); the schedule retries them",
            load(&repairs.ranges_failed),
        );
        counter(
            r,
            "repair_ranges_busy",
            "Range repairs skipped because another node held the range's lease",
            load(&repairs.ranges_busy),
        );
        counter(
            r,
            "repair_cells",
            "Cells anti-entropy sent to replicas that lacked them",
            load(&repairs.cells),
        );
        counter(
            r,
            "repair_bytes",
            "Bytes of Merkle trees and cells anti-entropy moved",
            load(&repairs.bytes),
        );
        let schedule = schedule_view(&self.repairer);
        let now = schedule.now_ms;
        gauge(
            r,
            "repair_ranges_due",
            "Ranges this node schedules whose repair is due (never repaired, or last repaired more than the interval ago)",
            None,
            schedule
                .ranges
                .iter()
                .filter(|r| r.next_due_ms.is_some_and(|due| due <= now))
                .count() as i64,
        );
        gauge(
            r,
            "repair_oldest_age",
            "Time since the least recently repaired range this node replicates was repaired (0 before any repair)",
            Some(Unit::Seconds),
            schedule
                .ranges
                .iter()
                .filter_map(|r| r.last_repaired_ms)
                .min()
                .map_or(0, |at| (now - at).max(0) / 1000),
        );
        gauge(
            r,
            "connections",
            "Open client and peer connections (both fronts)",
            None,
            i64::from(status.connections),
        );
        counter(
            r,
            "access_refused",
            "Requests and authentication steps refused for who sent them (no, wrong or revoked credentials; a role too low)",
            self.access_refused.load(std::sync::atomic::Ordering::Relaxed),
        );
        counter(
            r,
            "overloaded",
            "Requests and connections refused for load",
            status.overloaded,
        );
        gauge(
            r,
            "uptime",
            "Time since the node started",
            Some(Unit::Seconds),
            (status.uptime_ms / 1000) as i64,
        );
        gauge(
            r,
            "epoch",
            "The metadata epoch this node routes with",
            None,
            status.epoch as i64,
        );
        gauge(
            r,
            "disk",
            "Bytes on disk (tables and WAL, both engines)",
            Some(Unit::Bytes),
            status.disk_bytes as i64,
        );
        let (summaries, summary_bytes) = self.ctx.store.trending().footprint();
        gauge(
            r,
            "trending_summaries",
            "Heavy-hitter summaries held for top queries (one per namespace and bucket)",
            None,
            summaries as i64,
        );
        gauge(
            r,
            "trending",
            "Memory the heavy-hitter summaries hold, about",
            Some(Unit::Bytes),
            summary_bytes as i64,
        );
        gauge(
            r,
            "storage_healthy",
            "1 while both storage engines take writes, 0 when poisoned or the disk is full",
            None,
            i64::from(status.storage == tally_client::StorageHealth::Ok),
        );

        let (c, h) = (store.db().metrics(), self.ctx.hints.storage().metrics());
        engine_counter(
            r,
            "storage_user",
            "Key and value bytes written by the node",
            Some(Unit::Bytes),
            [c.user_bytes, h.user_bytes],
        );
        engine_counter(
            r,
            "storage_wal",
            "Bytes appended to WAL files",
            Some(Unit::Bytes),
            [c.wal_bytes, h.wal_bytes],
        );
        engine_counter(
            r,
            "storage_wal_syncs",
            "WAL fsyncs",
            None,
            [c.wal_syncs, h.wal_syncs],
        );
        engine_counter(
            r,
            "storage_commit_groups",
            "Group commits (one WAL write each)",
            None,
            [c.commit_groups, h.commit_groups],
        );
        engine_counter(
            r,
            "storage_flushes",
            "Memtables flushed to L0",
            None,
            [c.flushes, h.flushes],
        );
        engine_counter(
            r,
            "storage_compactions",
            "Compactions run",
            None,
            [c.compactions, h.compactions],
        );
        engine_counter(
            r,
            "storage_compaction_written",
            "Bytes written by compactions",
            Some(Unit::Bytes),
            [c.compaction_write_bytes, h.compaction_write_bytes],
        );
        engine_counter(
            r,
            "storage_write_stalls",
            "Writes that waited for a flush or compaction",
            None,
            [c.write_stalls, h.write_stalls],
        );
        engine_counter(
            r,
            "storage_write_slowdowns",
            "Write groups slowed because L0 is at its slowdown trigger",
            None,
            [c.write_slowdowns, h.write_slowdowns],
        );
        engine_counter(
            r,
            "storage_block_cache_hits",
            "Data blocks found in the block cache",
            None,
            [c.block_cache_hits, h.block_cache_hits],
        );
        engine_counter(
            r,
            "storage_block_cache_misses",
            "Data blocks read from their files",
            None,
            [c.block_cache_misses, h.block_cache_misses],
        );
        engine_gauge(
            r,
            "storage_memtable",
            "Bytes held by memtables (active and waiting for flush)",
            Some(Unit::Bytes),
            [
                store.db().memtable_bytes() as i64,
                self.ctx.hints.storage().memtable_bytes() as i64,
            ],
        );
        r.register_with_unit(
            "storage_wal_sync_duration",
            "How long WAL fsyncs took",
            Unit::Seconds,
            SyncLatencies([
                store.db().wal_sync_latency(),
                self.ctx.hints.storage().wal_sync_latency(),
            ]),
        );
        let l0 = |levels: Vec<(usize, u64)>| levels.first().map_or(0, |(files, _)| *files as i64);
        engine_gauge(
            r,
            "storage_l0_files",
            "Tables in level 0",
            None,
            [
                l0(store.db().level_summary()),
                l0(self.ctx.hints.storage().level_summary()),
            ],
        );
        engine_gauge(
            r,
            "storage_wal_size",
            "Bytes in the WAL files not yet flushed",
            Some(Unit::Bytes),
            [
                store.db().wal_bytes() as i64,
                self.ctx.hints.storage().wal_bytes() as i64,
            ],
        );

        let up: Family<PeerLabel, Gauge> = Family::default();
        for peer in &status.peers {
            up.get_or_create(&PeerLabel {
                host_id: peer.host_id,
            })
            .set(i64::from(peer.up));
        }
        r.register(
            "peer_up",
            "1 while this node sees the peer up (gossip and connections)",
            up,
        );
        gauge(
            r,
            "peers_up",
            "Peers this node sees up",
            None,
            status.peers.iter().filter(|p| p.up).count() as i64,
        );
        let phi: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        phi.set(self.membership.phi_max());
        r.register(
            "gossip_phi_max",
            "The highest phi (suspicion) among peers gossip holds alive; a peer is convicted past the configured threshold",
            phi,
        );
        gauge(
            r,
            "peers_down",
            "Peers this node sees down",
            None,
            status.peers.iter().filter(|p| !p.up).count() as i64,
        );
        if let Some(topology) = &self.topology {
            let group = topology.group();
            let (term, applied) = group.progress();
            gauge(
                r,
                "raft_term",
                "The metadata group's current Raft term",
                None,
                term as i64,
            );
            gauge(
                r,
                "raft_applied_index",
                "The last metadata log entry applied here",
                None,
                applied as i64,
            );
            gauge(
                r,
                "raft_leader",
                "The metadata group's leader host id (0: none known)",
                None,
                group.leader().unwrap_or(0) as i64,
            );
        }
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            text.clear();
        }
        Some(text)
    }
}
