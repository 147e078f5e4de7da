//! [`Ring`]: the consistent-hash ring with virtual nodes, and replica
//! placement.
//!
//! Each node owns several tokens (virtual nodes) on a 64-bit ring. A key's
//! token is hashed from its partition key (`tally_client::token`); the
//! key's preference list is the first `rf` *distinct* nodes met walking
//! clockwise from it (the owner of the first token `>=` the key's token,
//! wrapping around). Token `t` owns the range `(previous token, t]`.

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
        }
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

    proptest! {
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
