//! This node as another node's replica (DESIGN.md's replica service):
//! forwarded increments to lead, replica writes to merge, replica reads,
//! Merkle trees, the op ids it recorded for a leader, and its summary of
//! what it led (for `Top`). A sender routing
//! with an older ring than this node's is told `StaleRing`, in one place
//! (`Server::stale_ring`); replica writes are merged whatever the
//! epoch, since cells are states.

use tally_client::{CellBatch, Consistency, ErrorCode, Increment, KeyRange, Resolution, Response};

use super::client::refusal;
use super::Server;
use crate::coordinator::top::summary_response;
use crate::replica::store::read::{heavy_read, read_cells_async};
use crate::replica::store::valid_cell;

impl Server {
    /// The `StaleRing` answer when the sender routes with an epoch older
    /// than this node's.
    fn stale_ring(&self, theirs: u64) -> Option<Response> {
        let ours = self.ctx.epoch();
        (theirs < ours).then(|| Response::Error {
            code: ErrorCode::StaleRing,
            message: format!("sender routes with epoch {theirs}, this node has {ours}"),
        })
    }

    /// A part of a batch another coordinator sent here to lead.
    pub(super) async fn forwarded_increment(
        &self,
        epoch: u64,
        consistency: Consistency,
        timeout_ms: u32,
        items: Vec<Increment>,
    ) -> Response {
        if let Some(stale) = self.stale_ring(epoch) {
            return stale;
        }
        Response::Increment(
            self.coordinator
                .increment(consistency, timeout_ms, items, true)
                .await,
        )
    }

    /// Cell states to merge (replication, hints, read repair). Cells are
    /// states: merging one is safe whatever ring the sender routed with,
    /// so an older epoch is not refused here (refusing would turn every
    /// metadata change into indeterminate writes). Streaming waits until
    /// every live node gossips the new epoch before it reads old owners.
    pub(super) async fn replica_write(&self, cells: CellBatch) -> Response {
        if let Some(bad) = cells
            .iter()
            .position(|(key, value)| !valid_cell(key, value))
        {
            return Response::Error {
                code: ErrorCode::MalformedFrame,
                message: format!("cell {bad} is not a well-formed counter cell"),
            };
        }
        match self.ctx.writer.merge(cells).await {
            Ok(()) => Response::Ack,
            Err(code) => Response::Error {
                code,
                message: "merging replica cells failed".into(),
            },
        }
    }

    /// This node's cells in `ranges`.
    pub(super) async fn replica_read(&self, epoch: u64, ranges: Vec<KeyRange>) -> Response {
        if let Some(stale) = self.stale_ring(epoch) {
            return stale;
        }
        match read_cells_async(&self.ctx.store, ranges).await {
            Ok(cells) => Response::Cells(cells),
            Err(e) => refusal(e),
        }
    }

    /// The Merkle leaves of this node's cells in `(start_token, end_token]`.
    pub(super) async fn merkle_tree(
        &self,
        epoch: u64,
        start_token: u64,
        end_token: u64,
        depth: u8,
    ) -> Response {
        if let Some(stale) = self.stale_ring(epoch) {
            return stale;
        }
        match heavy_read(&self.ctx.store, move |store| {
            store.merkle_leaves(start_token, end_token, depth)
        })
        .await
        .and_then(|r| r)
        {
            Ok(hashes) => Response::Hashes(hashes),
            Err(e) => refusal(e),
        }
    }

    /// The op ids this node recorded as led by `leader` (for a leader
    /// relearning them after an unclean stop).
    /// This node's summary of what it led in a window (`Top`'s step 1).
    pub(super) fn top_summary(
        &self,
        namespace: &str,
        resolution: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> Response {
        let summary = self
            .ctx
            .store
            .trending()
            .summary(namespace, resolution, start_ms, end_ms);
        summary_response(&summary)
    }

    pub(super) async fn led_op_ids(&self, leader: u64) -> Response {
        match heavy_read(&self.ctx.store, move |store| store.led_op_ids(leader))
            .await
            .and_then(|r| r)
        {
            Ok(ids) => Response::OpIds(ids),
            Err(e) => refusal(e),
        }
    }
}
