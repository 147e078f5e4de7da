//! [`Membership`]: gossip between the nodes, over their own framed
//! protocol, feeding the failure detector's verdicts to [`Peers`].
//!
//! The gossip state machine (`tally_gossip::Gossiper`) has no I/O; this is
//! its driver. Every `interval` it runs a round (heartbeat up, digests to a
//! few peers) and sends each `Syn` as a `Gossip` request; the peer answers
//! with its `Ack` in the response, and the `Ack2` (if any) goes as one more
//! request. Up, down and restart events of the phi-accrual detector go to
//! [`Peers::set_gossip_up`], so the coordinator's view of who is up is
//! gossip's, with the transport's refused connections as a fast path.
//!
//! The node's entries: `address`, `status` (`normal` until topology changes
//! add others) and `epoch` (the metadata epoch it routes with). They
//! change rarely, as they must: past `max_digests` nodes, gossip pushes
//! changes for a few rounds and otherwise compares one-byte version tags,
//! which stays cheap only while changes are rare (ALGORITHM.md in the
//! gossip crate).
//!
//! A message addressed to a third node (a suspect probed on another's
//! behalf, or a probe's answer forwarded to the node that asked) goes out
//! as a request of its own, and its reply is handled like any other.
//!
//! A node's generation is the wall-clock time it started, in milliseconds
//! (Cassandra's choice): it grows across restarts, so peers tell a
//! restarted node from an echo of its earlier life.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::SeedableRng;
use tally_client::{PeerStatus, Request, Response};
use tally_consensus::{ClusterMap, HostId};
use tally_gossip::{codec, Event, GossipConfig, Gossiper, Message, NodeId};

use crate::cluster::peers::Peers;

/// The node's gossip driver.
pub struct Membership {
    me: NodeId,
    gossiper: Mutex<Gossiper>,
    rng: Mutex<rand::rngs::StdRng>,
    started: Instant,
    interval: Duration,
    peers: Arc<Peers>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Gossip for node `me` at `address`, started at `generation`, with
    /// every member of `map` as a seed.
    pub fn new(
        me: HostId,
        address: &str,
        generation: u64,
        map: &ClusterMap,
        config: GossipConfig,
        peers: Arc<Peers>,
    ) -> Arc<Membership> {
        let seeds = map.members().map(|m| NodeId(m.host_id.0)).collect();
        let interval = config.interval;
        let mut gossiper = Gossiper::new(NodeId(me.0), generation, seeds, config);
        gossiper.set("address", address);
        gossiper.set("epoch", &map.epoch().to_string());
        gossiper.set("status", "normal");
        Arc::new(Membership {
            me: NodeId(me.0),
            gossiper: Mutex::new(gossiper),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(generation ^ me.0)),
            started: Instant::now(),
            interval,
            peers,
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn apply(&self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Up(n) => self.peers.set_gossip_up(HostId(n.0), true),
                Event::Down(n) => self.peers.set_gossip_up(HostId(n.0), false),
                Event::Restarted(n) => {
                    let generation = self.gossiper.lock().generation(n);
                    tracing::info!(host = n.0, ?generation, "peer restarted");
                }
                Event::Joined(n) => tracing::debug!(host = n.0, "peer joined gossip"),
                Event::Forgotten(n) => tracing::info!(host = n.0, "peer forgotten by gossip"),
            }
        }
    }

    /// Runs gossip rounds until the process ends.
    pub async fn run_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (messages, events) = {
                let mut gossiper = self.gossiper.lock();
                let messages = gossiper.tick(self.now(), &mut *self.rng.lock());
                (messages, gossiper.take_events())
            };
            self.apply(events);
            for (to, message) in messages {
                let this = self.clone();
                tokio::spawn(async move { this.exchange(to, message).await });
            }
        }
    }

    /// Sends `message` to `to` and handles the reply it carries back.
    async fn exchange(self: Arc<Self>, to: NodeId, message: Message) {
        let request = Request::Gossip {
            from: self.me.0,
            payload: codec::encode(&message),
        };
        let Ok(Response::Gossip(bytes)) =
            self.peers.call(HostId(to.0), &request, self.interval).await
        else {
            return;
        };
        let Ok(reply) = codec::decode(&bytes) else {
            tracing::warn!(host = to.0, "malformed gossip reply ignored");
            return;
        };
        let (replies, events) = {
            let mut gossiper = self.gossiper.lock();
            let replies = gossiper.receive(to, reply, self.now());
            (replies, gossiper.take_events())
        };
        self.apply(events);
        for (to, message) in replies {
            let request = Request::Gossip {
                from: self.me.0,
                payload: codec::encode(&message),
            };
            let _ = self.peers.call(HostId(to.0), &request, self.interval).await;
        }
    }

    /// Handles a gossip message from another node; the response carries
    /// the reply to it, if any, and messages for third nodes go out as
    /// requests of their own.
    pub fn handle(self: &Arc<Self>, from: u64, payload: &[u8]) -> Response {
        let message = match codec::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                return Response::Error {
                    code: tally_client::ErrorCode::MalformedFrame,
                    message: e.to_string(),
                }
            }
        };
        let (replies, events) = {
            let mut gossiper = self.gossiper.lock();
            let replies = gossiper.receive(NodeId(from), message, self.now());
            (replies, gossiper.take_events())
        };
        self.apply(events);
        let mut answer = Response::Ack;
        for (to, message) in replies {
            if to.0 == from && matches!(answer, Response::Ack) {
                answer = Response::Gossip(codec::encode(&message));
            } else {
                let this = self.clone();
                tokio::spawn(async move { this.exchange(to, message).await });
            }
        }
        answer
    }

    /// Follows a new cluster map: its members become the seeds, and the
    /// epoch this node routes with is gossiped.
    pub fn on_map(&self, map: &tally_consensus::ClusterMap) {
        let mut gossiper = self.gossiper.lock();
        gossiper.set_seeds(map.members().map(|m| NodeId(m.host_id.0)));
        gossiper.set("epoch", &map.epoch().to_string());
    }

    /// The metadata epoch each live peer gossips (peers that gossip none
    /// are left out).
    pub fn peer_epochs(&self) -> Vec<(HostId, u64)> {
        let gossiper = self.gossiper.lock();
        gossiper
            .peers()
            .filter(|n| gossiper.is_alive(*n))
            .filter_map(|n| {
                let epoch = gossiper.value(n, "epoch")?.parse().ok()?;
                Some((HostId(n.0), epoch))
            })
            .collect()
    }

    /// The highest suspicion level (phi) among the peers gossip still
    /// holds alive: how close the most doubtful live peer is to being
    /// convicted (0 with none). Peers already down are left out, or one
    /// dead node would hide every other.
    pub fn phi_max(&self) -> f64 {
        let gossiper = self.gossiper.lock();
        let now = self.now();
        gossiper
            .peers()
            .filter(|n| gossiper.is_alive(*n))
            .map(|n| gossiper.phi(n, now))
            .filter(|phi| phi.is_finite())
            .fold(0.0, f64::max)
    }

    /// Fills in gossip's generation and heartbeat age of each peer.
    pub fn annotate(&self, statuses: &mut [PeerStatus]) {
        let gossiper = self.gossiper.lock();
        let now = self.now();
        for s in statuses {
            let node = NodeId(s.host_id);
            s.generation = gossiper.generation(node);
            s.heartbeat_ms_ago = gossiper
                .last_heartbeat(node)
                .map(|t| now.saturating_sub(t).as_millis() as u64);
        }
    }
}
