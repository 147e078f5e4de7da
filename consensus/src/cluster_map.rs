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
    /// Its rack: replicas are placed across racks when members have them.
    pub rack: Option<String>,
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
    /// The replication factor is 0.
    #[error("replication factor {rf} must be at least 1")]
    BadReplicationFactor {
        /// The requested factor.
        rf: usize,
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
    /// Ranges sorted by end token: the range `(previous end, end]`, its
    /// preference list and its pending replicas.
    placement: Vec<Placement>,
}

/// One range's replicas.
#[derive(Debug, Clone)]
struct Placement {
    end: Token,
    /// Natural replicas: reads and write quorums.
    replicas: Vec<HostId>,
    /// Replicas the range gains in the topology change in progress (a
    /// joining node, or the next owner of a leaving node's range): writes
    /// go to them too, without counting towards the quorum, so that once
    /// streaming is done they hold everything.
    pending: Vec<HostId>,
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
        if replication_factor == 0 {
            return Err(MapError::BadReplicationFactor {
                rf: replication_factor,
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
        let ring = ring_of(by_id.values());
        let placement = ring
            .ranges(replication_factor)
            .into_iter()
            .map(|r| Placement {
                end: r.end,
                replicas: r.replicas,
                pending: Vec::new(),
            })
            .collect();
        Ok(ClusterMap {
            epoch,
            replication_factor,
            members: by_id,
            ring,
            placement,
        })
    }

    /// The map of a node that has not joined a cluster yet: no members, no
    /// replicas for any key (every request is `Unavailable`).
    pub fn empty() -> ClusterMap {
        ClusterMap {
            epoch: 0,
            replication_factor: 1,
            members: BTreeMap::new(),
            ring: Ring::new(Vec::new()),
            placement: Vec::new(),
        }
    }

    /// This map with a topology change in progress: `next` is the ring
    /// after the change (members joining and those that stay; their
    /// addresses are added to this map). Ranges are split at the tokens of
    /// both rings, and each gets, as pending replicas, the next ring's
    /// replicas that are not natural ones now.
    pub fn with_next(mut self, next: Vec<Member>) -> ClusterMap {
        for m in &next {
            self.members.entry(m.host_id).or_insert_with(|| m.clone());
        }
        let next_ring = ring_of(next.iter());
        if next_ring == self.ring || next_ring.is_empty() {
            return self;
        }
        let mut ends: Vec<Token> = self
            .ring
            .tokens()
            .iter()
            .chain(next_ring.tokens())
            .map(|(t, _)| *t)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        let rf = self.replication_factor;
        self.placement = ends
            .into_iter()
            .map(|end| {
                let replicas = self.ring.replicas(end, rf);
                let pending = next_ring
                    .replicas(end, rf)
                    .into_iter()
                    .filter(|h| !replicas.contains(h))
                    .collect();
                Placement {
                    end,
                    replicas,
                    pending,
                }
            })
            .collect();
        self
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
                &[],
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
                rack: None,
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

    fn placement_of(&self, token: Token) -> Option<&Placement> {
        if self.placement.is_empty() {
            return None;
        }
        let i = self.placement.partition_point(|p| p.end < token) % self.placement.len();
        Some(&self.placement[i])
    }

    /// The preference list of `token`: its replicas, primary first (at
    /// most the replication factor; fewer while the cluster is smaller).
    pub fn replicas(&self, token: Token) -> &[HostId] {
        self.placement_of(token).map_or(&[], |p| &p.replicas)
    }

    /// The pending replicas of `token` (see [`ClusterMap::with_next`]):
    /// empty unless a topology change is in progress.
    pub fn pending(&self, token: Token) -> &[HostId] {
        self.placement_of(token).map_or(&[], |p| &p.pending)
    }

    /// The natural and pending replicas of `token` in one lookup (the
    /// write path needs both).
    pub fn write_replicas(&self, token: Token) -> (&[HostId], &[HostId]) {
        self.placement_of(token)
            .map_or((&[], &[]), |p| (&p.replicas, &p.pending))
    }

    /// Every token range with its replicas, in token order.
    pub fn ranges(&self) -> Vec<TokenRange> {
        let n = self.placement.len();
        (0..n)
            .map(|i| TokenRange {
                start: self.placement[(i + n - 1) % n].end,
                end: self.placement[i].end,
                replicas: self.placement[i].replicas.clone(),
            })
            .collect()
    }

    /// Every token range with its pending replicas, where it has any.
    pub fn pending_ranges(&self) -> Vec<TokenRange> {
        let n = self.placement.len();
        (0..n)
            .filter(|&i| !self.placement[i].pending.is_empty())
            .map(|i| TokenRange {
                start: self.placement[(i + n - 1) % n].end,
                end: self.placement[i].end,
                replicas: self.placement[i].pending.clone(),
            })
            .collect()
    }
}

/// The ring of `members`, placing by their racks.
fn ring_of<'a>(members: impl Iterator<Item = &'a Member> + Clone) -> Ring {
    Ring::new(members.clone().map(|m| (m.host_id, m.tokens.clone())))
        .with_racks(members.map(|m| (m.host_id, m.rack.clone())))
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
    fn members_with_racks_get_one_replica_per_rack_now_and_while_a_node_joins() {
        let racked = |map: &ClusterMap| -> Vec<Member> {
            map.members()
                .cloned()
                .map(|m| Member {
                    rack: Some(format!("rack-{}", m.host_id.0 % 3)),
                    ..m
                })
                .collect()
        };
        let six = ClusterMap::allocate(1, 3, 16, &members(6), 9).unwrap();
        let map = ClusterMap::new(1, 3, racked(&six)).unwrap();
        let seven = ClusterMap::allocate(1, 3, 16, &members(7), 9).unwrap();
        let joining = map.clone().with_next(racked(&seven));
        for map in [&map, &joining] {
            for range in map.ranges() {
                let mut racks: Vec<u64> = range.replicas.iter().map(|h| h.0 % 3).collect();
                racks.sort_unstable();
                assert_eq!(racks, vec![0, 1, 2], "{range:?}");
            }
        }
        // The next ring's replicas are rack-spread too: after the join,
        // each range's natural and pending replicas cover its new owners.
        let after = ClusterMap::new(2, 3, racked(&seven)).unwrap();
        for range in after.ranges() {
            let mut now: Vec<HostId> = joining.replicas(range.end).to_vec();
            now.extend(joining.pending(range.end));
            assert!(range.replicas.iter().all(|h| now.contains(h)), "{range:?}");
        }
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
    fn a_change_in_progress_adds_pending_replicas_only_where_ownership_moves() {
        let three = ClusterMap::allocate(1, 3, 16, &members(3), 5).unwrap();
        let four = ClusterMap::allocate(1, 3, 16, &members(4), 5).unwrap();
        let next: Vec<Member> = four.members().cloned().collect();
        let joining = three.clone().with_next(next);
        assert!(joining.member(HostId(4)).is_some(), "its address is known");
        let mut t: u64 = 1;
        let (mut moved, mut total) = (0, 0);
        for _ in 0..5_000 {
            t = t
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            assert_eq!(joining.replicas(t), three.replicas(t), "reads stay put");
            let mut after: Vec<HostId> = joining.replicas(t).to_vec();
            after.extend_from_slice(joining.pending(t));
            for h in four.replicas(t) {
                assert!(after.contains(h), "writes reach every next replica");
            }
            total += 1;
            if !joining.pending(t).is_empty() {
                assert_eq!(joining.pending(t), &[HostId(4)]);
                moved += 1;
            }
        }
        // RF 3 over 3 nodes: every key has all three; with a fourth node
        // about 3/4 of keys gain it (it takes a quarter of 3 copies).
        let share = f64::from(moved) / f64::from(total);
        assert!((0.6..0.9).contains(&share), "{share}");
    }

    #[test]
    fn bad_member_lists_are_refused() {
        assert_eq!(
            ClusterMap::allocate(1, 3, 16, &[], 1).unwrap_err(),
            MapError::NoMembers
        );
        assert!(matches!(
            ClusterMap::allocate(1, 0, 16, &members(3), 1),
            Err(MapError::BadReplicationFactor { rf: 0 })
        ));
        let small = ClusterMap::allocate(1, 3, 16, &members(2), 1).unwrap();
        assert_eq!(
            small.replicas(7).len(),
            2,
            "fewer replicas than rf while small"
        );
        assert!(ClusterMap::empty().replicas(7).is_empty());
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
