//! [`ClusterMap`]: the data path's read-only view of cluster metadata.
//!
//! Members with their addresses, each member's tokens, the replication
//! factor and the epoch the view was built from, plus replica placement
//! computed once: every token range with its preference list, so that
//! finding a key's replicas is one binary search and no allocation. The
//! coordinator takes an `Arc<ClusterMap>` per request and never waits on
//! whoever produces new maps (static configuration today, Raft with the
//! metadata issue).

use std::collections::BTreeMap;

use rand::SeedableRng;

use crate::ring::{HostId, Ring, Token, TokenRange};
use crate::token_allocator;

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Host id (never reused).
    pub host_id: HostId,
    /// Address other nodes and clients connect to.
    pub address: String,
    /// The member's tokens.
    pub tokens: Vec<Token>,
}

/// Why a cluster map cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The member list is empty.
    #[error("a cluster needs at least one member")]
    NoMembers,
    /// Two members share a host id or an address.
    #[error("duplicate member: {0}")]
    Duplicate(String),
    /// The replication factor is 0 or larger than the member count.
    #[error("replication factor {rf} needs between 1 and {members} members")]
    BadReplicationFactor {
        /// The requested factor.
        rf: usize,
        /// How many members there are.
        members: usize,
    },
    /// Two members claim the same token, or a member has none.
    #[error("bad tokens: {0}")]
    BadTokens(String),
}

/// Members, ring and placement at one epoch.
#[derive(Debug, Clone)]
pub struct ClusterMap {
    epoch: u64,
    replication_factor: usize,
    members: BTreeMap<HostId, Member>,
    ring: Ring,
    /// `(range end token, replicas)` sorted by token: the range
    /// `(previous end, end]` and its preference list.
    placement: Vec<(Token, Vec<HostId>)>,
}

impl ClusterMap {
    /// A map of `members` (with their tokens) at `epoch`.
    pub fn new(
        epoch: u64,
        replication_factor: usize,
        members: Vec<Member>,
    ) -> Result<ClusterMap, MapError> {
        if members.is_empty() {
            return Err(MapError::NoMembers);
        }
        if replication_factor == 0 || replication_factor > members.len() {
            return Err(MapError::BadReplicationFactor {
                rf: replication_factor,
                members: members.len(),
            });
        }
        let mut by_id = BTreeMap::new();
        let mut token_owner: BTreeMap<Token, HostId> = BTreeMap::new();
        for m in members {
            if m.tokens.is_empty() {
                return Err(MapError::BadTokens(format!(
                    "host {} has no tokens",
                    m.host_id.0
                )));
            }
            for &t in &m.tokens {
                if let Some(other) = token_owner.insert(t, m.host_id) {
                    return Err(MapError::BadTokens(format!(
                        "token {t} claimed by hosts {} and {}",
                        other.0, m.host_id.0
                    )));
                }
            }
            if by_id.values().any(|o: &Member| o.address == m.address) {
                return Err(MapError::Duplicate(format!("address {}", m.address)));
            }
            if by_id.insert(m.host_id, m.clone()).is_some() {
                return Err(MapError::Duplicate(format!("host id {}", m.host_id.0)));
            }
        }
        let ring = Ring::new(by_id.values().map(|m| (m.host_id, m.tokens.clone())));
        let placement = ring
            .ranges(replication_factor)
            .into_iter()
            .map(|r| (r.end, r.replicas))
            .collect();
        Ok(ClusterMap {
            epoch,
            replication_factor,
            members: by_id,
            ring,
            placement,
        })
    }

    /// A map whose tokens are chosen by the replication-aware allocator,
    /// members joining in host id order, from a seeded generator: every
    /// node given the same member list computes the same ring. This is how
    /// a statically configured cluster agrees on tokens before the metadata
    /// issue assigns them through Raft.
    pub fn allocate(
        epoch: u64,
        replication_factor: usize,
        vnodes: usize,
        members: &[(HostId, String)],
        seed: u64,
    ) -> Result<ClusterMap, MapError> {
        let mut sorted: Vec<&(HostId, String)> = members.iter().collect();
        sorted.sort_by_key(|(h, _)| *h);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut assigned: Vec<(HostId, Vec<Token>)> = Vec::new();
        let mut out = Vec::with_capacity(sorted.len());
        for (host, address) in sorted {
            let ring = Ring::new(assigned.clone());
            let tokens = token_allocator::replication_aware(
                &ring,
                *host,
                vnodes.max(1),
                replication_factor.max(1),
                &mut rng,
            );
            assigned.push((*host, tokens.clone()));
            out.push(Member {
                host_id: *host,
                address: address.clone(),
                tokens,
            });
        }
        ClusterMap::new(epoch, replication_factor, out)
    }

    /// The epoch this map was built from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Copies of each key.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Every member, by host id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, host: HostId) -> Option<&Member> {
        self.members.get(&host)
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The preference list of `token`: its replicas, primary first.
    pub fn replicas(&self, token: Token) -> &[HostId] {
        let i = self.placement.partition_point(|(end, _)| *end < token) % self.placement.len();
        &self.placement[i].1
    }

    /// Every token range with its replicas, in token order.
    pub fn ranges(&self) -> Vec<TokenRange> {
        let n = self.placement.len();
        (0..n)
            .map(|i| TokenRange {
                start: self.placement[(i + n - 1) % n].0,
                end: self.placement[i].0,
                replicas: self.placement[i].1.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> Vec<(HostId, String)> {
        (1..=n)
            .map(|h| (HostId(h), format!("127.0.0.1:{}", 7400 + h)))
            .collect()
    }

    #[test]
    fn every_node_computes_the_same_ring_from_the_same_members() {
        let a = ClusterMap::allocate(1, 3, 16, &members(5), 42).unwrap();
        let mut shuffled = members(5);
        shuffled.reverse();
        let b = ClusterMap::allocate(1, 3, 16, &shuffled, 42).unwrap();
        assert_eq!(a.ring(), b.ring());
        assert_eq!(a.ring().tokens().len(), 5 * 16);
    }

    #[test]
    fn placement_agrees_with_the_ring_walk() {
        let map = ClusterMap::allocate(1, 3, 16, &members(6), 7).unwrap();
        let mut t: u64 = 0;
        for _ in 0..2_000 {
            t = t
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            assert_eq!(map.replicas(t), map.ring().replicas(t, 3).as_slice());
        }
        for (end, _) in map.ring().tokens() {
            assert_eq!(map.replicas(*end), map.ring().replicas(*end, 3).as_slice());
        }
    }

    #[test]
    fn bad_member_lists_are_refused() {
        assert_eq!(
            ClusterMap::allocate(1, 3, 16, &[], 1).unwrap_err(),
            MapError::NoMembers
        );
        assert!(matches!(
            ClusterMap::allocate(1, 4, 16, &members(3), 1),
            Err(MapError::BadReplicationFactor { rf: 4, members: 3 })
        ));
        let mut dup = members(3);
        dup.push((HostId(2), "127.0.0.1:9999".into()));
        assert!(matches!(
            ClusterMap::allocate(1, 3, 16, &dup, 1),
            Err(MapError::Duplicate(_))
        ));
        let mut same_addr = members(3);
        same_addr.push((HostId(4), "127.0.0.1:7401".into()));
        assert!(matches!(
            ClusterMap::allocate(1, 3, 16, &same_addr, 1),
            Err(MapError::Duplicate(_))
        ));
    }
}
