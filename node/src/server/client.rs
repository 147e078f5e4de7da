//! Client requests: increments, adds and reads, handed to the coordinator in its
//! own terms and answered in the wire's. The only place a read's answer
//! or refusal becomes a `Response`.

use tally_client::{Add, Consistency, Increment, Response};

use super::Server;
use crate::coordinator::top::TopQuery;
use crate::counter::limits::RequestError;
use crate::counter::read_plan::{Read, ReadAnswer, ReadKind};

impl Server {
    /// A batch of increments from a client.
    pub(super) async fn increment(
        &self,
        consistency: Consistency,
        timeout_ms: u32,
        items: Vec<Increment>,
    ) -> Response {
        Response::Increment(
            self.coordinator
                .increment(consistency, timeout_ms, items, false)
                .await,
        )
    }

    /// Adds members to distinct counters.
    pub(super) async fn add(
        &self,
        consistency: Consistency,
        timeout_ms: u32,
        items: Vec<Add>,
    ) -> Response {
        Response::Increment(self.coordinator.add(consistency, timeout_ms, items).await)
    }

    /// A total, range, stats or distinct read of one key.
    pub(super) async fn read(
        &self,
        consistency: Consistency,
        namespace: String,
        key: Vec<u8>,
        kind: ReadKind,
    ) -> Response {
        let read = Read {
            namespace,
            key,
            kind,
        };
        match self.coordinator.read(consistency, read).await {
            Ok(ReadAnswer::Total(count)) => Response::Total(count),
            Ok(ReadAnswer::Range(points)) => Response::Range(points),
            Ok(ReadAnswer::Stats { total, cells_read }) => Response::Stats { total, cells_read },
            Ok(ReadAnswer::Distinct { points, union }) => Response::Distinct { points, union },
            Err(e) => refusal(e),
        }
    }
    /// The largest keys of a window, with exact counts.
    pub(super) async fn top(&self, consistency: Consistency, query: TopQuery) -> Response {
        match self.coordinator.top(consistency, query).await {
            Ok(a) => Response::Top {
                keys: a.keys,
                certain_above: a.certain_above,
                nodes_missing: a.nodes_missing,
            },
            Err(e) => refusal(e),
        }
    }
}

/// A refused request, as the wire says it.
pub(super) fn refusal(e: RequestError) -> Response {
    Response::Error {
        code: e.code,
        message: e.message,
    }
}
