//! Prints the gossip figures table: for 10, 100 and 1,000 nodes at 0%, 10%
//! and 30% message loss, the time for a state change to reach every node,
//! the time to mark a dead node down everywhere, false downs, and bytes per
//! node per second. `cargo run --release -p tally-gossip --example figures`
//! (`FIGURES_NODES=10,100` to skip the slow 1,000-node rows;
//! `FIGURES_CHURN_S=60` to have every node change an entry that often).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use tally_gossip::simulation::Simulation;
use tally_gossip::NodeId;

fn fmt(d: Option<Duration>) -> String {
    d.map_or("> 120 s".to_owned(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

fn main() {
    let sizes: Vec<u64> = std::env::var("FIGURES_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let churn = std::env::var("FIGURES_CHURN_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    println!("| nodes | loss | formed | change reaches all | dead node down everywhere | false downs | KB/node/s |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for loss in [0.0, 0.1, 0.3] {
            let mut sim = Simulation::new(n, loss, 42);
            if let Some(every) = churn {
                sim = sim.with_churn(every);
            }
            let formed = sim.run_until(Duration::from_secs(120), Simulation::converged);
            let bytes_before = sim.bytes_sent;
            let t0 = sim.now();
            sim.node(7).unwrap().set("status", "leaving");
            let spread = sim.run_until(Duration::from_secs(120), |s| {
                s.live()
                    .all(|g| g.value(NodeId(7), "status") == Some("leaving"))
            });
            sim.run_until(Duration::from_secs(10), |_| false);
            let per_node_per_s = (sim.bytes_sent - bytes_before) as f64
                / n as f64
                / (sim.now() - t0).as_secs_f64()
                / 1024.0;
            sim.kill(5);
            let down = sim.run_until(Duration::from_secs(120), |s| {
                s.live().all(|g| !g.is_alive(NodeId(5)))
            });
            println!(
                "| {n} | {:.0}% | {} | {} | {} | {} | {per_node_per_s:.1} |",
                loss * 100.0,
                fmt(formed),
                fmt(spread),
                fmt(down),
                sim.false_downs
            );
        }
    }
}
