//! Ownership spread and data moved for the token allocator, as the
//! metadata assigns tokens (one join at a time, 16 vnodes, RF 3).
//!
//! `cargo run --release -p tally-consensus --example ownership`

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use rand::SeedableRng;
use tally_consensus::{ClusterState, Command, HostId};

fn grow(state: &mut ClusterState, rng: &mut rand::rngs::StdRng) {
    let tokens = state.allocate_tokens(16, None, rng);
    let host = state.next_host_id.max(1);
    let command = if state.cluster_name.is_none() {
        Command::Bootstrap {
            cluster_name: "c".into(),
            replication_factor: 3,
            address: "n1".into(),
            rack: None,
            tokens,
        }
    } else {
        Command::Join {
            cluster_name: "c".into(),
            address: format!("n{host}"),
            rack: None,
            tokens,
        }
    };
    state.apply(&command);
    state.apply(&Command::FinishJoin { host });
}

fn main() {
    println!("nodes  max/mean  min/mean  stddev/mean  copies moved by the next join");
    for seed in [1u64, 2, 3] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = ClusterState::default();
        for n in 1..=30u64 {
            grow(&mut state, &mut rng);
            if ![3, 4, 5, 10, 30].contains(&n) {
                continue;
            }
            let map = state.cluster_map().unwrap();
            let owned = map.ring().ownership(3);
            let values: Vec<f64> = owned.values().copied().collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let max = values.iter().copied().fold(f64::MIN, f64::max);
            let min = values.iter().copied().fold(f64::MAX, f64::min);
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            let mut next = state.clone();
            grow(&mut next, &mut rng.clone());
            let after = next.cluster_map().unwrap();
            let moved = after.ring().ownership(3)[&HostId(n + 1)] / 3.0;
            println!(
                "{n:>5}  {:>8.3}  {:>8.3}  {:>11.3}  {moved:.3} (ideal {:.3})  seed {seed}",
                max / mean,
                min / mean,
                var.sqrt() / mean,
                1.0 / (n as f64 + 1.0)
            );
        }
    }
}
