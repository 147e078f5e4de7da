//! Gossip past one message's worth of nodes: digest windows and beats
//! keep every message bounded, so bytes per node stay flat as the cluster
//! grows, while it still forms, spreads changes and convicts the dead;
//! and the indirect probes and conviction hints, message by message.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::SeedableRng;
use tally_gossip::simulation::Simulation;
use tally_gossip::{Beat, Event, GossipConfig, Gossiper, Message, NodeId};

/// Windows from 16 nodes on; heartbeats rotate past `max_beats`.
fn windows(max_beats: usize) -> GossipConfig {
    GossipConfig {
        max_digests: 16,
        max_beats,
        ..GossipConfig::default()
    }
}

/// Forms a cluster, spreads a change, kills a node; returns bytes per
/// node per second while the change spread and the largest message.
fn run(n: u64, loss: f64, config: GossipConfig) -> (f64, usize) {
    let mut sim = Simulation::with_config(n, loss, 7, config);
    let formed = sim.run_until(Duration::from_secs(90), Simulation::converged);
    assert!(formed.is_some(), "{n} nodes formed");
    let (bytes, t0) = (sim.bytes_sent, sim.now());
    sim.largest_message = 0;
    sim.node(3).unwrap().set("status", "leaving");
    let spread = sim.run_until(Duration::from_secs(30), |s| {
        s.live()
            .all(|g| g.value(NodeId(3), "status") == Some("leaving"))
    });
    assert!(spread.is_some(), "the change reached all {n} nodes");
    sim.run_until(Duration::from_secs(20), |_| false);
    let per_node = (sim.bytes_sent - bytes) as f64 / n as f64 / (sim.now() - t0).as_secs_f64();
    sim.kill(9);
    let down = sim.run_until(Duration::from_secs(40), |s| {
        s.live().all(|g| !g.is_alive(NodeId(9)))
    });
    assert!(down.is_some(), "the dead node is down everywhere");
    assert_eq!(sim.false_downs, 0, "{n} nodes, {loss} loss");
    (per_node, sim.largest_message)
}

#[test]
fn windows_cost_a_fraction_of_full_digests() {
    let full = GossipConfig {
        max_digests: 1000,
        ..GossipConfig::default()
    };
    let (full_bytes, full_largest) = run(120, 0.1, full);
    let (window_bytes, window_largest) = run(120, 0.1, windows(2048));
    println!("120 nodes: full digests {full_bytes:.0} B/node/s (largest {full_largest}); windows {window_bytes:.0} (largest {window_largest})");
    assert!(
        window_bytes < full_bytes * 0.6,
        "{window_bytes:.0} against {full_bytes:.0}"
    );
    assert!(
        window_largest < full_largest / 2,
        "{window_largest} against {full_largest}"
    );
}

#[test]
fn past_max_beats_heartbeats_rotate_and_the_cluster_still_works() {
    // 40 beats a message for 120 nodes: every message stays small.
    let (_, largest) = run(120, 0.0, windows(40));
    assert!(largest < 2_000, "largest message {largest} bytes");
}

const S: Duration = Duration::from_secs(1);

#[test]
fn a_suspect_is_probed_through_others_and_their_answer_comes_back() {
    let config = GossipConfig::default;
    let (x, y, z) = (NodeId(1), NodeId(2), NodeId(3));
    let mut gx = Gossiper::new(x, 5, vec![], config());
    let mut gz = Gossiper::new(z, 1, vec![], config());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    gx.tick(S, &mut rng);
    // z knows x.
    let hello = gx.receive(z, Message::Syn(vec![]), S);
    let Some((_, Message::Ack { deltas, .. })) = hello.into_iter().next() else {
        panic!("no ack");
    };
    gz.receive(x, Message::Ack2(deltas), S);
    assert!(gz.is_alive(x));

    // y asks z to probe x; z probes x on y's behalf.
    let out = gz.receive(y, Message::ProbeRequest { target: x }, 2 * S);
    assert_eq!(
        out,
        vec![(
            x,
            Message::Probe {
                on_behalf_of: Some(y)
            }
        )]
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    gx.tick(2 * S, &mut rng);
    let answer = gx.receive(
        z,
        Message::Probe {
            on_behalf_of: Some(y),
        },
        2 * S,
    );
    let [(
        to,
        Message::ProbeAck {
            on_behalf_of,
            heartbeat,
        },
    )] = answer.as_slice()
    else {
        panic!("unexpected {answer:?}");
    };
    assert_eq!((*to, *on_behalf_of, heartbeat.node), (z, Some(y), x));
    // z takes the fresh heartbeat and forwards it to y.
    let forwarded = gz.receive(x, answer[0].1.clone(), 2 * S);
    assert_eq!(forwarded, vec![(y, Message::Ack2(vec![heartbeat.clone()]))]);
    // An answer that speaks for another node is not taken.
    let spoofed = gz.receive(y, answer[0].1.clone(), 3 * S);
    assert!(spoofed.is_empty());
    // Nobody probes itself or an unknown node for others.
    assert!(gz
        .receive(y, Message::ProbeRequest { target: z }, 3 * S)
        .is_empty());
    assert!(gz
        .receive(y, Message::ProbeRequest { target: NodeId(99) }, 3 * S)
        .is_empty());
}

/// y, which has heard x beat every second for 8 s.
fn watcher(rng: &mut rand::rngs::StdRng) -> Gossiper {
    let config = GossipConfig {
        max_digests: 0, // windows from the first peer on
        ..GossipConfig::default()
    };
    let mut gy = Gossiper::new(NodeId(2), 1, vec![], config);
    for t in 1..=8 {
        let beat = Message::Ack2(vec![tally_gossip::Delta {
            node: NodeId(1),
            generation: 1,
            heartbeat: t,
            entries: vec![],
        }]);
        gy.receive(NodeId(1), beat, S * t as u32);
        gy.tick(S * t as u32, rng);
    }
    gy.take_events();
    gy
}

/// z's window telling of its conviction of x at `heartbeat`.
fn convicted_by_z(heartbeat: u64) -> Message {
    Message::SynWindow {
        deltas: vec![],
        digests: vec![],
        beats: vec![],
        complete: false,
        downs: vec![Beat {
            node: NodeId(1),
            generation_tag: 1,
            heartbeat,
            version_tag: 0,
        }],
    }
}

fn probes_of_x(out: &[(NodeId, Message)]) -> usize {
    out.iter()
        .filter(|(to, m)| *to == NodeId(1) && matches!(m, Message::Probe { .. }))
        .count()
}

/// When y marks x down, x silent from 8 s on.
fn down_at(mut gy: Gossiper, hint: Option<Message>, rng: &mut rand::rngs::StdRng) -> u32 {
    if let Some(hint) = hint {
        gy.receive(NodeId(3), hint, S * 9);
    }
    for t in 9..60 {
        gy.tick(S * t, rng);
        if gy
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::Down(n) if *n == NodeId(1)))
        {
            return t;
        }
    }
    panic!("never convicted");
}

#[test]
fn a_conviction_elsewhere_gets_a_quiet_peer_probed_and_convicted_sooner() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Not yet suspected at 9 s: no probe.
    let mut gy = watcher(&mut rng);
    assert_eq!(probes_of_x(&gy.tick(S * 9, &mut rng)), 0);
    // After z's conviction, probed at once.
    let mut gy = watcher(&mut rng);
    gy.receive(NodeId(3), convicted_by_z(8), S * 9);
    assert_eq!(probes_of_x(&gy.tick(S * 9, &mut rng)), 1);

    // x stays silent: the hint brings the conviction forward.
    let alone = down_at(watcher(&mut rng), None, &mut rng);
    let hinted = down_at(watcher(&mut rng), Some(convicted_by_z(8)), &mut rng);
    assert!(hinted < alone, "hinted {hinted} s, alone {alone} s");

    // A hint about an older heartbeat than y knows is ignored, and a
    // fresh heartbeat clears one.
    let mut gy = watcher(&mut rng);
    gy.receive(NodeId(3), convicted_by_z(7), S * 9);
    assert_eq!(probes_of_x(&gy.tick(S * 9, &mut rng)), 0);
    let mut gy = watcher(&mut rng);
    gy.receive(NodeId(3), convicted_by_z(8), S * 9);
    let fresh = Message::Ack2(vec![tally_gossip::Delta {
        node: NodeId(1),
        generation: 1,
        heartbeat: 9,
        entries: vec![],
    }]);
    gy.receive(NodeId(1), fresh, S * 9);
    assert_eq!(probes_of_x(&gy.tick(S * 9, &mut rng)), 0);
}
