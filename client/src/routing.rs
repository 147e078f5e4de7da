//! [`RoutingTable`]: which nodes hold which keys, as nodes serve it to
//! clients.
//!
//! The ring is split into token ranges `(previous end, end]`; each range
//! lists its replicas, first the primary. A client hashes a key with
//! [`crate::token()`], finds the first range whose end is at or after the
//! token (wrapping to the first range), and sends the request to a replica,
//! so that the node it reaches leads the increment itself instead of
//! forwarding it. The table carries the metadata epoch it was built from;
//! a client refreshes it periodically and any node can still coordinate a
//! request for any key, so a stale table costs a hop, never correctness.

use crate::token::Token;

/// A node in the routing table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoutingNode {
    /// Host id (never reused).
    pub host_id: u64,
    /// Address clients connect to.
    pub address: String,
}

/// One token range and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoutingRange {
    /// Inclusive end of the range (its owning token).
    pub end_token: u64,
    /// Host ids of the replicas, primary first.
    pub replicas: Vec<u64>,
}

/// Token ranges with their replicas, and the nodes' addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoutingTable {
    /// The metadata epoch the table was built from.
    pub epoch: u64,
    /// Copies of each key.
    pub replication_factor: u32,
    /// Every member.
    pub nodes: Vec<RoutingNode>,
    /// Ranges sorted by `end_token` (strictly increasing).
    pub ranges: Vec<RoutingRange>,
}

/// Most replicas one range may list on the wire.
pub const MAX_REPLICAS: usize = 16;

impl RoutingTable {
    /// The replicas of `token`, primary first (empty for an empty table).
    pub fn replicas(&self, token: Token) -> &[u64] {
        if self.ranges.is_empty() {
            return &[];
        }
        let i = self.ranges.partition_point(|r| r.end_token < token.0) % self.ranges.len();
        &self.ranges[i].replicas
    }

    /// The address of `host_id`.
    pub fn address(&self, host_id: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.host_id == host_id)
            .map(|n| n.address.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RoutingTable {
        RoutingTable {
            epoch: 1,
            replication_factor: 2,
            nodes: vec![],
            ranges: vec![
                RoutingRange {
                    end_token: 100,
                    replicas: vec![1, 2],
                },
                RoutingRange {
                    end_token: 200,
                    replicas: vec![2, 3],
                },
            ],
        }
    }

    #[test]
    fn a_token_belongs_to_the_next_range_end_clockwise() {
        let t = table();
        assert_eq!(t.replicas(Token(0)), &[1, 2]);
        assert_eq!(t.replicas(Token(100)), &[1, 2], "ends are inclusive");
        assert_eq!(t.replicas(Token(101)), &[2, 3]);
        assert_eq!(t.replicas(Token(201)), &[1, 2], "wraps around");
        assert!(RoutingTable::default().replicas(Token(5)).is_empty());
    }
}
