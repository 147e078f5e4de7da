//! Choosing tokens for a joining node.
//!
//! Two strategies, compared in the tests (figures in the closing note of
//! the cluster issues): `random` (Cassandra's classic 256 random tokens per
//! node) and `replication_aware`, a greedy allocator in the spirit of
//! Cassandra 3.0's: each new token splits one of the widest ranges at the
//! point that leaves the replicated ownership of all nodes (for the given
//! replication factor) most even. With it, 16 tokens per node spread data
//! about as evenly as 256 random ones, and a cluster keeps far fewer ranges
//! to stream, repair and hash.

use rand::Rng;

use crate::ring::{HostId, Ring, Token};

/// Candidate ranges examined per token (the widest ones).
const CANDIDATES: usize = 24;

/// `count` uniformly random tokens.
pub fn random(rng: &mut impl Rng, count: usize) -> Vec<Token> {
    (0..count).map(|_| rng.random()).collect()
}

/// Evenly spaced tokens from a random offset (the first node of a cluster).
fn spaced(rng: &mut impl Rng, count: usize) -> Vec<Token> {
    let step = u64::MAX / count.max(1) as u64;
    let offset: u64 = rng.random_range(0..step.max(1));
    (0..count as u64)
        .map(|i| offset.wrapping_add(i.wrapping_mul(step)))
        .collect()
}

/// Spread of replicated ownership: standard deviation over the mean.
pub fn spread(ring: &Ring, rf: usize) -> f64 {
    let owned: Vec<f64> = ring.ownership(rf).into_values().collect();
    let mean = owned.iter().sum::<f64>() / owned.len() as f64;
    let var = owned.iter().map(|o| (o - mean).powi(2)).sum::<f64>() / owned.len() as f64;
    var.sqrt() / mean
}

/// Tokens for `host` joining `ring`, chosen to keep replicated ownership
/// even for replication factor `rf`. `racks` names every node's rack,
/// `host`'s included (empty: no racks): ownership is judged on the ring
/// as it places replicas, across racks when there are racks.
pub fn replication_aware(
    ring: &Ring,
    racks: &[(HostId, Option<String>)],
    host: HostId,
    vnodes: usize,
    rf: usize,
    rng: &mut impl Rng,
) -> Vec<Token> {
    let placed = |assignments: Vec<(HostId, Vec<Token>)>| {
        Ring::new(assignments).with_racks(racks.iter().cloned())
    };
    if ring.is_empty() {
        return spaced(rng, vnodes);
    }
    let mut assignments: Vec<(HostId, Vec<Token>)> = Vec::new();
    for (t, h) in ring.tokens() {
        match assignments.iter_mut().find(|(x, _)| x == h) {
            Some((_, ts)) => ts.push(*t),
            None => assignments.push((*h, vec![*t])),
        }
    }
    assignments.push((host, Vec::new()));
    let mut chosen = Vec::with_capacity(vnodes);
    for _ in 0..vnodes {
        let current = Ring::new(assignments.clone());
        let mut ranges = current.ranges(1);
        ranges.sort_by(|a, b| b.fraction().total_cmp(&a.fraction()));
        let mut best: Option<(f64, Token)> = None;
        for range in ranges.iter().take(CANDIDATES) {
            let width = range.end.wrapping_sub(range.start);
            for split in [width / 2, width / 3, width / 3 * 2] {
                let candidate = range.start.wrapping_add(split);
                if current
                    .tokens()
                    .binary_search_by_key(&candidate, |(t, _)| *t)
                    .is_ok()
                {
                    continue;
                }
                let mut trial = assignments.clone();
                if let Some((_, ts)) = trial.last_mut() {
                    ts.push(candidate);
                }
                let score = spread(&placed(trial), rf);
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, candidate));
                }
            }
        }
        let token = best.map_or_else(|| rng.random(), |(_, t)| t);
        chosen.push(token);
        if let Some((_, ts)) = assignments.last_mut() {
            ts.push(token);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn grow(
        nodes: u64,
        strategy: &dyn Fn(&Ring, HostId, &mut rand::rngs::StdRng) -> Vec<Token>,
    ) -> Ring {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut assignments = Vec::new();
        for h in 0..nodes {
            let ring = Ring::new(assignments.clone());
            let tokens = strategy(&ring, HostId(h), &mut rng);
            assignments.push((HostId(h), tokens));
        }
        Ring::new(assignments)
    }

    /// Share of replica copies that change hands between two rings.
    fn moved(before: &Ring, after: &Ring, rf: usize) -> f64 {
        let mut bounds: Vec<Token> = before
            .tokens()
            .iter()
            .chain(after.tokens())
            .map(|(t, _)| *t)
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let n = bounds.len();
        let mut total = 0.0;
        for i in 0..n {
            let (start, end) = (bounds[(i + n - 1) % n], bounds[i]);
            let fraction = end.wrapping_sub(start) as f64 / 2f64.powi(64);
            let (b, a) = (before.replicas(end, rf), after.replicas(end, rf));
            let new_copies = a.iter().filter(|h| !b.contains(h)).count();
            total += fraction * new_copies as f64 / rf as f64;
        }
        total
    }

    #[test]
    fn sixteen_allocated_tokens_spread_data_as_evenly_as_256_random() {
        let rf = 3;
        for nodes in [3u64, 10, 30] {
            let aware = grow(nodes, &|ring, h, rng| {
                replication_aware(ring, &[], h, 16, rf, rng)
            });
            let random256 = grow(nodes, &|_, _, rng| random(rng, 256));
            let random16 = grow(nodes, &|_, _, rng| random(rng, 16));
            let (a, r256, r16) = (
                spread(&aware, rf),
                spread(&random256, rf),
                spread(&random16, rf),
            );
            println!("{nodes} nodes, rf {rf}: spread (stddev/mean) allocator-16 {a:.3}, random-256 {r256:.3}, random-16 {r16:.3}");
            assert!(
                a <= r16,
                "{nodes} nodes: the allocator must beat random tokens of the same count"
            );
            assert!(a < 0.10, "{nodes} nodes: allocator spread {a:.3}");
        }
    }

    #[test]
    fn a_fourth_node_takes_about_a_quarter_of_the_data() {
        let rf = 3;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut assignments = Vec::new();
        for h in 0..3u64 {
            let tokens = replication_aware(
                &Ring::new(assignments.clone()),
                &[],
                HostId(h),
                16,
                rf,
                &mut rng,
            );
            assignments.push((HostId(h), tokens));
        }
        let before = Ring::new(assignments.clone());
        let tokens = replication_aware(&before, &[], HostId(3), 16, rf, &mut rng);
        assignments.push((HostId(3), tokens));
        let after = Ring::new(assignments);
        let share = moved(&before, &after, rf);
        println!(
            "3 -> 4 nodes, rf 3: {:.1}% of replica copies move",
            share * 100.0
        );
        assert!((share - 0.25).abs() < 0.05, "moved {share:.3}, ideal 0.25");
    }
}
