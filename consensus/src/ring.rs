//! [`Ring`]: the consistent-hash ring with virtual nodes, and replica
//! placement.
//!
//! Each node owns several tokens (virtual nodes) on a 64-bit ring. A key's
//! token is hashed from its partition key (`tally_client::token`); the
//! key's preference list is the first `rf` *distinct* nodes met walking
//! clockwise from it (the owner of the first token `>=` the key's token,
//! wrapping around). Token `t` owns the range `(previous token, t]`.
//!
//! With racks ([`Ring::with_racks`]), the walk first takes one node per
//! rack, in ring order (Cassandra's NetworkTopologyStrategy within one
//! datacenter); with fewer racks than `rf` it goes on in rounds, a second
//! node per rack, then a third, where NetworkTopologyStrategy would take
//! the skipped nodes in ring order whatever their racks. So the replicas
//! sit on `min(rf, racks)` distinct racks, no rack holds more than
//! `ceil(rf / racks)` of them while racks have the nodes, and one rack
//! lost costs a key at most that many. Without racks (or with every node
//! in one) the walk is the plain one.

use std::collections::BTreeMap;

/// A node's host id, as cluster metadata assigns it (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u64);

/// A position on the ring.
pub type Token = u64;

/// Tokens and their owners, sorted by token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    tokens: Vec<(Token, HostId)>,
    /// Each node's rack as an index (nodes without one share one); empty
    /// when no node has a rack.
    rack_of: BTreeMap<HostId, usize>,
    racks: usize,
    /// Nodes per rack index.
    rack_sizes: Vec<usize>,
}

/// A token range `(start, end]` and its replicas, first = primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRange {
    /// Exclusive start (the previous token).
    pub start: Token,
    /// Inclusive end (the owning token).
    pub end: Token,
    /// Preference list of the range.
    pub replicas: Vec<HostId>,
}

impl TokenRange {
    /// The range's share of the ring, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        let width = self.end.wrapping_sub(self.start);
        if width == 0 {
            1.0
        } else {
            width as f64 / 2f64.powi(64)
        }
    }
}

impl Ring {
    /// A ring from each node's tokens. A token claimed twice goes to the
    /// lower host id (callers refuse duplicate tokens before this).
    pub fn new(assignments: impl IntoIterator<Item = (HostId, Vec<Token>)>) -> Ring {
        let mut by_token: BTreeMap<Token, HostId> = BTreeMap::new();
        for (host, tokens) in assignments {
            for t in tokens {
                let owner = by_token.entry(t).or_insert(host);
                *owner = (*owner).min(host);
            }
        }
        Ring {
            tokens: by_token.into_iter().collect(),
            rack_of: BTreeMap::new(),
            racks: 0,
            rack_sizes: Vec::new(),
        }
    }

    /// This ring placing replicas across the nodes' racks (`None`: the
    /// node has no rack; such nodes count as one rack together). When no
    /// node has a rack, placement stays the plain walk.
    pub fn with_racks(mut self, racks: impl IntoIterator<Item = (HostId, Option<String>)>) -> Ring {
        let racks: Vec<(HostId, Option<String>)> = racks.into_iter().collect();
        self.rack_of.clear();
        self.racks = 0;
        self.rack_sizes.clear();
        if racks.iter().all(|(_, r)| r.is_none()) {
            return self;
        }
        let mut index: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for (host, rack) in racks {
            let next = index.len();
            let i = *index.entry(rack).or_insert(next);
            self.rack_of.insert(host, i);
        }
        self.racks = index.len();
        self.rack_sizes = vec![0; self.racks];
        for &i in self.rack_of.values() {
            self.rack_sizes[i] += 1;
        }
        self
    }

    /// Each node's rack index, if the ring places by rack.
    pub fn rack_of(&self, host: HostId) -> Option<usize> {
        self.rack_of.get(&host).copied()
    }

    /// Whether the ring has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Every token with its owner, in ring order.
    pub fn tokens(&self) -> &[(Token, HostId)] {
        &self.tokens
    }

    /// Number of distinct nodes.
    pub fn node_count(&self) -> usize {
        let mut hosts: Vec<HostId> = self.tokens.iter().map(|(_, h)| *h).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.len()
    }

    /// The preference list of `token`: the first `rf` distinct nodes
    /// clockwise (fewer if the ring has fewer nodes).
    pub fn replicas(&self, token: Token, rf: usize) -> Vec<HostId> {
        let n = self.tokens.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.tokens.partition_point(|(t, _)| *t < token) % n;
        self.walk(start, rf)
    }

    fn walk(&self, start: usize, rf: usize) -> Vec<HostId> {
        if self.racks > 1 {
            return self.walk_racks(start, rf);
        }
        let n = self.tokens.len();
        let mut out = Vec::with_capacity(rf);
        for i in 0..n {
            let host = self.tokens[(start + i) % n].1;
            if !out.contains(&host) {
                out.push(host);
                if out.len() == rf {
                    break;
                }
            }
        }
        out
    }

    /// The rack-aware walk: candidates in ring order, then picked in
    /// rounds: round `k` takes, in ring order, each rack's next node while
    /// the rack holds fewer than `k` replicas. The walk stops once every
    /// rack has as many candidates as it could be given (or the ring is
    /// done), so a range costs a few racks' worth of tokens.
    fn walk_racks(&self, start: usize, rf: usize) -> Vec<HostId> {
        let n = self.tokens.len();
        let most = rf.div_ceil(self.racks);
        // A node the rack map does not know (never, from a cluster map)
        // counts as one more rack.
        let mut per_rack = vec![0usize; self.racks + 1];
        let mut candidates: Vec<(HostId, usize)> = Vec::new();
        for i in 0..n {
            let host = self.tokens[(start + i) % n].1;
            if candidates.iter().any(|(h, _)| *h == host) {
                continue;
            }
            let rack = self.rack_of(host).unwrap_or(self.racks);
            candidates.push((host, rack));
            per_rack[rack] += 1;
            let enough = (0..self.racks).all(|r| per_rack[r] >= most.min(self.rack_sizes[r]));
            if candidates.len() >= rf && enough {
                break;
            }
        }
        let mut out = Vec::with_capacity(rf);
        let mut held = vec![0usize; self.racks + 1];
        let mut taken = vec![false; candidates.len()];
        for round in 1..=rf {
            for (i, &(host, rack)) in candidates.iter().enumerate() {
                if !taken[i] && held[rack] < round {
                    taken[i] = true;
                    held[rack] += 1;
                    out.push(host);
                    if out.len() == rf {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Every range with its preference list.
    pub fn ranges(&self, rf: usize) -> Vec<TokenRange> {
        let n = self.tokens.len();
        (0..n)
            .map(|i| TokenRange {
                start: self.tokens[(i + n - 1) % n].0,
                end: self.tokens[i].0,
                replicas: self.walk(i, rf),
            })
            .collect()
    }

    /// Each node's share of the data it holds as a replica (sums to `rf`
    /// over all nodes when there are at least `rf` nodes).
    pub fn ownership(&self, rf: usize) -> BTreeMap<HostId, f64> {
        let mut owned = BTreeMap::new();
        for range in self.ranges(rf) {
            for host in range.replicas.iter() {
                *owned.entry(*host).or_insert(0.0) += range.fraction();
            }
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring_strategy() -> impl Strategy<Value = Ring> {
        proptest::collection::vec((0u64..6, any::<u64>()), 1..40)
            .prop_map(|pairs| Ring::new(pairs.into_iter().map(|(h, t)| (HostId(h), vec![t]))))
    }

    /// A ring of `hosts` nodes with `tokens` random tokens each, node `h`
    /// in rack `h % racks`.
    fn racked(hosts: u64, tokens: usize, racks: u64, seed: u64) -> Ring {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let assignments: Vec<(HostId, Vec<Token>)> = (0..hosts)
            .map(|h| (HostId(h), (0..tokens).map(|_| next()).collect()))
            .collect();
        Ring::new(assignments)
            .with_racks((0..hosts).map(|h| (HostId(h), Some(format!("r{}", h % racks)))))
    }

    #[test]
    fn without_racks_or_in_one_rack_placement_is_the_plain_walk() {
        let plain = racked(7, 8, 1, 3);
        let none = Ring::new(plain.tokens().iter().map(|&(t, h)| (h, vec![t])));
        let unracked = none.clone().with_racks((0..7).map(|h| (HostId(h), None)));
        for range in none.ranges(3) {
            assert_eq!(plain.replicas(range.end, 3), range.replicas);
            assert_eq!(unracked.replicas(range.end, 3), range.replicas);
        }
    }

    proptest! {
        /// With at least `rf` racks, every range's replicas are on `rf`
        /// distinct racks; with fewer, on every rack, and no rack holds
        /// more than `ceil(rf / racks)` of them. Replicas stay distinct
        /// and start at the owner.
        #[test]
        fn replicas_spread_over_racks(hosts in 1u64..12, racks in 1u64..5, rf in 1usize..5, seed in any::<u64>()) {
            let ring = racked(hosts, 4, racks, seed);
            let racks_present = hosts.min(racks) as usize;
            for range in ring.ranges(rf) {
                let r = &range.replicas;
                prop_assert_eq!(r.len(), rf.min(hosts as usize));
                let mut distinct = r.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), r.len());
                prop_assert_eq!(r[0], ring.replicas(range.end, rf)[0]);
                let mut per_rack = vec![0usize; racks as usize];
                for h in r {
                    per_rack[(h.0 % racks) as usize] += 1;
                }
                let spread = per_rack.iter().filter(|&&c| c > 0).count();
                prop_assert_eq!(spread, r.len().min(racks_present), "{:?}", r);
                let most = per_rack.iter().copied().max().unwrap_or(0);
                prop_assert!(most <= r.len().div_ceil(racks_present), "{:?}", r);
            }
        }

        #[test]
        fn replicas_are_distinct_and_start_at_the_owner(ring in ring_strategy(), token in any::<u64>(), rf in 1usize..5) {
            let replicas = ring.replicas(token, rf);
            prop_assert_eq!(replicas.len(), rf.min(ring.node_count()));
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), replicas.len());
            let owner = ring.tokens().iter().find(|(t, _)| *t >= token).unwrap_or(&ring.tokens()[0]).1;
            prop_assert_eq!(replicas[0], owner);
        }

        #[test]
        fn ranges_cover_the_ring_once(ring in ring_strategy()) {
            let total: f64 = ring.ranges(1).iter().map(TokenRange::fraction).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{total}");
        }

        #[test]
        fn ownership_sums_to_rf(ring in ring_strategy(), rf in 1usize..4) {
            let sum: f64 = ring.ownership(rf).values().sum();
            let expect = rf.min(ring.node_count()) as f64;
            prop_assert!((sum - expect).abs() < 1e-6, "{sum} vs {expect}");
        }
    }

    #[test]
    fn a_key_goes_to_the_next_token_clockwise() {
        let ring = Ring::new([
            (HostId(1), vec![100]),
            (HostId(2), vec![200]),
            (HostId(3), vec![300]),
        ]);
        assert_eq!(ring.replicas(150, 2), vec![HostId(2), HostId(3)]);
        assert_eq!(ring.replicas(200, 1), vec![HostId(2)]);
        assert_eq!(
            ring.replicas(301, 3),
            vec![HostId(1), HostId(2), HostId(3)],
            "wraps around"
        );
    }
}
