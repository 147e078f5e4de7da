//! The nemesis: faults injected on a seeded schedule.
//!
//! The schedule alternates a quiet period (1-2 s) and a fault (2-4 s),
//! each fault drawn from the enabled kinds:
//!
//! - `partition`: the node-to-node links are cut into groups by one of
//!   four shapes: random halves; one node isolated; a majorities ring
//!   (node `i` reaches only `i-1` and `i+1`, so with 5 nodes each one sees
//!   a majority, but a different one); a bridge (two halves that both
//!   reach one node in the middle).
//! - `kill`: SIGKILL one node, restart it when the fault ends.
//! - `pause`: SIGSTOP one node, SIGCONT it when the fault ends.
//! - `delay`: every link adds 50 ms to every chunk.
//! - `clock`: one node's wall clock jumps by up to 10 minutes either way
//!   (through the node's `AdjustClock` test hook), and back at the end.
//!   tally takes time only to bound incoming timestamps and to expire old
//!   buckets and hints, so skew may refuse increments (a typed failure) but
//!   must never change a count.
//!
//! Every fault is recorded as a window (start, end, what) for the report.

use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use crate::cluster::Cluster;
use crate::proxy::LinkMode;

/// A kind of fault the nemesis may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Network partitions between nodes.
    Partition,
    /// SIGKILL and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Slow links.
    Delay,
    /// Wall-clock skew on one node.
    Clock,
}

impl FaultKind {
    /// Parses a comma-separated list (`partition,kill,pause,delay`).
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "partition" => Ok(FaultKind::Partition),
                "kill" => Ok(FaultKind::Kill),
                "pause" => Ok(FaultKind::Pause),
                "delay" => Ok(FaultKind::Delay),
                "clock" => Ok(FaultKind::Clock),

                other => Err(format!(
                    "unknown nemesis {other:?} (partition, kill, pause, delay, clock)"
                )),
            })
            .collect()
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaultWindow {
    /// What kind.
    pub kind: FaultKind,
    /// The details (which nodes, which shape).
    pub what: String,
    /// When it began, ns since the run started.
    pub start_ns: u64,
    /// When it was healed.
    pub end_ns: u64,
}

/// A fault being held, and how to heal it.
#[derive(Debug)]
pub enum Active {
    /// Links cut; heal by letting them all pass.
    Links,
    /// A killed node to restart.
    Killed(usize),
    /// A paused node to continue.
    Paused(usize),
    /// A node whose clock to set back.
    Skewed(usize),
}

/// Quiet time before the next fault.
pub fn quiet(rng: &mut impl Rng) -> Duration {
    Duration::from_millis(rng.random_range(1_000..2_000))
}

/// How long a fault is held.
pub fn hold(rng: &mut impl Rng) -> Duration {
    Duration::from_millis(rng.random_range(2_000..4_000))
}

/// Injects one fault of a kind drawn from `kinds`; returns what it was.
pub async fn inject(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    rng: &mut impl Rng,
) -> Option<(FaultKind, String, Active)> {
    let kind = *kinds.choose(rng)?;
    let n = cluster.len();
    let node = rng.random_range(0..n);
    Some(match kind {
        FaultKind::Partition => {
            let (what, reach) = partition_shape(n, rng);
            cluster.partition(|i, j| reach[i][j]);
            (kind, what, Active::Links)
        }
        FaultKind::Kill => {
            cluster.kill(node);
            (
                kind,
                format!("kill -9 node {}", node + 1),
                Active::Killed(node),
            )
        }
        FaultKind::Pause => {
            cluster.pause(node);
            (
                kind,
                format!("SIGSTOP node {}", node + 1),
                Active::Paused(node),
            )
        }
        FaultKind::Delay => {
            cluster.set_all_links(LinkMode::Delay(Duration::from_millis(50)));
            (kind, "50 ms on every link".into(), Active::Links)
        }
        FaultKind::Clock => {
            let offset_ms = rng.random_range(1_000..600_000) * if rng.random() { 1 } else { -1 };
            let what = match cluster.adjust_clock(node, offset_ms).await {
                Ok(()) => format!(
                    "clock of node {} {:+.1} s",
                    node + 1,
                    offset_ms as f64 / 1e3
                ),
                Err(e) => format!("clock of node {}: {e}", node + 1),
            };
            (kind, what, Active::Skewed(node))
        }
    })
}

/// Undoes one fault.
pub async fn heal(cluster: &mut Cluster, active: Active) -> Result<(), String> {
    match active {
        Active::Links => cluster.set_all_links(LinkMode::Pass),
        Active::Killed(i) => cluster.restart(i)?,
        Active::Paused(i) => cluster.resume(i),
        // A node restarted meanwhile runs on the machine's clock anyway.
        Active::Skewed(i) => {
            let _ = cluster.adjust_clock(i, 0).await;
        }
    }
    Ok(())
}

fn names(group: &[usize]) -> String {
    let v: Vec<String> = group.iter().map(|i| (i + 1).to_string()).collect();
    format!("{{{}}}", v.join(","))
}

/// A partition shape for `n` nodes: its description and who reaches
/// whom (`reach[i][j]`, symmetric).
pub fn partition_shape(n: usize, rng: &mut impl Rng) -> (String, Vec<Vec<bool>>) {
    let mut nodes: Vec<usize> = (0..n).collect();
    nodes.shuffle(rng);
    let groups = |groups: &[Vec<usize>]| -> Vec<Vec<bool>> {
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| groups.iter().any(|g| g.contains(&i) && g.contains(&j)))
                    .collect()
            })
            .collect()
    };
    match rng.random_range(0..4) {
        0 => {
            let (a, b) = nodes.split_at(n / 2);
            (
                format!("halves {} | {}", names(a), names(b)),
                groups(&[a.to_vec(), b.to_vec()]),
            )
        }
        1 => {
            let (alone, rest) = nodes.split_at(1);
            (
                format!("isolate {}", names(alone)),
                groups(&[alone.to_vec(), rest.to_vec()]),
            )
        }
        2 if n >= 5 => {
            // Each node reaches its two neighbours on a ring: a majority
            // of 5, but a different majority for every node.
            let reach = (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| i == j || (i + 1) % n == j || (j + 1) % n == i)
                        .collect()
                })
                .collect();
            ("majorities ring".into(), reach)
        }
        _ => {
            let bridge = nodes[0];
            let rest = &nodes[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            let mut left = a.to_vec();
            left.push(bridge);
            let mut right = b.to_vec();
            right.push(bridge);
            (
                format!(
                    "bridge {} between {} and {}",
                    bridge + 1,
                    names(a),
                    names(b)
                ),
                groups(&[left, right]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_shape_cuts_something_and_is_symmetric() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n in [3usize, 5] {
            for _ in 0..50 {
                let (what, reach) = partition_shape(n, &mut rng);
                for (i, row) in reach.iter().enumerate() {
                    assert!(row[i], "{what}: a node reaches itself");
                    for (j, r) in row.iter().enumerate() {
                        assert_eq!(*r, reach[j][i], "{what}: symmetric");
                    }
                }
                assert!(reach.iter().flatten().any(|r| !r), "{what}: cuts something");
            }
        }
    }

    #[test]
    fn the_majorities_ring_gives_each_of_five_nodes_a_different_majority() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let reach = (0..100)
            .map(|_| partition_shape(5, &mut rng))
            .find(|(what, _)| what == "majorities ring")
            .unwrap()
            .1;
        for row in &reach {
            assert_eq!(row.iter().filter(|r| **r).count(), 3);
        }
        assert_ne!(reach[0], reach[1]);
    }

    #[test]
    fn unknown_nemeses_are_refused() {
        assert_eq!(
            FaultKind::parse_list("kill, partition").unwrap(),
            vec![FaultKind::Kill, FaultKind::Partition]
        );
        assert!(FaultKind::parse_list("kill,meteor").is_err());
        assert_eq!(
            FaultKind::parse_list("clock").unwrap(),
            vec![FaultKind::Clock]
        );
    }
}
