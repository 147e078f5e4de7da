//! Read repair: the replicas' cells merged by the CRDT rule, and the
//! merged cells sent to each replica that was behind. Reads use it (before
//! answering QUORUM and ALL, in the background for a sample of ONE), and
//! so does anti-entropy for the leaves that differ.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tally_client::CellState;
use tally_consensus::{ClusterMap, HostId};

use crate::counter::cell_key;
use crate::counter::cell_merge::CellValue;
use crate::replica::write_pipeline::WritePipeline;
use crate::replication::replicator::Replicator;

/// Sends stale replicas what they lack, and counts the cells repaired.
#[derive(Debug)]
pub struct ReadRepair {
    self_id: HostId,
    writer: WritePipeline,
    replicator: Arc<Replicator>,
    repaired: AtomicU64,
}

impl ReadRepair {
    /// Repairs for node `self_id`: its own copy through `writer`, the
    /// others' through `replicator`.
    pub fn new(self_id: HostId, writer: WritePipeline, replicator: Arc<Replicator>) -> ReadRepair {
        ReadRepair {
            self_id,
            writer,
            replicator,
            repaired: AtomicU64::new(0),
        }
    }

    /// Cells repaired since start.
    pub fn repaired(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    /// Sends each stale replica the merged cells it lacks; `true` when
    /// every one acknowledged before the deadline.
    pub async fn repair(
        &self,
        map: &ClusterMap,
        stale: Vec<(HostId, Vec<CellState>)>,
        deadline: Instant,
    ) -> bool {
        let writes = stale.into_iter().map(|(host, cells)| async move {
            let n = cells.len() as u64;
            let ok = if host == self.self_id {
                self.writer.merge(cells.into()).await.is_ok()
            } else {
                let answer = self
                    .replicator
                    .send(host, map.epoch(), Arc::new(cells), deadline);
                matches!(
                    tokio::time::timeout_at(deadline.into(), answer).await,
                    Ok(Ok(true))
                )
            };
            if ok {
                self.repaired.fetch_add(n, Ordering::Relaxed);
            }
            ok
        });
        futures_util::future::join_all(writes)
            .await
            .into_iter()
            .all(|ok| ok)
    }
}

/// The replicas' cells merged by the CRDT rule, and for each replica that
/// was behind, the merged cells it lacks.
#[allow(clippy::type_complexity)]
pub fn merge_replicas(
    got: &[(HostId, Vec<CellState>)],
) -> Result<(BTreeMap<Vec<u8>, CellValue>, Vec<(HostId, Vec<CellState>)>), String> {
    let mut merged: BTreeMap<Vec<u8>, CellValue> = BTreeMap::new();
    for (host, cells) in got {
        for cell in cells {
            let set = cell_key::kind_of(&cell.key)
                .and_then(|kind| CellValue::decode(kind, &cell.value))
                .ok_or_else(|| format!("host {} sent a malformed cell", host.0))?;
            match merged.get_mut(&cell.key) {
                Some(m) => m.merge(&set),
                None => {
                    merged.insert(cell.key.clone(), set);
                }
            }
        }
    }
    // The common case: every replica sent the same bytes.
    if got.windows(2).all(|w| w[0].1 == w[1].1) {
        return Ok((merged, Vec::new()));
    }
    let encoded: Vec<(&Vec<u8>, Vec<u8>)> = merged.iter().map(|(k, s)| (k, s.encode())).collect();
    let mut stale = Vec::new();
    for (host, cells) in got {
        let have: HashMap<&[u8], &[u8]> = cells
            .iter()
            .map(|c| (c.key.as_slice(), c.value.as_slice()))
            .collect();
        let missing: Vec<CellState> = encoded
            .iter()
            .filter(|(k, v)| have.get(k.as_slice()) != Some(&v.as_slice()))
            .map(|(k, v)| CellState {
                key: (*k).clone(),
                value: v.clone(),
            })
            .collect();
        if !missing.is_empty() {
            stale.push((*host, missing));
        }
    }
    Ok((merged, stale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::counter::cell_key::CellKind;
    use crate::counter::hll::Sketch;
    use crate::counter::shard_set::{Shard, ShardSet};
    use tally_client::Resolution;

    fn cell_at(kind: CellKind, key: &[u8]) -> Vec<u8> {
        cell_key::encode(kind, "t", key, Resolution::Total, 0)
    }

    fn cell(key: &[u8], shards: &[(u64, u64, i64)]) -> CellState {
        let mut set = ShardSet::default();
        for &(id, clock, sum) in shards {
            set.merge(&ShardSet::single(Shard {
                id,
                clock,
                sum,
                count: clock,
            }));
        }
        CellState {
            key: cell_at(CellKind::Counter, key),
            value: set.encode(),
        }
    }

    fn sketch(key: &[u8], members: &[&str]) -> CellState {
        let mut s = Sketch::new(14);
        members.iter().for_each(|m| s.add(m.as_bytes()));
        CellState {
            key: cell_at(CellKind::Distinct, key),
            value: s.encode(),
        }
    }

    #[test]
    fn distinct_cells_merge_as_sketches() {
        let one = vec![sketch(b"v", &["ann", "bob"])];
        let two = vec![sketch(b"v", &["bob", "cy"])];
        let (merged, stale) = merge_replicas(&[(HostId(1), one), (HostId(2), two)]).unwrap();
        let CellValue::Distinct(s) = &merged[&cell_at(CellKind::Distinct, b"v")] else {
            panic!("a distinct cell merged as a counter");
        };
        assert_eq!(s.estimate().round(), 3.0);
        let union = sketch(b"v", &["ann", "bob", "cy"]);
        assert_eq!(
            stale,
            vec![(HostId(1), vec![union.clone()]), (HostId(2), vec![union])]
        );
    }

    #[test]
    fn identical_replicas_need_no_repair() {
        let a = vec![cell(b"k", &[(1, 3, 30)])];
        let (merged, stale) = merge_replicas(&[(HostId(1), a.clone()), (HostId(2), a)]).unwrap();
        assert_eq!(merged.len(), 1);
        assert!(stale.is_empty());
    }

    #[test]
    fn each_stale_replica_gets_exactly_what_it_lacks() {
        let one = vec![cell(b"a", &[(1, 3, 30)]), cell(b"b", &[(1, 1, 1)])];
        let two = vec![cell(b"a", &[(1, 2, 20), (2, 1, 5)])];
        let (merged, stale) = merge_replicas(&[(HostId(1), one), (HostId(2), two)]).unwrap();
        let CellValue::Counter(a) = &merged[&cell_at(CellKind::Counter, b"a")] else {
            panic!("a counter cell merged as a sketch");
        };
        assert_eq!(a.sum(), 35);
        let by_host: HashMap<HostId, Vec<CellState>> = stale.into_iter().collect();
        let both = cell(b"a", &[(1, 3, 30), (2, 1, 5)]);
        assert_eq!(
            by_host[&HostId(1)],
            vec![both.clone()],
            "host 1 lacks shard 2"
        );
        assert_eq!(
            by_host[&HostId(2)],
            vec![both, cell(b"b", &[(1, 1, 1)])],
            "host 2 is behind on a and lacks b"
        );
    }

    #[test]
    fn a_malformed_replica_cell_is_an_error_not_a_panic() {
        let bad = vec![CellState {
            key: cell_at(CellKind::Counter, b"a"),
            value: vec![1, 2, 3],
        }];
        assert!(merge_replicas(&[(HostId(1), bad)]).is_err());
    }
}
