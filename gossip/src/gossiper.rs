//! [`Gossiper`]: one node's view of the cluster, and the protocol that
//! spreads it — without I/O.
//!
//! The caller owns time, randomness and the network: it calls
//! [`Gossiper::tick`] about once a second and [`Gossiper::receive`] for
//! every message that arrives, and sends the messages both return. The
//! same code runs in a seeded in-process simulation and, in the node, over
//! real sockets. `ALGORITHM.md` in this crate explains the protocol.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::phi::PhiAccrual;

/// Suspects probed directly per round, at most.
const MAX_SUSPECT_PROBES: usize = 16;

/// A node's id (its host id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Live peers contacted per round.
    pub fanout: usize,
    /// Suspicion level at which a peer is marked down.
    pub phi_threshold: f64,
    /// Suspicion level from which a peer is also contacted directly every
    /// round: if it is alive, its answer carries a fresh heartbeat, so a
    /// slow relay path does not get it convicted.
    pub suspect_phi: f64,
    /// Floor of the failure detector's standard deviation.
    pub min_std_dev: Duration,
    /// Silence tolerated on top of the mean interval.
    pub acceptable_pause: Duration,
    /// Chance per round of also contacting a down peer (so a returning node
    /// is seen quickly).
    pub probe_down_probability: f64,
    /// Chance per round of also contacting a seed.
    pub seed_probability: f64,
    /// Most node deltas in one message (bounds message size).
    pub max_deltas: usize,
    /// A peer is convicted only once its detector has seen this many
    /// heartbeat intervals, or after `warmup_silence` without any: a fresh
    /// detector learning the rhythm of heartbeats relayed at random
    /// otherwise convicts on the first irregular gap (the cause of the
    /// false downs of large clusters while they form).
    pub warmup_intervals: usize,
    /// Silence that convicts a peer whose detector is still warming up.
    pub warmup_silence: Duration,
    /// A round that comes this late after the previous one means this node
    /// itself stalled (a GC pause, an overloaded machine, SIGSTOP): no one
    /// is convicted that round and the silence is not held against peers
    /// (Cassandra's pause guard).
    pub local_pause: Duration,
    /// A peer down this long is forgotten (its state dropped), and a
    /// tombstone keeps stale gossip from bringing it back as a ghost.
    pub forget_after: Duration,
    /// How long a tombstone is kept.
    pub tombstone_ttl: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval: Duration::from_secs(1),
            fanout: 3,
            phi_threshold: 8.0,
            suspect_phi: 1.0,
            min_std_dev: Duration::from_millis(300),
            acceptable_pause: Duration::from_millis(1000),
            probe_down_probability: 0.5,
            seed_probability: 0.1,
            max_deltas: 64,
            warmup_intervals: 5,
            warmup_silence: Duration::from_secs(10),
            local_pause: Duration::from_secs(3),
            forget_after: Duration::from_secs(24 * 3600),
            tombstone_ttl: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// What one node says about itself: its generation (bumped on restart),
/// heartbeat (bumped every round) and versioned application entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Raised on every restart of the node.
    pub generation: u64,
    /// Raised every gossip round by the node itself.
    pub heartbeat: u64,
    /// Key -> (value, version).
    pub entries: BTreeMap<String, (String, u64)>,
    /// Highest entry version.
    pub max_version: u64,
}

/// A summary of one node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Whose state.
    pub node: NodeId,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// Its highest entry version.
    pub max_version: u64,
}

/// Newer parts of one node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Whose state.
    pub node: NodeId,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// Entries newer than the receiver has: (key, value, version).
    pub entries: Vec<(String, String, u64)>,
}

/// Gossip messages (scuttlebutt reconciliation in three steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Here is what I know."
    Syn(Vec<Digest>),
    /// "Here is what you lack; send me what I lack."
    Ack {
        /// Newer state for the receiver.
        deltas: Vec<Delta>,
        /// What the sender wants: node and the version it has.
        requests: Vec<Digest>,
    },
    /// "Here is what you asked for."
    Ack2(Vec<Delta>),
}

impl Message {
    /// Approximate size on the wire, for bandwidth figures.
    pub fn approximate_bytes(&self) -> usize {
        let delta = |d: &Delta| {
            24 + d
                .entries
                .iter()
                .map(|(k, v, _)| k.len() + v.len() + 12)
                .sum::<usize>()
        };
        match self {
            Message::Syn(d) => 4 + d.len() * 32,
            Message::Ack { deltas, requests } => {
                8 + deltas.iter().map(delta).sum::<usize>() + requests.len() * 32
            }
            Message::Ack2(deltas) => 4 + deltas.iter().map(delta).sum::<usize>(),
        }
    }
}

/// A change in the liveness view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First heard of this node.
    Joined(NodeId),
    /// Marked up (heartbeats arrive again).
    Up(NodeId),
    /// Marked down (phi above the threshold).
    Down(NodeId),
    /// The node restarted (new generation).
    Restarted(NodeId),
    /// Down longer than `forget_after`: its state was dropped.
    Forgotten(NodeId),
}

#[derive(Debug, Clone)]
struct Peer {
    state: NodeState,
    detector: PhiAccrual,
    alive: bool,
    /// When it was last marked down.
    down_since: Option<Duration>,
    /// When it was last probed directly as a suspect (cleared by a fresh
    /// heartbeat): a conviction needs one, a round old.
    probed_at: Option<Duration>,
}

/// What is left of a forgotten peer: the generation it was forgotten at,
/// and when.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    generation: u64,
    at: Duration,
}

/// One node's gossip state machine.
#[derive(Debug, Clone)]
pub struct Gossiper {
    me: NodeId,
    config: GossipConfig,
    local: NodeState,
    peers: BTreeMap<NodeId, Peer>,
    tombstones: BTreeMap<NodeId, Tombstone>,
    seeds: Vec<NodeId>,
    events: Vec<Event>,
    last_tick: Option<Duration>,
}

impl Gossiper {
    /// A gossiper for node `me`, started for the `generation`-th time.
    pub fn new(me: NodeId, generation: u64, seeds: Vec<NodeId>, config: GossipConfig) -> Gossiper {
        Gossiper {
            me,
            config,
            local: NodeState {
                generation,
                ..NodeState::default()
            },
            peers: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            seeds: seeds.into_iter().filter(|s| *s != me).collect(),
            events: Vec::new(),
            last_tick: None,
        }
    }

    /// Makes `seeds` the nodes contacted when no peer is known (the
    /// members of a cluster map that changed).
    pub fn set_seeds(&mut self, seeds: impl IntoIterator<Item = NodeId>) {
        let me = self.me;
        self.seeds = seeds.into_iter().filter(|s| *s != me).collect();
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Sets one of this node's application entries (address, status, load,
    /// metadata epoch...).
    pub fn set(&mut self, key: &str, value: &str) {
        self.local.max_version += 1;
        self.local
            .entries
            .insert(key.to_owned(), (value.to_owned(), self.local.max_version));
    }

    /// A node's entry as this node knows it.
    pub fn value(&self, node: NodeId, key: &str) -> Option<&str> {
        let state = if node == self.me {
            &self.local
        } else {
            &self.peers.get(&node)?.state
        };
        state.entries.get(key).map(|(v, _)| v.as_str())
    }

    /// Whether `node` is considered up (this node always is).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.peers.get(&node).is_some_and(|p| p.alive)
    }

    /// Known nodes other than this one.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// The generation a peer is known to run.
    pub fn generation(&self, node: NodeId) -> Option<u64> {
        if node == self.me {
            Some(self.local.generation)
        } else {
            self.peers.get(&node).map(|p| p.state.generation)
        }
    }

    /// When a heartbeat of `node` last arrived (gossip time).
    pub fn last_heartbeat(&self, node: NodeId) -> Option<Duration> {
        self.peers.get(&node)?.detector.last_arrival()
    }

    /// The suspicion level of a peer at `now`.
    pub fn phi(&self, node: NodeId, now: Duration) -> f64 {
        self.peers.get(&node).map_or(0.0, |p| p.detector.phi(now))
    }

    /// Liveness changes since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// One round: beat, judge peers, and pick whom to gossip with.
    pub fn tick(&mut self, now: Duration, rng: &mut impl Rng) -> Vec<(NodeId, Message)> {
        self.local.heartbeat += 1;
        let stalled = self
            .last_tick
            .is_some_and(|t| now.saturating_sub(t) > self.config.local_pause);
        self.last_tick = Some(now);
        if stalled {
            // This node was not running: the silence is ours, not theirs.
            for peer in self.peers.values_mut() {
                if peer.alive {
                    peer.detector.reset_arrival(now);
                }
            }
        }
        let config = &self.config;
        for (id, peer) in &mut self.peers {
            let warm = peer.detector.observed() >= config.warmup_intervals
                || peer
                    .detector
                    .last_arrival()
                    .is_some_and(|t| now.saturating_sub(t) > config.warmup_silence);
            // Confirmed: a direct probe went out at least a round ago and
            // brought no heartbeat back (SWIM's lesson).
            let confirmed = peer
                .probed_at
                .is_some_and(|t| now.saturating_sub(t) >= config.interval);
            if !stalled
                && peer.alive
                && warm
                && confirmed
                && peer.detector.phi(now) > config.phi_threshold
            {
                peer.alive = false;
                peer.down_since = Some(now);
                self.events.push(Event::Down(*id));
            }
        }
        self.forget(now);
        let live: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(id, _)| *id)
            .collect();
        let mut targets: Vec<NodeId> = live
            .choose_multiple(rng, self.config.fanout)
            .copied()
            .collect();
        let down: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.alive)
            .map(|(id, _)| *id)
            .collect();
        if !down.is_empty() && rng.random_bool(self.config.probe_down_probability) {
            targets.extend(down.choose(rng));
        }
        // Suspects (phi past `suspect_phi`, not yet convicted) are asked
        // directly: a live one answers with its own fresh heartbeat, so a
        // slow relay path alone does not get it convicted. The most
        // suspicious first, a bounded number per round.
        let mut suspects: Vec<(f64, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(id, p)| (p.detector.phi(now), *id))
            .filter(|(phi, _)| *phi > self.config.suspect_phi)
            .collect();
        suspects.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, id) in suspects.into_iter().take(MAX_SUSPECT_PROBES) {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.probed_at.get_or_insert(now);
            }
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
        let seed_due = targets.is_empty() || rng.random_bool(self.config.seed_probability);
        if seed_due {
            if let Some(seed) = self.seeds.choose(rng) {
                if !targets.contains(seed) {
                    targets.push(*seed);
                }
            }
        }
        let syn = Message::Syn(self.digests());
        targets.into_iter().map(|t| (t, syn.clone())).collect()
    }

    /// Drops peers down longer than `forget_after` (keeping tombstones) and
    /// tombstones older than `tombstone_ttl`.
    fn forget(&mut self, now: Duration) {
        let forget_after = self.config.forget_after;
        let gone: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.alive
                    && p.down_since
                        .is_some_and(|t| now.saturating_sub(t) > forget_after)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(peer) = self.peers.remove(&id) {
                self.tombstones.insert(
                    id,
                    Tombstone {
                        generation: peer.state.generation,
                        at: now,
                    },
                );
                self.events.push(Event::Forgotten(id));
            }
        }
        let ttl = self.config.tombstone_ttl;
        self.tombstones
            .retain(|_, t| now.saturating_sub(t.at) <= ttl);
    }

    /// Whether a peer is forgotten (and not back with a newer generation).
    pub fn is_forgotten(&self, node: NodeId) -> bool {
        self.tombstones.contains_key(&node) && !self.peers.contains_key(&node)
    }

    fn digest_of(node: NodeId, s: &NodeState) -> Digest {
        Digest {
            node,
            generation: s.generation,
            heartbeat: s.heartbeat,
            max_version: s.max_version,
        }
    }

    fn digests(&self) -> Vec<Digest> {
        std::iter::once(Self::digest_of(self.me, &self.local))
            .chain(
                self.peers
                    .iter()
                    .map(|(id, p)| Self::digest_of(*id, &p.state)),
            )
            .collect()
    }

    fn state(&self, node: NodeId) -> Option<&NodeState> {
        if node == self.me {
            Some(&self.local)
        } else {
            self.peers.get(&node).map(|p| &p.state)
        }
    }

    /// What `node`'s state holds beyond (`generation`, `max_version`).
    fn delta_since(&self, node: NodeId, generation: u64, max_version: u64) -> Option<Delta> {
        let s = self.state(node)?;
        let since = if s.generation == generation {
            max_version
        } else {
            0
        };
        Some(Delta {
            node,
            generation: s.generation,
            heartbeat: s.heartbeat,
            entries: s
                .entries
                .iter()
                .filter(|(_, (_, v))| *v > since)
                .map(|(k, (value, v))| (k.clone(), value.clone(), *v))
                .collect(),
        })
    }

    /// Handles a message from `from`; returns the replies.
    pub fn receive(
        &mut self,
        from: NodeId,
        message: Message,
        now: Duration,
    ) -> Vec<(NodeId, Message)> {
        match message {
            Message::Syn(digests) => {
                let mut deltas = Vec::new();
                let mut requests = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for d in &digests {
                    seen.insert(d.node);
                    match self.state(d.node).map(|s| Self::digest_of(d.node, s)) {
                        None => requests.push(Digest {
                            node: d.node,
                            generation: 0,
                            heartbeat: 0,
                            max_version: 0,
                        }),
                        Some(mine) => {
                            let theirs_newer =
                                (d.generation, d.max_version) > (mine.generation, mine.max_version);
                            let mine_newer = (mine.generation, mine.max_version)
                                > (d.generation, d.max_version)
                                || (mine.generation == d.generation
                                    && mine.heartbeat > d.heartbeat);
                            if theirs_newer {
                                requests.push(mine);
                            } else if mine_newer {
                                deltas.extend(self.delta_since(
                                    d.node,
                                    d.generation,
                                    d.max_version,
                                ));
                            }
                        }
                    }
                }
                // Nodes the sender has never heard of.
                let unknown: Vec<NodeId> = std::iter::once(self.me)
                    .chain(self.peers.keys().copied())
                    .filter(|n| !seen.contains(n))
                    .collect();
                for node in unknown {
                    deltas.extend(self.delta_since(node, 0, 0));
                }
                // This node's own state first: the cap must never cut it,
                // since a direct `Syn` to a suspect exists to fetch its
                // fresh heartbeat.
                if let Some(own) = deltas.iter().position(|d| d.node == self.me) {
                    deltas[..=own].rotate_right(1);
                }
                deltas.truncate(self.config.max_deltas);
                // Digests carry heartbeats: a newer one is fresh evidence
                // that its node is alive, without waiting for a delta (which
                // is capped per message).
                for d in &digests {
                    let known = self
                        .peers
                        .get(&d.node)
                        .map(|p| (p.state.generation, p.state.heartbeat));
                    if known.is_some_and(|(g, h)| g == d.generation && d.heartbeat > h) {
                        let beat = Delta {
                            node: d.node,
                            generation: d.generation,
                            heartbeat: d.heartbeat,
                            entries: Vec::new(),
                        };
                        self.apply(beat, now);
                    }
                }
                vec![(from, Message::Ack { deltas, requests })]
            }
            Message::Ack { deltas, requests } => {
                for d in deltas {
                    self.apply(d, now);
                }
                let mut replies: Vec<Delta> = requests
                    .iter()
                    .filter_map(|r| self.delta_since(r.node, r.generation, r.max_version))
                    .collect();
                replies.truncate(self.config.max_deltas);
                if replies.is_empty() {
                    Vec::new()
                } else {
                    vec![(from, Message::Ack2(replies))]
                }
            }
            Message::Ack2(deltas) => {
                for d in deltas {
                    self.apply(d, now);
                }
                Vec::new()
            }
        }
    }

    fn apply(&mut self, delta: Delta, now: Duration) {
        if delta.node == self.me {
            return;
        }
        // A forgotten node comes back only as a new life (a higher
        // generation); echoes of its old state are ghosts.
        if let Some(t) = self.tombstones.get(&delta.node) {
            if delta.generation <= t.generation {
                return;
            }
            self.tombstones.remove(&delta.node);
        }
        let config = &self.config;
        let peer = self.peers.entry(delta.node).or_insert_with(|| {
            self.events.push(Event::Joined(delta.node));
            Peer {
                state: NodeState {
                    generation: delta.generation,
                    ..NodeState::default()
                },
                detector: PhiAccrual::new(
                    config.interval,
                    config.min_std_dev,
                    config.acceptable_pause,
                ),
                alive: false,
                down_since: None,
                probed_at: None,
            }
        });
        if delta.generation < peer.state.generation {
            return; // an echo of an earlier life
        }
        if delta.generation > peer.state.generation {
            peer.state = NodeState {
                generation: delta.generation,
                ..NodeState::default()
            };
            peer.detector.reset_arrival(now);
            self.events.push(Event::Restarted(delta.node));
        }
        for (key, value, version) in delta.entries {
            let newer = peer
                .state
                .entries
                .get(&key)
                .is_none_or(|(_, v)| version > *v);
            if newer {
                peer.state.max_version = peer.state.max_version.max(version);
                peer.state.entries.insert(key, (value, version));
            }
        }
        if delta.heartbeat > peer.state.heartbeat {
            peer.state.heartbeat = delta.heartbeat;
            peer.detector.heartbeat(now);
            peer.probed_at = None;
            if !peer.alive {
                peer.alive = true;
                peer.down_since = None;
                self.events.push(Event::Up(delta.node));
            }
        }
    }
}
