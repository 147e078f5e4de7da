//! The client-facing TCP server.
//!
//! One task per connection reads frames; each request runs in its own task
//! (storage calls on the blocking pool, since a `sync` write waits for an
//! fsync), so a connection can pipeline. A connection has at most
//! `max_in_flight` requests running: past that the node stops reading from
//! it, and TCP pushes back on the client. Responses go through one writer
//! task per connection.
//!
//! Bad frames whose length prefix is intact are answered with a typed error
//! and the connection stays open; a frame over the size limit closes it
//! after an error frame, since the stream cannot be resynchronized.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::StreamExt;
use tally_client::frame::{write_queued, Frame, FrameCodec};
use tally_client::{ErrorCode, NodeStatus, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;

use crate::store::{CounterStore, RequestError};
use crate::write_pipeline::WritePipeline;

/// Shared state of the server.
#[derive(Debug)]
pub struct Server {
    store: Arc<CounterStore>,
    writer: WritePipeline,
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

impl Server {
    /// A server over `store`, reachable at `address`.
    pub fn new(
        store: Arc<CounterStore>,
        address: String,
        max_in_flight: usize,
    ) -> std::io::Result<Arc<Server>> {
        let writer = WritePipeline::start(store.clone(), 4096)?;
        Ok(Arc::new(Server {
            store,
            writer,
            address,
            started: Instant::now(),
            max_in_flight,
        }))
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
        if let Request::Increment { items, .. } = request {
            return Response::Increment(self.writer.increment(items).await);
        }
        let store = self.store.clone();
        let blocking = tokio::task::spawn_blocking(move || match request {
            Request::Increment { items, .. } => Response::Increment(store.increment(&items)),
            Request::Total { namespace, key, .. } => store
                .total(&namespace, &key)
                .map_or_else(error_response, Response::Total),
            Request::Range {
                namespace,
                key,
                resolution,
                start_ms,
                end_ms,
                ..
            } => store
                .range(&namespace, &key, resolution, start_ms, end_ms)
                .map_or_else(error_response, Response::Range),
            Request::Stats {
                namespace,
                key,
                start_ms,
                end_ms,
                ..
            } => store.stats(&namespace, &key, start_ms, end_ms).map_or_else(
                error_response,
                |(total, cells_read)| Response::Stats { total, cells_read },
            ),
            Request::ListNamespaces => {
                Response::Namespaces(store.namespaces().iter().map(|ns| ns.info()).collect())
            }
            Request::DescribeNamespace { name } => match store.namespaces().get(&name) {
                Some(ns) => Response::Namespaces(vec![ns.info()]),
                None => Response::Error {
                    code: ErrorCode::UnknownNamespace,
                    message: format!("unknown namespace {name:?}"),
                },
            },
            Request::Status => Response::Status(NodeStatus {
                node_id: u64::from(store.identity().host_id),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_ms: 0,
                address: String::new(),
                increments: store.increments(),
                disk_bytes: store
                    .db()
                    .level_summary()
                    .iter()
                    .map(|(_, bytes)| bytes)
                    .sum(),
            }),
        });
        match blocking.await {
            Ok(Response::Status(mut status)) => {
                status.uptime_ms = self.started.elapsed().as_millis() as u64;
                status.address = self.address.clone();
                Response::Status(status)
            }
            Ok(response) => response,
            Err(e) => Response::Error {
                code: ErrorCode::Internal,
                message: format!("request task failed: {e}"),
            },
        }
    }
}

async fn send(
    out: &mpsc::Sender<Frame>,
    request_id: u64,
    request_kind: u8,
    response: &Response,
) -> Result<(), ()> {
    let mut body = BytesMut::new();
    let kind = response.encode_body(request_kind, &mut body);
    out.send(Frame {
        kind,
        request_id,
        body: body.freeze(),
    })
    .await
    .map_err(|_| ())
}
