//! [`ReplicaReads`]: the cells of some key ranges from R replicas, this
//! node's own copy read locally, the others over the network, a failed
//! replica replaced by the next candidate and a late one joined by the
//! next (speculative retry). Reads, the debug read and anti-entropy all
//! gather this way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tally_client::{CellState, ErrorCode, KeyRange, Request, Response};
use tally_consensus::{ClusterMap, HostId};

use crate::cluster::peers::Peers;
use crate::counter::limits::{refuse, RequestError};
use crate::replica::store::read::read_cells_async;
use crate::replica::store::CounterStore;

/// One replica's answer to a read.
pub type ReplicaCells = (HostId, Result<Vec<CellState>, String>);

/// Reads cells from replicas.
#[derive(Debug)]
pub struct ReplicaReads {
    self_id: HostId,
    store: Arc<CounterStore>,
    peers: Arc<Peers>,
    speculative_retry: Duration,
    /// Replicas asked because another was late.
    speculated: AtomicU64,
}

impl ReplicaReads {
    /// Reads for node `self_id` (its own copy from `store`); a replica
    /// still silent after `speculative_retry` is joined by the next.
    pub fn new(
        self_id: HostId,
        store: Arc<CounterStore>,
        peers: Arc<Peers>,
        speculative_retry: Duration,
    ) -> ReplicaReads {
        ReplicaReads {
            self_id,
            store,
            peers,
            speculative_retry,
            speculated: AtomicU64::new(0),
        }
    }

    /// Replicas asked since start because another was late (speculative
    /// retry).
    pub fn speculated(&self) -> u64 {
        self.speculated.load(Ordering::Relaxed)
    }

    /// Cells from `wanted` replicas out of `candidates`, replacing failed
    /// ones by the next candidate; `Unavailable` or `Timeout` when too few
    /// answered.
    pub async fn gather(
        &self,
        map: &ClusterMap,
        ranges: &[KeyRange],
        candidates: &[HostId],
        wanted: usize,
        deadline: Instant,
    ) -> Result<Vec<(HostId, Vec<CellState>)>, RequestError> {
        let request = Request::ReplicaRead {
            epoch: map.epoch(),
            ranges: ranges.to_vec(),
        };
        let mut next = 0;
        let mut running = FuturesUnordered::new();
        while next < wanted.min(candidates.len()) {
            running.push(self.read_replica(candidates[next], &request, deadline));
            next += 1;
        }
        let mut got = Vec::with_capacity(wanted);
        let mut last_error = String::new();
        let mut speculate_at = Instant::now() + self.speculative_retry;
        while got.len() < wanted {
            // A replica that neither answers nor fails (paused, overloaded,
            // behind a partition) would hold the read until the deadline:
            // past `speculative_retry`, ask the next replica as well.
            let wake = if next < candidates.len() {
                speculate_at.min(deadline)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wake.into(), running.next()).await {
                Err(_) if Instant::now() < deadline && next < candidates.len() => {
                    self.speculated.fetch_add(1, Ordering::Relaxed);
                    running.push(self.read_replica(candidates[next], &request, deadline));
                    next += 1;
                    speculate_at = Instant::now() + self.speculative_retry;
                }
                Ok(Some((host, Ok(cells)))) => got.push((host, cells)),
                Ok(Some((host, Err(e)))) => {
                    last_error = format!("host {}: {e}", host.0);
                    if next < candidates.len() {
                        running.push(self.read_replica(candidates[next], &request, deadline));
                        next += 1;
                    }
                }
                Ok(None) => {
                    return Err(refuse(
                        ErrorCode::Unavailable,
                        format!(
                            "{} of {wanted} replicas answered; last error: {last_error}",
                            got.len()
                        ),
                    ))
                }
                Err(_) => {
                    return Err(refuse(
                        ErrorCode::Timeout,
                        format!("{} of {wanted} replicas answered in time", got.len()),
                    ))
                }
            }
        }
        Ok(got)
    }

    /// One replica's cells for a `ReplicaRead` request.
    pub async fn read_replica(
        &self,
        host: HostId,
        request: &Request,
        deadline: Instant,
    ) -> ReplicaCells {
        if host == self.self_id {
            let Request::ReplicaRead { ranges, .. } = request else {
                return (host, Err("not a read".into()));
            };
            let cells = read_cells_async(&self.store, ranges.clone())
                .await
                .map_err(|e| e.to_string());
            return (host, cells);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let cells = match self.peers.call(host, request, left).await {
            Ok(Response::Cells(cells)) => Ok(cells),
            Ok(Response::Error { code, message }) => Err(format!("{code:?}: {message}")),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err((e, _)) => Err(e.to_string()),
        };
        (host, cells)
    }
}
