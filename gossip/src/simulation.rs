//! [`Simulation`]: many gossipers on a simulated network, in fixed time
//! steps, driven by one seeded random number generator — so every run is
//! reproducible from its seed. Used by the tests and by the figures example
//! (`cargo run --release -p tally-gossip --example figures`).

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::gossiper::{Event, GossipConfig, Gossiper, Message, NodeId};

/// The simulated time step (and one-way message latency).
pub const STEP: Duration = Duration::from_millis(100);

/// A simulated cluster.
#[derive(Debug)]
pub struct Simulation {
    nodes: Vec<Option<Gossiper>>,
    phases: Vec<u128>,
    in_flight: VecDeque<(Duration, NodeId, NodeId, Message)>,
    now: Duration,
    loss: f64,
    rng: rand::rngs::StdRng,
    dead: Vec<bool>,
    config: GossipConfig,
    churn: Option<Duration>,
    /// `Down` events about nodes that were alive.
    pub false_downs: usize,
    /// Approximate bytes of every message sent.
    pub bytes_sent: usize,
    /// The largest message sent.
    pub largest_message: usize,
    /// Bytes sent by message kind.
    pub bytes_by_kind: std::collections::BTreeMap<&'static str, usize>,
}

impl Simulation {
    /// `n` nodes (ids `0..n`, seeds 0, 1, 2) that drop each message with
    /// probability `loss`.
    pub fn new(n: u64, loss: f64, seed: u64) -> Simulation {
        Simulation::with_config(n, loss, seed, GossipConfig::default())
    }

    /// [`Simulation::new`] with every node on `config`.
    pub fn with_config(n: u64, loss: f64, seed: u64, config: GossipConfig) -> Simulation {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let seeds = vec![NodeId(0), NodeId(1), NodeId(2)];
        let nodes = (0..n)
            .map(|i| Some(Gossiper::new(NodeId(i), 1, seeds.clone(), config.clone())))
            .collect();
        let phases = (0..n)
            .map(|_| (STEP * rng.random_range(0..10)).as_millis())
            .collect();
        Simulation {
            nodes,
            phases,
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
            loss,
            rng,
            dead: vec![false; n as usize],
            config,
            churn: None,
            false_downs: 0,
            bytes_sent: 0,
            largest_message: 0,
            bytes_by_kind: std::collections::BTreeMap::new(),
        }
    }

    /// Every node also changes an entry (`load`) every `every`, as real
    /// nodes gossip their disk usage: the background of changes other
    /// changes spread through.
    pub fn with_churn(mut self, every: Duration) -> Simulation {
        self.churn = Some(every);
        self
    }

    /// Simulated time so far.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A live node's gossiper.
    pub fn node(&mut self, i: usize) -> Option<&mut Gossiper> {
        self.nodes.get_mut(i)?.as_mut()
    }

    /// Kills node `i` (it sends and receives nothing).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
        self.dead[i] = true;
    }

    /// Restarts node `i` with a new generation.
    pub fn restart(&mut self, i: usize, generation: u64) {
        self.nodes[i] = Some(Gossiper::new(
            NodeId(i as u64),
            generation,
            vec![NodeId(0)],
            self.config.clone(),
        ));
        self.dead[i] = false;
    }

    /// The live gossipers.
    pub fn live(&self) -> impl Iterator<Item = &Gossiper> {
        self.nodes.iter().flatten()
    }

    fn send(&mut self, from: NodeId, out: Vec<(NodeId, Message)>) {
        for (to, message) in out {
            let bytes = message.approximate_bytes();
            self.bytes_sent += bytes;
            self.largest_message = self.largest_message.max(bytes);
            *self.bytes_by_kind.entry(message.kind()).or_default() += bytes;
            if !self.rng.random_bool(self.loss) {
                self.in_flight
                    .push_back((self.now + STEP, from, to, message));
            }
        }
    }

    /// Advances one step: delivers due messages, ticks due nodes.
    pub fn step(&mut self) {
        self.now += STEP;
        while self
            .in_flight
            .front()
            .is_some_and(|(at, ..)| *at <= self.now)
        {
            let Some((_, from, to, message)) = self.in_flight.pop_front() else {
                break;
            };
            let Some(node) = self.nodes.get_mut(to.0 as usize).and_then(Option::as_mut) else {
                continue;
            };
            let replies = node.receive(from, message, self.now);
            self.send(to, replies);
        }
        for i in 0..self.nodes.len() {
            if self.now.as_millis() % 1000 != self.phases[i] {
                continue;
            }
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            if let Some(every) = self.churn {
                // Each node at its own offset within the period.
                let offset = (every.as_millis() * i as u128 / self.phases.len().max(1) as u128)
                    / 1000
                    * 1000;
                if (self.now.as_millis() + offset) % every.as_millis().max(1000) < 1000 {
                    node.set("load", &self.now.as_millis().to_string());
                }
            }
            let out = node.tick(self.now, &mut self.rng);
            for event in node.take_events() {
                if let Event::Down(d) = event {
                    if !self.dead.get(d.0 as usize).copied().unwrap_or(false) {
                        self.false_downs += 1;
                    }
                }
            }
            self.send(NodeId(i as u64), out);
        }
    }

    /// Steps until `done` holds or `limit` passes; returns the time taken.
    pub fn run_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Simulation) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            self.step();
            if done(self) {
                return Some(self.now - start);
            }
        }
        None
    }

    /// Whether every live node sees every live node up.
    pub fn converged(&self) -> bool {
        let alive: Vec<NodeId> = self.live().map(Gossiper::id).collect();
        self.live().all(|g| alive.iter().all(|n| g.is_alive(*n)))
    }
}
