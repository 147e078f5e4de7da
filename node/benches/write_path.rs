//! The node's write path without the network: what one replicated
//! increment costs in CPU, against the storage engine alone writing the
//! same cells.
//!
//! Three counter stores in one process (host ids 1-3, the default
//! namespace's four rollups, `periodic` durability, WAL on) stand for the
//! three replicas of a key. Each round, store 1 leads a batch of
//! increments (`write_group`), and stores 2 and 3 merge the shard states
//! it hands back, as a replica does with a replica message: the 12 cell
//! updates of a cluster's increment at RF 3. The peer is the engine alone
//! (`tally_storage::Db` with the counter merge operator) taking the same
//! cells as three blind merges each: the ratio is what the node layer
//! (validation, cell keys, lock stripes, own-shard cache, shard sets)
//! costs over storage.
//!
//! Keys are uniform over 100,000, timestamps spread over a day (so most
//! minute cells are new, as in `bench/run.sh`). Single thread; the
//! engine's flushes and compactions run on their own threads. The two
//! workloads alternate, `ROUNDS` times each, on the same cells, and each
//! round prints both and their ratio: the stores grow from round to
//! round, and a noisy stretch of the machine hits both of a round alike.
//!
//! `cargo bench -p tally-node --bench write_path`; environment:
//! `TALLY_BENCH_SCALE` (default 1.0) scales the increments per round.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use tally_client::{CellState, Increment};
use tally_node::{
    CellMerge, Clock, CounterStore, Identity, Namespaces, NodeConfig, StoreLimits, SystemClock,
};
use tally_storage::{Db, Options, WriteBatch};

/// The allocator `tally-node` runs with.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const KEYS: u64 = 100_000;
const BATCH: usize = 16;
const ROUNDS: usize = 5;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The storage settings a node runs with by default (`periodic`).
fn options() -> Options {
    NodeConfig::default().storage.options()
}

fn open_store(dir: &Path, host_id: u32) -> CounterStore {
    CounterStore::open(
        dir,
        options(),
        Namespaces::with([]),
        Identity {
            host_id,
            incarnation: 1,
        },
        Arc::new(SystemClock),
        StoreLimits::default(),
    )
    .unwrap()
}

/// `n` batches of increments, now minus up to a day.
fn batches(n: usize, seed: u64) -> Vec<Vec<Increment>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = SystemClock.now_ms();
    (0..n)
        .map(|_| {
            (0..BATCH)
                .map(|_| Increment {
                    namespace: "events".into(),
                    key: format!("video-{:06}", rng.random_range(0..KEYS)).into_bytes(),
                    timestamp_ms: now - rng.random_range(0..DAY_MS),
                    delta: 1,
                    events: 1,
                    op_id: None,
                })
                .collect()
        })
        .collect()
}

/// Leads every batch on `stores[0]` and merges the states on the others;
/// returns the seconds taken and the cell states handed to the replicas.
fn node_path(stores: &[CounterStore], work: &[Vec<Increment>]) -> (f64, Vec<Vec<CellState>>) {
    let mut shipped = Vec::with_capacity(work.len());
    let start = Instant::now();
    for batch in work {
        let (mut led, written) = stores[0].write_group(&[batch.as_slice()], Vec::new());
        written.unwrap();
        let cells = led.pop().unwrap().cells;
        for replica in &stores[1..] {
            let (_, merged) = replica.write_group(&[], vec![cells.as_slice().into()]);
            merged.unwrap();
        }
        shipped.push(cells);
    }
    (start.elapsed().as_secs_f64(), shipped)
}

/// The same cells as blind merges into three bare engines.
fn engine_path(dbs: &[Db], cells: &[Vec<CellState>]) -> f64 {
    let start = Instant::now();
    for group in cells {
        for db in dbs {
            let mut batch = WriteBatch::new();
            for cell in group {
                batch.merge(cell.key.clone(), cell.value.clone());
            }
            db.write(batch).unwrap();
        }
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let scale: f64 = std::env::var("TALLY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let per_round = ((20_000.0 * scale) as usize).max(1);
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<CounterStore> = (1..=3)
        .map(|h| open_store(&dir.path().join(format!("node{h}")), h))
        .collect();
    let dbs: Vec<Db> = (1..=3)
        .map(|h| {
            Db::open(
                dir.path().join(format!("engine{h}")),
                options(),
                Arc::new(CellMerge),
            )
            .unwrap()
        })
        .collect();
    let increments = (per_round * BATCH) as f64;
    println!(
        "round  stored   node inc/s  engine inc/s  node us/inc  engine us/inc  node/engine time"
    );
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let work = batches(per_round, round as u64);
        let (node_s, shipped) = node_path(&stores, &work);
        let engine_s = engine_path(&dbs, &shipped);
        let ratio = node_s / engine_s;
        ratios.push(ratio);
        println!(
            "{:>5} {:>7} {:>12.0} {:>13.0} {:>12.2} {:>14.2} {:>17.2}x",
            round + 1,
            (round + 1) * per_round * BATCH,
            increments / node_s,
            increments / engine_s,
            node_s * 1e6 / increments,
            engine_s * 1e6 / increments,
            ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median node/engine time: {:.2}x (12 cell updates per increment: 4 rollups x 3 replicas)",
        ratios[ratios.len() / 2]
    );
}
