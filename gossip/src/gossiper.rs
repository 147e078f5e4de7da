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
    /// Most digests of other nodes in one `Syn`: past this many known
    /// nodes, a `SynWindow` carries a quarter as many, rotating through
    /// them (after the nodes whose state changed lately), and the
    /// heartbeats in a few bytes each, so a message stays bounded.
    pub max_digests: usize,
    /// Most heartbeats in one `SynWindow` (a few bytes each): past this
    /// many nodes they rotate too.
    pub max_beats: usize,
    /// Peers asked to probe a suspect on this node's behalf each round
    /// (SWIM's ping-req), besides the direct probe: a suspect whose direct
    /// path is lossy or broken still answers through them.
    pub indirect_probes: usize,
    /// Peers a node forwards a change it just learned to, at once.
    pub forward_changes: usize,
    /// Rounds a suspect must have been probed, directly and indirectly,
    /// without a fresh heartbeat coming back, before it can be convicted.
    pub confirm_rounds: u32,
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
            max_digests: 32,
            max_beats: 2048,
            indirect_probes: 4,
            confirm_rounds: 2,
            forward_changes: 2,
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

/// One node's heartbeat in a [`Message::SynWindow`]: a few bytes on the
/// wire (the node as a difference from the previous one, the low byte of
/// its generation, the heartbeat as a varint), against 32 for a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Whose heartbeat.
    pub node: NodeId,
    /// The low byte of its generation: a heartbeat counts only against
    /// the generation it was raised in.
    pub generation_tag: u8,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// The low byte of its highest entry version: when it differs from
    /// the receiver's, one of the two has entries the other lacks.
    pub version_tag: u8,
}

impl Beat {
    /// `node`'s beat as `state` stands.
    pub fn of(node: NodeId, state: &NodeState) -> Beat {
        Beat {
            node,
            generation_tag: state.generation as u8,
            heartbeat: state.heartbeat,
            version_tag: state.max_version as u8,
        }
    }
}

/// Bytes of an unsigned LEB128 varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a beat list on the wire.
pub fn beats_len(beats: &[Beat]) -> usize {
    let mut previous = 0u64;
    let mut bytes = 4;
    for b in beats {
        bytes += varint_len(b.node.0.wrapping_sub(previous)) + 2 + varint_len(b.heartbeat);
        previous = b.node.0;
    }
    bytes
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

/// Gossip messages: scuttlebutt reconciliation in three steps, and the
/// probes of suspects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Here is what I know" (every node the sender knows).
    Syn(Vec<Digest>),
    /// "Here is what I know", for clusters past `max_digests` nodes:
    /// full digests of the sender, of nodes that changed lately and of a
    /// window rotating through the rest, and the heartbeats of (up to
    /// `max_beats`) nodes in a few bytes each.
    SynWindow {
        /// The state of nodes whose entries changed lately (pushed rather
        /// than offered, so a change spreads in one message per hop).
        deltas: Vec<Delta>,
        /// Full digests (versions), a bounded number.
        digests: Vec<Digest>,
        /// Heartbeats, in ascending node order.
        beats: Vec<Beat>,
        /// Whether `beats` lists every node the sender knows (so a node
        /// missing there is one it has never heard of).
        complete: bool,
        /// Nodes the sender convicted lately, with the last heartbeat it
        /// knew: a receiver that knows none newer probes them at once.
        downs: Vec<Beat>,
    },
    /// "Are you alive?" Answered with `ProbeAck`. `on_behalf_of`: the
    /// node that asked the sender to probe (an indirect probe).
    Probe {
        /// Who the answer is for, if not the sender.
        on_behalf_of: Option<NodeId>,
    },
    /// "I am": the prober's answer, carrying its fresh heartbeat (which
    /// the sender forwards to `on_behalf_of` as an `Ack2`).
    ProbeAck {
        /// Who the answer is for, if not the receiver.
        on_behalf_of: Option<NodeId>,
        /// The answering node's heartbeat (no entries).
        heartbeat: Delta,
    },
    /// "Probe `target` for me" (SWIM's ping-req).
    ProbeRequest {
        /// The suspect.
        target: NodeId,
    },
    /// "Here is what you lack; send me what I lack."
    Ack {
        /// Newer state for the receiver.
        deltas: Vec<Delta>,
        /// What the sender wants: node and the version it has.
        requests: Vec<Digest>,
    },
    /// "Here is what you asked for."
    Ack2(Vec<Delta>),
    /// The `Ack` to a `SynWindow`: as `Ack`, with the heartbeats the
    /// receiver had newer as beats rather than deltas.
    AckWindow {
        /// Newer state for the receiver.
        deltas: Vec<Delta>,
        /// What the sender wants.
        requests: Vec<Digest>,
        /// Newer heartbeats for the receiver.
        beats: Vec<Beat>,
    },
}

impl Message {
    /// The message's name (`Syn`, `AckWindow`, ...), for figures.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Syn(_) => "Syn",
            Message::SynWindow { .. } => "SynWindow",
            Message::Ack { .. } => "Ack",
            Message::AckWindow { .. } => "AckWindow",
            Message::Ack2(_) => "Ack2",
            Message::Probe { .. } => "Probe",
            Message::ProbeAck { .. } => "ProbeAck",
            Message::ProbeRequest { .. } => "ProbeRequest",
        }
    }

    /// Approximate size on the wire, for bandwidth figures.
    pub fn approximate_bytes(&self) -> usize {
        let delta = |d: &Delta| {
            28 + d
                .entries
                .iter()
                .map(|(k, v, _)| k.len() + v.len() + 12)
                .sum::<usize>()
        };
        match self {
            Message::Syn(d) => 4 + d.len() * 32,
            Message::SynWindow {
                deltas,
                digests,
                beats,
                downs,
                ..
            } => {
                10 + deltas.iter().map(delta).sum::<usize>()
                    + digests.len() * 32
                    + beats_len(beats)
                    + beats_len(downs)
            }
            Message::Probe { .. } => 10,
            Message::ProbeAck { heartbeat, .. } => 10 + delta(heartbeat),
            Message::ProbeRequest { .. } => 9,
            Message::Ack { deltas, requests } => {
                8 + deltas.iter().map(delta).sum::<usize>() + requests.len() * 32
            }
            Message::Ack2(deltas) => 4 + deltas.iter().map(delta).sum::<usize>(),
            Message::AckWindow {
                deltas,
                requests,
                beats,
            } => {
                9 + deltas.iter().map(delta).sum::<usize>() + requests.len() * 32 + beats_len(beats)
            }
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
    /// When it was first probed as a suspect (cleared by a fresh
    /// heartbeat): a conviction needs probes `confirm_rounds` old.
    probed_at: Option<Duration>,
    /// When its entries or generation last changed here: such nodes are
    /// pushed in windows for a while, so changes spread fast.
    changed_at: Duration,
    /// Other nodes convicted it, knowing no heartbeat newer than this
    /// node's (cleared by a fresh heartbeat): it is probed at once, and
    /// convicted on failed probes from the suspect level up (after one
    /// round of them once two nodes told).
    hints: u8,
    /// The first node that told.
    hinted_by: Option<NodeId>,
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
    /// Where the next digest window starts in the peer list.
    cursor: Option<NodeId>,
    /// Where the next window of heartbeats starts (past `max_beats`).
    beat_cursor: Option<NodeId>,
    /// Peers this node convicted lately, and when: windows tell others.
    convicted: BTreeMap<NodeId, Duration>,
    /// When this node's own entries last changed (pushed in windows for
    /// a while, like a peer's).
    changed_at: Option<Duration>,
    /// Peers whose entries the message being handled made newer.
    learned: Vec<NodeId>,
}

/// A 64-bit mix (splitmix's finaliser).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Rounds a node whose entries changed is pushed in windows.
const HOT_ROUNDS: u32 = 4;
/// Nodes pushed per `SynWindow`, the latest changes first.
const MAX_HOT_DELTAS: usize = 8;

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
            cursor: None,
            beat_cursor: None,
            convicted: BTreeMap::new(),
            changed_at: None,
            learned: Vec::new(),
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
        self.changed_at = Some(self.last_tick.unwrap_or_default());
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
            // Confirmed: probes (direct and through others) have gone out
            // for `confirm_rounds` rounds and brought no heartbeat back
            // (SWIM's lesson).
            let rounds = if peer.hints >= 2 {
                1
            } else {
                config.confirm_rounds
            };
            let confirmed = peer
                .probed_at
                .is_some_and(|t| now.saturating_sub(t) >= config.interval * rounds);
            let phi = peer.detector.phi(now);
            let doubted =
                phi > config.phi_threshold || (peer.hints > 0 && phi > config.suspect_phi);
            if !stalled && peer.alive && warm && confirmed && doubted {
                peer.alive = false;
                peer.down_since = Some(now);
                self.events.push(Event::Down(*id));
                self.convicted.insert(*id, now);
            }
        }
        let told_for = config.interval * HOT_ROUNDS;
        self.convicted
            .retain(|_, at| now.saturating_sub(*at) < told_for);
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
        let seed_due = targets.is_empty() || rng.random_bool(self.config.seed_probability);
        if seed_due {
            if let Some(seed) = self.seeds.choose(rng) {
                if !targets.contains(seed) {
                    targets.push(*seed);
                }
            }
        }
        let mut out: Vec<(NodeId, Message)> =
            targets.into_iter().map(|t| (t, self.syn(now))).collect();
        // Suspects (phi past `suspect_phi`, not yet convicted) are probed
        // directly and through `indirect_probes` other live peers: a live
        // one answers with its own fresh heartbeat, so neither a slow
        // relay path nor a lossy direct one alone gets it convicted. The
        // most suspicious first, a bounded number per round.
        let mut suspects: Vec<(f64, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.alive)
            .filter(|(_, p)| p.hints > 0 || p.detector.phi(now) > self.config.suspect_phi)
            .map(|(id, p)| (p.detector.phi(now), *id))
            .collect();
        suspects.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, id) in suspects.into_iter().take(MAX_SUSPECT_PROBES) {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.probed_at.get_or_insert(now);
            }
            out.push((id, Message::Probe { on_behalf_of: None }));
            let helpers: Vec<NodeId> = live.iter().copied().filter(|h| *h != id).collect();
            for helper in helpers.choose_multiple(rng, self.config.indirect_probes) {
                out.push((*helper, Message::ProbeRequest { target: id }));
            }
        }
        out
    }

    /// A `Syn` for one target: every digest while they fit in
    /// `max_digests`; past that a `SynWindow`: this node's own digest, the
    /// nodes that changed lately, the next window of the rest (a rotation
    /// through them all), and everyone's heartbeats (up to `max_beats`,
    /// also rotating).
    fn syn(&mut self, now: Duration) -> Message {
        let max = self.config.max_digests;
        if self.peers.len() <= max {
            return Message::Syn(self.digests());
        }
        let window_digests = (max / 4).max(2);
        let hot_for = self.config.interval * HOT_ROUNDS;
        let mut hot: Vec<(Duration, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.changed_at) < hot_for)
            .map(|(id, p)| (p.changed_at, *id))
            .collect();
        hot.sort_by_key(|h| std::cmp::Reverse(h.0));
        hot.truncate(MAX_HOT_DELTAS);
        let hot: Vec<NodeId> = hot.into_iter().map(|(_, id)| id).collect();
        let own_changed = self
            .changed_at
            .is_some_and(|t| now.saturating_sub(t) < hot_for);
        let deltas = own_changed
            .then_some(self.me)
            .into_iter()
            .chain(hot.iter().copied())
            .filter_map(|id| self.delta_since(id, 0, 0))
            .collect();
        let mut digests: Vec<Digest> = Vec::with_capacity(window_digests + 1);
        digests.push(Self::digest_of(self.me, &self.local));
        let (window, next) = self.rotation(self.cursor, window_digests, &hot);
        self.cursor = next;
        for id in &window {
            if let Some(p) = self.peers.get(id) {
                digests.push(Self::digest_of(*id, &p.state));
            }
        }
        let max_beats = self.config.max_beats;
        let complete = self.peers.len() <= max_beats;
        let mut beat_nodes = if complete {
            self.peers.keys().copied().collect()
        } else {
            let (nodes, next) = self.rotation(self.beat_cursor, max_beats, &[]);
            self.beat_cursor = next;
            nodes
        };
        beat_nodes.sort();
        let beats = beat_nodes
            .into_iter()
            .filter_map(|id| Some(Beat::of(id, &self.peers.get(&id)?.state)))
            .collect();
        let downs = self
            .convicted
            .keys()
            .filter_map(|id| Some(Beat::of(*id, &self.peers.get(id)?.state)))
            .collect();
        Message::SynWindow {
            deltas,
            digests,
            beats,
            complete,
            downs,
        }
    }

    /// The next `n` peers in id order from `cursor` (wrapping), skipping
    /// `except`, and where the following rotation starts.
    fn rotation(
        &self,
        cursor: Option<NodeId>,
        n: usize,
        except: &[NodeId],
    ) -> (Vec<NodeId>, Option<NodeId>) {
        let start = cursor.unwrap_or(NodeId(0));
        let picked: Vec<NodeId> = self
            .peers
            .range(start..)
            .chain(self.peers.range(..start))
            .map(|(id, _)| *id)
            .filter(|id| !except.contains(id))
            .take(n)
            .collect();
        let next = picked.last().and_then(|last| {
            self.peers
                .range((std::ops::Bound::Excluded(*last), std::ops::Bound::Unbounded))
                .next()
                .map(|(id, _)| *id)
        });
        (picked, next)
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
        let mut out = self.answer(from, message, now);
        // Entries learned just now go on at once to a few peers (picked
        // by hash, as this call has no random source), so a change
        // spreads hop by hop at the network's pace, not a round's.
        let learned = std::mem::take(&mut self.learned);
        if self.config.forward_changes > 0 && !learned.is_empty() {
            let live: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(id, p)| p.alive && **id != from)
                .map(|(id, _)| *id)
                .collect();
            for node in learned {
                let Some(delta) = self.delta_since(node, 0, 0) else {
                    continue;
                };
                let version = self.state(node).map_or(0, |s| s.max_version);
                for k in 0..self.config.forward_changes.min(live.len()) {
                    let h = mix(self.me.0
                        ^ node.0.rotate_left(17)
                        ^ version.rotate_left(31)
                        ^ k as u64);
                    let to = live[(h % live.len() as u64) as usize];
                    if to != node {
                        out.push((to, Message::Ack2(vec![delta.clone()])));
                    }
                }
            }
        }
        out
    }

    fn answer(&mut self, from: NodeId, message: Message, now: Duration) -> Vec<(NodeId, Message)> {
        match message {
            Message::Syn(digests) => self.answer_syn(from, digests, true, now),
            Message::SynWindow {
                deltas,
                digests,
                beats,
                complete,
                downs,
            } => {
                for d in deltas {
                    self.apply(d, now);
                }
                let mut replies = if digests.is_empty() && beats.is_empty() {
                    Vec::new() // a forwarded conviction: nothing to answer
                } else {
                    self.answer_window(from, digests, beats, complete, now)
                };
                for b in downs {
                    replies.extend(self.take_hint(from, b, now));
                }
                replies
            }
            Message::Probe { on_behalf_of } => {
                let heartbeat = Delta {
                    node: self.me,
                    generation: self.local.generation,
                    heartbeat: self.local.heartbeat,
                    entries: Vec::new(),
                };
                vec![(
                    from,
                    Message::ProbeAck {
                        on_behalf_of,
                        heartbeat,
                    },
                )]
            }
            Message::ProbeAck {
                on_behalf_of,
                heartbeat,
            } => {
                // Only the prober's own heartbeat is taken from its answer.
                if heartbeat.node != from {
                    return Vec::new();
                }
                self.apply(heartbeat.clone(), now);
                match on_behalf_of {
                    Some(asker) if asker != self.me => {
                        vec![(asker, Message::Ack2(vec![heartbeat]))]
                    }
                    _ => Vec::new(),
                }
            }
            Message::ProbeRequest { target } => {
                if target == self.me || target == from || !self.peers.contains_key(&target) {
                    return Vec::new();
                }
                vec![(
                    target,
                    Message::Probe {
                        on_behalf_of: Some(from),
                    },
                )]
            }
            Message::Ack { deltas, requests } => self.answer_ack(from, deltas, requests, now),
            Message::AckWindow {
                deltas,
                requests,
                beats,
            } => {
                for b in beats {
                    self.take_heartbeat(b.node, None, b.generation_tag, b.heartbeat, now);
                }
                self.answer_ack(from, deltas, requests, now)
            }
            Message::Ack2(deltas) => {
                for d in deltas {
                    self.apply(d, now);
                }
                Vec::new()
            }
        }
    }

    /// The `Ack2` to an `Ack`: what its sender asked for.
    fn answer_ack(
        &mut self,
        from: NodeId,
        deltas: Vec<Delta>,
        requests: Vec<Digest>,
        now: Duration,
    ) -> Vec<(NodeId, Message)> {
        {
            {
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
        }
    }

    /// The `Ack` to a `Syn` (`complete`: it lists every node its sender
    /// knows, so the ones it lacks are sent too).
    fn answer_syn(
        &mut self,
        from: NodeId,
        digests: Vec<Digest>,
        complete: bool,
        now: Duration,
    ) -> Vec<(NodeId, Message)> {
        self.answer_window(from, digests, Vec::new(), complete, now)
    }

    /// The `Ack` to a `Syn` or `SynWindow`: entries the sender lacks,
    /// requests for what it has newer, and heartbeats it lacks (after the
    /// entries, so the cap on deltas cuts heartbeats first).
    fn answer_window(
        &mut self,
        from: NodeId,
        digests: Vec<Digest>,
        beats: Vec<Beat>,
        complete: bool,
        now: Duration,
    ) -> Vec<(NodeId, Message)> {
        let mut deltas = Vec::new();
        let mut requests = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for d in &digests {
            seen.insert(d.node);
            match self.state(d.node).map(|s| Self::digest_of(d.node, s)) {
                None => requests.push(Self::unknown(d.node)),
                Some(mine) => {
                    let theirs_newer =
                        (d.generation, d.max_version) > (mine.generation, mine.max_version);
                    let mine_newer = (mine.generation, mine.max_version)
                        > (d.generation, d.max_version)
                        || (mine.generation == d.generation && mine.heartbeat > d.heartbeat);
                    if theirs_newer {
                        requests.push(mine);
                    } else if mine_newer {
                        deltas.extend(self.delta_since(d.node, d.generation, d.max_version));
                    }
                }
            }
        }
        let mut newer_beats = Vec::new();
        for b in &beats {
            if !seen.insert(b.node) {
                continue;
            }
            if b.node == self.me {
                // The sender's view of this node: correct it if stale.
                let stale = b.generation_tag != self.local.generation as u8
                    || b.version_tag != self.local.max_version as u8
                    || b.heartbeat < self.local.heartbeat;
                if stale {
                    deltas.extend(self.delta_since(self.me, 0, 0));
                }
                continue;
            }
            match self.state(b.node) {
                None if !self.tombstones.contains_key(&b.node) => {
                    requests.push(Self::unknown(b.node));
                }
                None => {}
                Some(s) if s.generation as u8 != b.generation_tag => {
                    // Another life than the one known here: the sender
                    // sends its state if its generation is newer.
                    requests.push(Self::digest_of(b.node, s));
                }
                Some(s) if s.max_version as u8 != b.version_tag => {
                    // Entries differ, and the tags do not say whose are
                    // newer: send this node's (a node's entries are few;
                    // the receiver keeps only newer versions) and ask for
                    // the sender's.
                    let mine = Self::digest_of(b.node, s);
                    deltas.extend(self.delta_since(b.node, 0, 0));
                    requests.push(mine);
                }
                Some(s) if s.heartbeat > b.heartbeat => newer_beats.push(Beat::of(b.node, s)),
                Some(_) => {}
            }
        }
        // Nodes the sender has never heard of (a window that is not
        // complete does not say which those are; later windows of this
        // node's show them to it).
        if complete {
            let unknown: Vec<NodeId> = std::iter::once(self.me)
                .chain(self.peers.keys().copied())
                .filter(|n| !seen.contains(n))
                .collect();
            for node in unknown {
                deltas.extend(self.delta_since(node, 0, 0));
            }
        }
        // This node's own state first: the cap must never cut it.
        if let Some(own) = deltas.iter().position(|d| d.node == self.me) {
            deltas[..=own].rotate_right(1);
        }
        deltas.truncate(self.config.max_deltas);
        requests.truncate(self.config.max_deltas);
        // Digests and beats carry heartbeats: a newer one is fresh
        // evidence that its node is alive, without waiting for a delta
        // (which is capped per message).
        let evidence: Vec<(NodeId, Option<u64>, u8, u64)> = digests
            .iter()
            .map(|d| (d.node, Some(d.generation), d.generation as u8, d.heartbeat))
            .chain(
                beats
                    .iter()
                    .map(|b| (b.node, None, b.generation_tag, b.heartbeat)),
            )
            .collect();
        for (node, generation, tag, heartbeat) in evidence {
            self.take_heartbeat(node, generation, tag, heartbeat, now);
        }
        if beats.is_empty() {
            vec![(from, Message::Ack { deltas, requests })]
        } else {
            vec![(
                from,
                Message::AckWindow {
                    deltas,
                    requests,
                    beats: newer_beats,
                },
            )]
        }
    }

    /// A heartbeat seen in a digest or beat: fresh evidence of life when
    /// it is newer than the one known, in the same life of the node
    /// (`generation` when known, else the low byte `tag`).
    fn take_heartbeat(
        &mut self,
        node: NodeId,
        generation: Option<u64>,
        tag: u8,
        heartbeat: u64,
        now: Duration,
    ) {
        let known = self
            .peers
            .get(&node)
            .map(|p| (p.state.generation, p.state.heartbeat));
        let Some((g, h)) = known else { return };
        let same_life = generation.map_or(g as u8 == tag, |gen| gen == g);
        if same_life && heartbeat > h {
            let beat = Delta {
                node,
                generation: g,
                heartbeat,
                entries: Vec::new(),
            };
            self.apply(beat, now);
        }
    }

    /// Another node's conviction of `b.node`: if this node knows no newer
    /// heartbeat of it, the first such word gets it probed now (directly
    /// and through others) and passed on to a few peers; a second, from
    /// another node, shortens the probing that confirms a conviction.
    fn take_hint(&mut self, from: NodeId, b: Beat, now: Duration) -> Vec<(NodeId, Message)> {
        let Some(p) = self.peers.get_mut(&b.node) else {
            return Vec::new();
        };
        let same_life = p.state.generation as u8 == b.generation_tag;
        if !p.alive || !same_life || p.state.heartbeat > b.heartbeat {
            return Vec::new();
        }
        if p.hints > 0 {
            if p.hinted_by != Some(from) {
                p.hints = 2;
            }
            return Vec::new();
        }
        p.hints = 1;
        p.hinted_by = Some(from);
        p.probed_at.get_or_insert(now);
        let suspect = b.node;
        let others: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.alive && **id != suspect && **id != from)
            .map(|(id, _)| *id)
            .collect();
        let mut out = vec![(suspect, Message::Probe { on_behalf_of: None })];
        if others.is_empty() {
            return out;
        }
        let pick = |k: usize| {
            let h =
                mix(self.me.0 ^ suspect.0.rotate_left(23) ^ b.heartbeat.rotate_left(41) ^ k as u64);
            others[(h % others.len() as u64) as usize]
        };
        for k in 0..self.config.indirect_probes {
            out.push((pick(k), Message::ProbeRequest { target: suspect }));
        }
        for k in 0..self.config.forward_changes {
            let hint = Message::SynWindow {
                deltas: Vec::new(),
                digests: Vec::new(),
                beats: Vec::new(),
                complete: false,
                downs: vec![b],
            };
            out.push((pick(self.config.indirect_probes + k), hint));
        }
        out
    }

    /// A request for everything about `node`.
    fn unknown(node: NodeId) -> Digest {
        Digest {
            node,
            generation: 0,
            heartbeat: 0,
            max_version: 0,
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
        let known_before = self.peers.contains_key(&delta.node);
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
                changed_at: now,
                hints: 0,
                hinted_by: None,
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
            peer.changed_at = now;
            self.events.push(Event::Restarted(delta.node));
        }
        for (key, value, version) in delta.entries {
            let newer = peer
                .state
                .entries
                .get(&key)
                .is_none_or(|(_, v)| version > *v);
            if newer {
                // A change to a node known before (not a node first heard
                // of, as while a cluster forms) is forwarded.
                if known_before && !self.learned.contains(&delta.node) {
                    self.learned.push(delta.node);
                }
                peer.changed_at = now;
                peer.state.max_version = peer.state.max_version.max(version);
                peer.state.entries.insert(key, (value, version));
            }
        }
        if delta.heartbeat > peer.state.heartbeat {
            peer.state.heartbeat = delta.heartbeat;
            peer.detector.heartbeat(now);
            peer.probed_at = None;
            peer.hints = 0;
            peer.hinted_by = None;
            if !peer.alive {
                peer.alive = true;
                peer.down_since = None;
                self.events.push(Event::Up(delta.node));
            }
        }
    }
}
