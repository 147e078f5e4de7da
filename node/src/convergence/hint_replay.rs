//! Hint replay: delivering stored hints once their target is up again,
//! and hinting what a crash may have left unreplicated.
//!
//! A loop wakes every `interval`, lists the targets that have hints, and
//! for each one [`Peers`] considers up sends batches of hinted cells as
//! `ReplicaWrite`s, throttled to `cells_per_s` so that a returning node is
//! not flattened by a backlog while it also takes live traffic. A
//! delivered batch is removed from the store (unless newer hints merged
//! into it meanwhile); a failed one stays for the next round. Cells are
//! states merged by the CRDT rule, so a batch delivered twice is harmless.
//!
//! A leader that dies after its own write and before its replicas heard of
//! it leaves a shard state that only it holds, and nothing would ever send
//! it on (Cassandra leaves this to repair). Those writes are the newest
//! ones, so they are in the WAL the engine replays at start:
//! [`hint_recovered`] turns every recovered cell into hints for its other
//! replicas, and replay delivers them like any other hint. (A write whose
//! memtable was flushed before its replication was even sent is not
//! covered; read repair and anti-entropy are.)

use std::sync::Arc;
use std::time::Duration;

use tally_client::{CellState, Request, Response};
use tally_consensus::{ClusterMap, HostId};

use crate::cluster::metadata::Metadata;
use crate::cluster::peers::Peers;
use crate::counter::cell_key;
use crate::counter::cell_merge::valid_for_key;
use crate::replica::hint_store::HintStore;
use crate::replica::store::CounterStore;

/// Hinted handoff (the `[hints]` section of the node's config): whether
/// hints are kept and delivered, how long, and how fast.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HintConfig {
    /// Store hints for replicas that miss a write.
    pub enabled: bool,
    /// Deliver stored hints once their target is back.
    pub replay: bool,
    /// Hints older than this are dropped (default 3 h).
    #[serde(rename = "window_s", with = "crate::units::secs")]
    pub window: Duration,
    /// Time between replay rounds.
    #[serde(rename = "replay_interval_ms", with = "crate::units::millis")]
    pub interval: Duration,
    /// Cells per `ReplicaWrite` of a replay.
    #[serde(rename = "replay_batch_cells")]
    pub batch_cells: usize,
    /// Throttle: cells per second to one target.
    #[serde(rename = "replay_cells_per_s")]
    pub cells_per_s: u64,
    /// Time a delivery waits for its answer.
    #[serde(rename = "replay_timeout_ms", with = "crate::units::millis")]
    pub timeout: Duration,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            enabled: true,
            replay: true,
            window: Duration::from_secs(3 * 3600),
            interval: Duration::from_millis(250),
            batch_cells: 512,
            cells_per_s: 50_000,
            timeout: Duration::from_secs(2),
        }
    }
}

const MAX_BATCHES_PER_ROUND: usize = 4096;
/// Recovered cells hinted per hint-store write.
const RECOVERED_PER_WRITE: usize = 4096;

/// Stores hints, for the other replicas, of every cell the storage engine
/// replayed from its WAL when it opened. Returns the number of cells.
pub fn hint_recovered(
    store: &CounterStore,
    hints: &HintStore,
    map: &ClusterMap,
    self_id: HostId,
) -> tally_storage::Result<u64> {
    let keys = store.db().take_recovered_keys();
    let mut pending: std::collections::HashMap<HostId, Vec<CellState>> = Default::default();
    let mut cells = 0u64;
    for key in keys {
        let Some(token) = cell_key::token_of(&key) else {
            continue;
        };
        let targets: Vec<HostId> = map
            .replicas(token)
            .iter()
            .copied()
            .filter(|&h| h != self_id)
            .collect();
        if targets.is_empty() {
            continue;
        }
        let Some(value) = store.db().get(&key)? else {
            continue;
        };
        if !valid_for_key(&key, &value) {
            continue;
        }
        cells += 1;
        for host in targets {
            let batch = pending.entry(host).or_default();
            batch.push(CellState {
                key: key.clone(),
                value: value.clone(),
            });
            if batch.len() >= RECOVERED_PER_WRITE {
                hints.store(host, map.epoch(), &[&std::mem::take(batch)])?;
            }
        }
    }
    for (host, batch) in pending {
        if !batch.is_empty() {
            hints.store(host, map.epoch(), &[&batch])?;
        }
    }
    Ok(cells)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> tally_storage::Result<T> + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "hint store failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "hint store task failed");
            None
        }
    }
}

/// Replays hints until the process ends.
pub async fn replay_forever(
    hints: Arc<HintStore>,
    peers: Arc<Peers>,
    metadata: Arc<dyn Metadata>,
    config: HintConfig,
) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = hints.clone();
        let Some(targets) = blocking(move || store.targets()).await else {
            continue;
        };
        for target in targets {
            if peers.is_up(target) {
                deliver(&hints, &peers, metadata.as_ref(), &config, target).await;
            }
        }
    }
}

/// Delivers every hint for `target`, or stops at the first failure.
async fn deliver(
    hints: &Arc<HintStore>,
    peers: &Peers,
    metadata: &dyn Metadata,
    config: &HintConfig,
    target: tally_consensus::HostId,
) {
    let mut delivered = 0u64;
    let started = std::time::Instant::now();
    // Bounded so that one target whose hints keep changing cannot hold the
    // loop; the next round picks up the rest.
    for _ in 0..MAX_BATCHES_PER_ROUND {
        let store = hints.clone();
        let max = config.batch_cells;
        let Some(batch) = blocking(move || store.batch(target, max)).await else {
            return;
        };
        if batch.is_empty() {
            break;
        }
        let request = Request::ReplicaWrite {
            epoch: metadata.map().epoch(),
            cells: batch.iter().map(|h| &h.cell).collect(),
        };
        match peers.call(target, &request, config.timeout).await {
            Ok(Response::Ack) => {}
            Ok(other) => {
                tracing::warn!(target = target.0, answer = ?other, "hint delivery refused");
                return;
            }
            Err((e, _)) => {
                tracing::info!(target = target.0, error = %e, "hint delivery failed; will retry");
                return;
            }
        }
        let n = batch.len() as u64;
        let store = hints.clone();
        if blocking(move || store.delivered(&batch)).await.is_none() {
            return;
        }
        delivered += n;
        // Throttle: `delivered` cells may take delivered / rate seconds.
        let due = Duration::from_secs_f64(delivered as f64 / config.cells_per_s.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    if delivered > 0 {
        tracing::info!(
            target = target.0,
            cells = delivered,
            ms = started.elapsed().as_millis() as u64,
            "hints delivered"
        );
    }
}
