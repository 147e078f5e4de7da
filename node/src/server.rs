//! The TCP server: clients and other nodes speak the same framed protocol.
//!
//! One task per connection reads frames; each request runs in its own task,
//! so a connection can pipeline. A connection has at most `max_in_flight`
//! requests running: past that the node stops reading from it, and TCP
//! pushes back on the sender. Responses go through one writer task per
//! connection.
//!
//! Client requests go to the [`Coordinator`]; internal ones (replica
//! reads) are served from this node's storage after checking the sender's
//! metadata epoch: a sender routing with an older ring is told
//! `StaleRing`. Replica writes are merged whatever the epoch (cells are
//! states). Raft RPCs and operator requests go to the [`Topology`] when
//! the node runs with Raft-agreed metadata.
//!
//! Bad frames whose length prefix is intact are answered with a typed error
//! and the connection stays open; a frame over the size limit closes it
//! after an error frame, since the stream cannot be resynchronized.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::StreamExt;
use tally_client::frame::{write_queued, Frame, FrameCodec, HEADER_BYTES, MAX_FRAME_BYTES};
use tally_client::{ErrorCode, NodeStatus, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;

use crate::coordinator::Coordinator;
use crate::membership::Membership;
use crate::query::ReadPlan;
use crate::repair::Repairer;
use crate::store::{valid_cell, OffsetClock, RequestError};
use crate::topology::Topology;
use tally_client::admin::{AdminReply, AdminRequest};

/// Shared state of the server.
#[derive(Debug)]
pub struct Server {
    coordinator: Arc<Coordinator>,
    repairer: Arc<Repairer>,
    membership: Arc<Membership>,
    /// `None` with static membership (`--members`).
    topology: Option<Arc<Topology>>,
    /// The clock test hooks may move (`None`: hooks disabled).
    test_clock: Option<Arc<OffsetClock>>,
    address: String,
    started: Instant,
    max_in_flight: usize,
}

fn error_response(e: RequestError) -> Response {
    Response::Error {
        code: e.code,
        message: e.message,
    }
}

fn stale_ring(theirs: u64, ours: u64) -> Response {
    Response::Error {
        code: ErrorCode::StaleRing,
        message: format!("sender routes with epoch {theirs}, this node has {ours}"),
    }
}

impl Server {
    /// A server for `coordinator` and `membership`, reachable at `address`;
    /// `test_clock` enables the clock test hook.
    pub fn new(
        coordinator: Arc<Coordinator>,
        repairer: Arc<Repairer>,
        membership: Arc<Membership>,
        topology: Option<Arc<Topology>>,
        test_clock: Option<Arc<OffsetClock>>,
        address: String,
        max_in_flight: usize,
    ) -> Arc<Server> {
        Arc::new(Server {
            repairer,
            coordinator,
            membership,
            topology,
            test_clock,
            address,
            started: Instant::now(),
            max_in_flight,
        })
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let server = self.clone();
                        tokio::spawn(async move {
                            server.connection(stream).await;
                            tracing::debug!(%peer, "connection closed");
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let mut reader = FramedRead::new(read_half, FrameCodec::default());
        let (out, responses) = mpsc::channel::<Frame>(self.max_in_flight);
        // A failed write means the client is gone; the reader sees it too.
        let writer_task = tokio::spawn(write_queued(responses, write_half));
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        while let Some(item) = reader.next().await {
            let frame = match item {
                Ok(Ok(frame)) => frame,
                Ok(Err(bad)) => {
                    let response = Response::Error {
                        code: bad.code,
                        message: bad.reason,
                    };
                    if send(&out, bad.request_id, 0, &response).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    // Oversized frame or I/O error: the stream cannot be trusted.
                    let response = Response::Error {
                        code: ErrorCode::FrameTooLarge,
                        message: e.to_string(),
                    };
                    let _ = send(&out, 0, 0, &response).await;
                    break;
                }
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (server, out) = (self.clone(), out.clone());
            tokio::spawn(async move {
                let response = match Request::decode(frame.kind, &frame.body) {
                    Ok(request) => server.handle(request).await,
                    Err(e) => Response::Error {
                        code: e.code,
                        message: e.reason,
                    },
                };
                let _ = send(&out, frame.request_id, frame.kind, &response).await;
                drop(permit);
            });
        }
        drop(out);
        let _ = writer_task.await;
    }

    async fn handle(&self, request: Request) -> Response {
        let coordinator = &self.coordinator;
        let store = coordinator.store();
        let now_ms = store.clock().now_ms();
        let epoch = coordinator.epoch();
        let plan = |build: &dyn Fn(&crate::Namespaces) -> Result<ReadPlan, RequestError>| {
            build(&store.namespaces_read())
        };
        match request {
            Request::Increment {
                consistency,
                timeout_ms,
                items,
            } => Response::Increment(
                coordinator
                    .increment(consistency, timeout_ms, items, false)
                    .await,
            ),
            Request::ForwardedIncrement {
                epoch: theirs,
                consistency,
                timeout_ms,
                items,
            } => {
                if theirs < epoch {
                    return stale_ring(theirs, epoch);
                }
                Response::Increment(
                    coordinator
                        .increment(consistency, timeout_ms, items, true)
                        .await,
                )
            }
            Request::Total {
                consistency,
                namespace,
                key,
            } => match plan(&|ns| ReadPlan::total(ns, store.limits(), &namespace, &key, now_ms)) {
                Ok(plan) => coordinator.read(consistency, plan).await,
                Err(e) => error_response(e),
            },
            Request::Range {
                consistency,
                namespace,
                key,
                resolution,
                start_ms,
                end_ms,
            } => match plan(&|ns| {
                ReadPlan::range(
                    ns,
                    store.limits(),
                    &namespace,
                    &key,
                    resolution,
                    start_ms,
                    end_ms,
                )
            }) {
                Ok(plan) => coordinator.read(consistency, plan).await,
                Err(e) => error_response(e),
            },
            Request::Stats {
                consistency,
                namespace,
                key,
                start_ms,
                end_ms,
            } => match plan(&|ns| {
                ReadPlan::stats(ns, store.limits(), &namespace, &key, start_ms, end_ms)
            }) {
                Ok(plan) => coordinator.read(consistency, plan).await,
                Err(e) => error_response(e),
            },
            Request::ReplicaWrite {
                epoch: theirs,
                cells,
            } => {
                // Cells are states: merging one is safe whatever ring the
                // sender routed with, so an older epoch is not refused
                // here (refusing would turn every metadata change into
                // indeterminate writes). Streaming waits until every live
                // node gossips the new epoch before it reads old owners.
                let _ = theirs;
                if let Some(bad) = cells.iter().position(|c| !valid_cell(c)) {
                    return Response::Error {
                        code: ErrorCode::MalformedFrame,
                        message: format!("cell {bad} is not a well-formed counter cell"),
                    };
                }
                match coordinator.writer().merge(cells).await {
                    Ok(()) => Response::Ack,
                    Err(code) => Response::Error {
                        code,
                        message: "merging replica cells failed".into(),
                    },
                }
            }
            Request::ReplicaRead {
                epoch: theirs,
                ranges,
            } => {
                if theirs < epoch {
                    return stale_ring(theirs, epoch);
                }
                match crate::store::read_cells_async(store, ranges).await {
                    Ok(cells) => Response::Cells(cells),
                    Err(e) => error_response(e),
                }
            }
            Request::Routing => Response::Routing(coordinator.routing()),
            Request::InspectReplicas { namespace, key } => {
                coordinator.inspect(&namespace, &key).await
            }
            Request::Ping => Response::Ack,
            Request::MerkleTree {
                epoch: theirs,
                start_token,
                end_token,
                depth,
            } => {
                if theirs < epoch {
                    return stale_ring(theirs, epoch);
                }
                let store = store.clone();
                match tokio::task::spawn_blocking(move || {
                    store.merkle_leaves(start_token, end_token, depth)
                })
                .await
                {
                    Ok(Ok(hashes)) => Response::Hashes(hashes),
                    Ok(Err(e)) => error_response(e),
                    Err(e) => Response::Error {
                        code: ErrorCode::Internal,
                        message: format!("tree task failed: {e}"),
                    },
                }
            }
            Request::Repair => match self.repairer.repair_all().await {
                Ok(report) => Response::RepairReport(report),
                Err(message) => Response::Error {
                    code: ErrorCode::Overloaded,
                    message,
                },
            },
            Request::AdjustClock { offset_ms } => match &self.test_clock {
                Some(clock) => {
                    clock.set_offset_ms(offset_ms);
                    tracing::warn!(offset_ms, "test hook: wall clock shifted");
                    Response::Ack
                }
                None => Response::Error {
                    code: ErrorCode::Forbidden,
                    message: "test hooks are disabled on this node (start it with --test-hooks)"
                        .into(),
                },
            },
            Request::Gossip { from, payload } => self.membership.handle(from, &payload),
            Request::Raft { payload } => match &self.topology {
                Some(t) => match t.group().handle(&payload).await {
                    Ok(reply) => Response::Raft(reply),
                    Err(message) => Response::Error {
                        code: ErrorCode::MalformedFrame,
                        message,
                    },
                },
                None => Response::Error {
                    code: ErrorCode::Forbidden,
                    message: "this node runs with static membership (--members): no Raft".into(),
                },
            },
            Request::Admin { payload } => {
                let reply = match (AdminRequest::from_bytes(&payload), &self.topology) {
                    (Err(reason), _) => AdminReply::Refused { reason },
                    (Ok(_), None) => AdminReply::Refused {
                        reason: "this node runs with static membership (--members): topology changes need a cluster started with --init/--seed".into(),
                    },
                    (Ok(request), Some(t)) => t.handle(request).await,
                };
                Response::Admin(reply.to_bytes())
            }
            Request::ListNamespaces => {
                Response::Namespaces(store.namespaces_read().iter().map(|ns| ns.info()).collect())
            }
            Request::DescribeNamespace { name } => match store.namespaces_read().get(&name) {
                Some(ns) => Response::Namespaces(vec![ns.info()]),
                None => Response::Error {
                    code: ErrorCode::UnknownNamespace,
                    message: format!("unknown namespace {name:?}"),
                },
            },
            Request::Status => self.status().await,
        }
    }

    async fn status(&self) -> Response {
        let coordinator = self.coordinator.clone();
        let (hints_pending, disk_bytes) = tokio::task::spawn_blocking(move || {
            let pending = coordinator.hints().pending().unwrap_or(u64::MAX);
            let disk: u64 = coordinator
                .store()
                .db()
                .level_summary()
                .iter()
                .map(|(_, bytes)| bytes)
                .sum();
            (pending, disk)
        })
        .await
        .unwrap_or((u64::MAX, 0));
        let store = self.coordinator.store();
        let counts = self.coordinator.hints().counts();
        Response::Status(NodeStatus {
            node_id: u64::from(store.identity().host_id),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            address: self.address.clone(),
            increments: store.increments(),
            disk_bytes,
            epoch: self.coordinator.epoch(),
            hints_pending,
            hints_written: counts.written,
            hints_replayed: counts.replayed,
            hints_dropped: counts.dropped,
            read_repairs: self.coordinator.read_repairs(),
            repair_ranges_done: self.repairer.progress().0,
            repair_ranges_total: self.repairer.progress().1,
            peers: {
                let mut peers = self.coordinator.peers().statuses();
                self.membership.annotate(&mut peers);
                peers
            },
        })
    }
}

async fn send(
    out: &mpsc::Sender<Frame>,
    request_id: u64,
    request_kind: u8,
    response: &Response,
) -> Result<(), ()> {
    let mut body = BytesMut::new();
    let mut kind = response.encode_body(request_kind, &mut body);
    if body.len() + HEADER_BYTES > MAX_FRAME_BYTES {
        let too_big = Response::Error {
            code: ErrorCode::InvalidRange,
            message: format!(
                "the answer of {} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit; ask for less",
                body.len()
            ),
        };
        body.clear();
        kind = too_big.encode_body(request_kind, &mut body);
    }
    out.send(Frame {
        kind,
        request_id,
        body: body.freeze(),
    })
    .await
    .map_err(|_| ())
}
