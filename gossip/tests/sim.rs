//! Seeded in-process simulation: N gossipers on a simulated network with
//! message loss, in 100 ms steps. Each test states one property; every
//! failure prints its seed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tally_gossip::{Event, GossipConfig, Gossiper, Message, NodeId};

const STEP: Duration = Duration::from_millis(100);

struct Sim {
    nodes: Vec<Option<Gossiper>>,
    /// Each node ticks when `now % 1 s == phase`.
    phases: Vec<Duration>,
    in_flight: VecDeque<(Duration, NodeId, NodeId, Message)>,
    now: Duration,
    loss: f64,
    rng: rand::rngs::StdRng,
    false_downs: usize,
    bytes_sent: usize,
}

impl Sim {
    fn new(n: u64, loss: f64, seed: u64) -> Sim {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let seeds = vec![NodeId(0), NodeId(1), NodeId(2)];
        let nodes = (0..n)
            .map(|i| {
                Some(Gossiper::new(
                    NodeId(i),
                    1,
                    seeds.clone(),
                    GossipConfig::default(),
                ))
            })
            .collect();
        let phases = (0..n).map(|_| STEP * rng.random_range(0..10)).collect();
        Sim {
            nodes,
            phases,
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
            loss,
            rng,
            false_downs: 0,
            bytes_sent: 0,
        }
    }

    fn send(&mut self, from: NodeId, out: Vec<(NodeId, Message)>) {
        for (to, message) in out {
            self.bytes_sent += message.approximate_bytes();
            if !self.rng.random_bool(self.loss) {
                self.in_flight
                    .push_back((self.now + STEP, from, to, message));
            }
        }
    }

    fn step(&mut self, dead: &[u64]) {
        self.now += STEP;
        while self
            .in_flight
            .front()
            .is_some_and(|(at, ..)| *at <= self.now)
        {
            let (_, from, to, message) = self.in_flight.pop_front().unwrap();
            let Some(node) = self.nodes[to.0 as usize].as_mut() else {
                continue;
            };
            let replies = node.receive(from, message, self.now);
            self.send(to, replies);
        }
        for i in 0..self.nodes.len() {
            if self.now.as_millis() % 1000 != self.phases[i].as_millis() {
                continue;
            }
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            let out = node.tick(self.now, &mut self.rng);
            for event in node.take_events() {
                if let Event::Down(d) = event {
                    if !dead.contains(&d.0) {
                        self.false_downs += 1;
                    }
                }
            }
            self.send(NodeId(i as u64), out);
        }
    }

    fn live(&self) -> impl Iterator<Item = &Gossiper> {
        self.nodes.iter().flatten()
    }

    /// Runs until `done` holds or `limit` passes; returns the time taken.
    fn run_until(
        &mut self,
        limit: Duration,
        dead: &[u64],
        done: impl Fn(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            self.step(dead);
            if done(self) {
                return Some(self.now - start);
            }
        }
        None
    }
}

fn everyone_knows_everyone(sim: &Sim) -> bool {
    let n = sim.nodes.len() as u64;
    sim.live().all(|g| (0..n).all(|j| g.is_alive(NodeId(j))))
}

#[test]
fn a_cluster_forms_and_has_no_false_downs_without_loss() {
    for n in [10, 50] {
        for seed in 0..3 {
            let mut sim = Sim::new(n, 0.0, seed);
            let formed = sim.run_until(Duration::from_secs(60), &[], everyone_knows_everyone);
            assert!(
                formed.is_some(),
                "n={n} seed={seed}: cluster did not form in 60 s"
            );
            sim.run_until(Duration::from_secs(60), &[], |_| false);
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
        let mut sim = Sim::new(n, loss, seed);
        sim.run_until(Duration::from_secs(60), &[], everyone_knows_everyone)
            .unwrap();
        sim.nodes[7].as_mut().unwrap().set("status", "leaving");
        let took = sim
            .run_until(Duration::from_secs(60), &[], |s| {
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
        let mut sim = Sim::new(n, loss, seed);
        sim.run_until(Duration::from_secs(60), &[], everyone_knows_everyone)
            .unwrap();
        sim.run_until(Duration::from_secs(20), &[], |_| false);
        let victim = NodeId(5);
        sim.nodes[5] = None;
        let took = sim
            .run_until(Duration::from_secs(60), &[5], |s| {
                s.live().all(|g| !g.is_alive(victim))
            })
            .unwrap_or_else(|| {
                panic!("n={n} loss={loss} seed={seed}: dead node not marked down in 60 s")
            });
        println!("n={n} loss={loss}: dead node marked down everywhere in {took:?}");
        // It restarts with a new generation: seen as restarted and up.
        let mut reborn = Gossiper::new(victim, 2, vec![NodeId(0)], GossipConfig::default());
        reborn.set("status", "normal");
        sim.nodes[5] = Some(reborn);
        let back = sim
            .run_until(Duration::from_secs(60), &[], |s| {
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
