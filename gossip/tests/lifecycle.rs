//! A peer's life through one gossiper's eyes, on a hand-driven network of
//! three: a local stall convicts no one (the pause guard), a dead peer is
//! forgotten after `forget_after` and stale gossip does not bring it back
//! as a ghost, while a real restart (a newer generation) does.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::SeedableRng;
use tally_gossip::{Event, GossipConfig, Gossiper, Message, NodeId};

const S: Duration = Duration::from_secs(1);

fn config() -> GossipConfig {
    GossipConfig {
        forget_after: Duration::from_secs(30),
        tombstone_ttl: Duration::from_secs(300),
        ..GossipConfig::default()
    }
}

/// Delivers every message (and every reply) among `nodes` at `now`.
fn deliver(
    nodes: &mut [Option<Gossiper>],
    mut queue: Vec<(NodeId, NodeId, Message)>,
    now: Duration,
) {
    while let Some((from, to, message)) = queue.pop() {
        if let Some(node) = nodes.get_mut(to.0 as usize).and_then(Option::as_mut) {
            for (next, reply) in node.receive(from, message, now) {
                queue.push((to, next, reply));
            }
        }
    }
}

/// One round: every live node ticks, everything is delivered.
fn round(nodes: &mut [Option<Gossiper>], now: Duration, rng: &mut rand::rngs::StdRng) {
    let mut queue = Vec::new();
    for node in nodes.iter_mut().flatten() {
        let from = node.id();
        for (to, m) in node.tick(now, rng) {
            queue.push((from, to, m));
        }
    }
    deliver(nodes, queue, now);
}

fn cluster() -> Vec<Option<Gossiper>> {
    let seeds = vec![NodeId(0), NodeId(1), NodeId(2)];
    (0..3)
        .map(|i| Some(Gossiper::new(NodeId(i), 1, seeds.clone(), config())))
        .collect()
}

fn downs(node: &mut Gossiper) -> Vec<NodeId> {
    node.take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Down(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn a_local_stall_convicts_no_one() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut nodes = cluster();
    let mut now = Duration::ZERO;
    for _ in 0..20 {
        now += S;
        round(&mut nodes, now, &mut rng);
    }
    nodes[0].as_mut().unwrap().take_events();
    // Node 0 is frozen for 8 s while the others keep gossiping without it.
    let mut frozen = nodes[0].take();
    for _ in 0..8 {
        now += S;
        round(&mut nodes, now, &mut rng);
    }
    let node0 = frozen.as_mut().unwrap();
    let _ = node0.tick(now, &mut rng);
    assert!(
        downs(node0).is_empty(),
        "its own stall is not the peers' silence"
    );
    assert!(node0.is_alive(NodeId(1)) && node0.is_alive(NodeId(2)));
}

#[test]
fn a_dead_peer_is_forgotten_and_does_not_return_as_a_ghost() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut nodes = cluster();
    let mut now = Duration::ZERO;
    for _ in 0..20 {
        now += S;
        round(&mut nodes, now, &mut rng);
    }
    // Keep node 2's old state around, as a lagging peer would.
    let stale = nodes[2].clone().unwrap();
    nodes[2] = None;
    let mut forgotten_at = None;
    for _ in 0..60 {
        now += S;
        round(&mut nodes, now, &mut rng);
        let node0 = nodes[0].as_mut().unwrap();
        if node0.take_events().contains(&Event::Forgotten(NodeId(2))) {
            forgotten_at = Some(now);
            break;
        }
    }
    assert!(forgotten_at.is_some(), "node 2 forgotten within 60 s");
    let node0 = nodes[0].as_ref().unwrap();
    assert!(node0.is_forgotten(NodeId(2)) && !node0.is_alive(NodeId(2)));

    // An echo of node 2's earlier life arrives: still forgotten.
    let mut ghost = stale;
    let mut queue = Vec::new();
    for (to, m) in ghost.tick(now, &mut rng) {
        queue.push((NodeId(2), to, m));
    }
    queue.push((
        NodeId(2),
        NodeId(0),
        Message::Syn(vec![tally_gossip::Digest {
            node: NodeId(2),
            generation: 1,
            heartbeat: 999,
            max_version: 0,
        }]),
    ));
    deliver(&mut nodes, queue, now);
    assert!(
        nodes[0].as_ref().unwrap().is_forgotten(NodeId(2)),
        "no ghost"
    );

    // A real restart, with a newer generation, is welcome.
    let mut reborn = Gossiper::new(NodeId(2), 2, vec![NodeId(0)], config());
    let mut queue = Vec::new();
    for (to, m) in reborn.tick(now, &mut rng) {
        queue.push((NodeId(2), to, m));
    }
    nodes[2] = Some(reborn);
    deliver(&mut nodes, queue, now);
    for _ in 0..3 {
        now += S;
        round(&mut nodes, now, &mut rng);
    }
    let node0 = nodes[0].as_ref().unwrap();
    assert!(node0.is_alive(NodeId(2)) && node0.generation(NodeId(2)) == Some(2));
    assert!(!node0.is_forgotten(NodeId(2)));
}
