//! Seeded in-process simulation: one property per test; every failure
//! names its seed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use tally_gossip::simulation::Simulation;
use tally_gossip::NodeId;

#[test]
fn a_cluster_forms_and_has_no_false_downs_without_loss() {
    for n in [10, 50] {
        for seed in 0..3 {
            let mut sim = Simulation::new(n, 0.0, seed);
            let formed = sim.run_until(Duration::from_secs(60), Simulation::converged);
            assert!(
                formed.is_some(),
                "n={n} seed={seed}: cluster did not form in 60 s"
            );
            sim.run_until(Duration::from_secs(60), |_| false);
            assert_eq!(
                sim.false_downs, 0,
                "n={n} seed={seed}: false downs without loss"
            );
        }
    }
}

#[test]
fn a_state_change_reaches_every_node() {
    for (n, loss) in [(10, 0.0), (50, 0.0), (50, 0.1), (50, 0.3)] {
        let seed = n + (loss * 100.0) as u64;
        let mut sim = Simulation::new(n, loss, seed);
        sim.run_until(Duration::from_secs(60), Simulation::converged)
            .unwrap();
        sim.node(7).unwrap().set("status", "leaving");
        let took = sim
            .run_until(Duration::from_secs(60), |s| {
                s.live()
                    .all(|g| g.value(NodeId(7), "status") == Some("leaving"))
            })
            .unwrap_or_else(|| {
                panic!("n={n} loss={loss} seed={seed}: change did not spread in 60 s")
            });
        println!("n={n} loss={loss}: state change reached all nodes in {took:?}");
        assert!(
            took < Duration::from_secs(15),
            "n={n} loss={loss} seed={seed}: {took:?}"
        );
    }
}

#[test]
fn a_dead_node_is_marked_down_everywhere_and_its_restart_seen() {
    for (n, loss) in [(10, 0.0), (50, 0.0), (50, 0.1)] {
        let seed = 100 + n;
        let mut sim = Simulation::new(n, loss, seed);
        sim.run_until(Duration::from_secs(60), Simulation::converged)
            .unwrap();
        sim.run_until(Duration::from_secs(20), |_| false);
        let victim = NodeId(5);
        sim.kill(5);
        let took = sim
            .run_until(Duration::from_secs(60), |s| {
                s.live().all(|g| !g.is_alive(victim))
            })
            .unwrap_or_else(|| {
                panic!("n={n} loss={loss} seed={seed}: dead node not marked down in 60 s")
            });
        println!("n={n} loss={loss}: dead node marked down everywhere in {took:?}");
        sim.restart(5, 2);
        sim.node(5).unwrap().set("status", "normal");
        let back = sim
            .run_until(Duration::from_secs(60), |s| {
                s.live()
                    .all(|g| g.is_alive(victim) && g.generation(victim) == Some(2))
            })
            .unwrap_or_else(|| panic!("n={n} loss={loss} seed={seed}: restart not seen in 60 s"));
        println!("n={n} loss={loss}: restarted node up everywhere in {back:?}");
        if loss == 0.0 {
            assert_eq!(sim.false_downs, 0, "n={n} seed={seed}");
        }
    }
}
