//! The TCP server: clients and other nodes speak the same framed protocol.
//!
//! One task per connection reads frames; each request runs in its own task,
//! so a connection can pipeline. A connection has at most
//! `max_in_flight_per_connection` requests running: past that the node
//! stops reading from it, and TCP pushes back on the sender. Responses go
//! through one writer task per connection.
//!
//! Careless and hostile clients are bounded ([`Admission`]): connections,
//! requests in flight and bytes held are counted node-wide, and a request
//! without room is answered `Overloaded` before any work is queued for it.
//! A connection is closed when it is idle too long, when a frame arrives
//! too slowly (slowloris), or when its answers are not read; the reads
//! still running for it are stopped then, so a client that went away
//! leaves no queue of work behind.
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

mod admin;
pub mod admission;
mod client;
mod gate;
mod metrics;
mod overview;
mod replica;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::SinkExt;
use tally_client::frame::{
    parse_frame, BadFrame, Frame, FrameCodec, HEADER_BYTES, MAX_FRAME_BYTES,
};
use tally_client::{ErrorCode, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{Encoder, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::cluster::membership::Membership;
use crate::context::NodeContext;
use crate::convergence::anti_entropy::Repairer;
use crate::coordinator::top::TopQuery;
use crate::coordinator::Coordinator;
use crate::counter::read_plan::ReadKind;
use crate::log_limit::LogLimit;
use crate::metrics::RequestMetrics;
use crate::security::tls::{looks_like_tls, Tls};
use crate::security::{Access, Session};
use crate::server::admission::{Admission, HeldBytes, Refusal, RequestSlot};
use crate::topology::Topology;
use gate::Turned;

/// The services a server hands requests to.
#[derive(Debug)]
pub struct Services {
    /// Client requests.
    pub coordinator: Arc<Coordinator>,
    /// `tally repair`.
    pub repairer: Arc<Repairer>,
    /// Gossip messages.
    pub membership: Arc<Membership>,
    /// Raft messages and operator requests; `None` with static membership
    /// (`--members`).
    pub topology: Option<Arc<Topology>>,
}

/// What a server is asked to allow.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Accept test hooks (`AdjustClock`).
    pub test_hooks: bool,
    /// Deadline of the debug read of every replica (`InspectReplicas`).
    pub read_timeout: Duration,
    /// Count requests for `/metrics`.
    pub request_metrics: bool,
    /// Who may send what.
    pub access: Access,
    /// TLS on both ports, if on.
    pub tls: Option<Tls>,
}

/// Shared state of the server.
#[derive(Debug)]
pub struct Server {
    ctx: Arc<NodeContext>,
    coordinator: Arc<Coordinator>,
    repairer: Arc<Repairer>,
    membership: Arc<Membership>,
    /// `None` with static membership (`--members`).
    topology: Option<Arc<Topology>>,
    /// Whether test hooks (`AdjustClock`) are accepted.
    test_hooks: bool,
    /// Deadline of the debug read of every replica.
    read_timeout: Duration,
    started: Instant,
    admission: Arc<Admission>,
    /// What the fronts count as requests pass (`None`: metrics off).
    metrics: Option<RequestMetrics>,
    /// Client reads answered (total, range, stats), for `NodeStatus`.
    reads: AtomicU64,
    /// Who may send what.
    access: Access,
    /// Requests and authentication steps refused for who sent them.
    access_refused: AtomicU64,
    /// TLS on both ports, if on.
    tls: Option<Tls>,
}

impl Server {
    /// A server of the node of `ctx`, handing requests to `services`
    /// within the bounds of `admission`.
    pub fn new(
        ctx: Arc<NodeContext>,
        services: Services,
        admission: Arc<Admission>,
        options: ServerOptions,
    ) -> Arc<Server> {
        Arc::new(Server {
            ctx,
            coordinator: services.coordinator,
            repairer: services.repairer,
            membership: services.membership,
            topology: services.topology,
            test_hooks: options.test_hooks,
            read_timeout: options.read_timeout,
            started: Instant::now(),
            admission,
            metrics: options.request_metrics.then(RequestMetrics::default),
            reads: AtomicU64::new(0),
            access: options.access,
            access_refused: AtomicU64::new(0),
            tls: options.tls,
        })
    }

    /// Accepts connections until `shutdown` resolves. Past the connection
    /// limit a new connection is answered `Overloaded` and closed.
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
                    Ok((stream, peer)) => match self.admission.connection() {
                        Ok(slot) => {
                            let server = self.clone();
                            tokio::spawn(async move {
                                server.accepted(stream, peer).await;
                                drop(slot);
                                tracing::debug!(%peer, "connection closed");
                            });
                        }
                        Err(why) => {
                            tokio::spawn(refuse_connection(stream, why));
                        }
                    },
                    Err(e) => {
                        // Out of descriptors (EMFILE) or a connection reset
                        // while queued: wait a little rather than spin.
                        static ACCEPT_ERRORS: LogLimit = LogLimit::every(Duration::from_secs(1));
                        if let Some(held_back) = ACCEPT_ERRORS.allow() {
                            tracing::warn!(error = %e, held_back, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Takes an accepted connection: in plaintext, or through the TLS
    /// handshake when TLS is on (plaintext sent to it gets a clear
    /// refusal instead of a hang).
    async fn accepted(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let (reader, writer) = stream.into_split();
            return self.connection(reader, writer, peer, false).await;
        };
        let timeout = self.admission.limits().frame_timeout;
        if !looks_like_tls(&stream, timeout).await {
            refuse_plaintext(stream).await;
            return;
        }
        match tls.accept(stream, timeout).await {
            Ok((stream, certified)) => {
                let (reader, writer) = tokio::io::split(stream);
                self.connection(reader, writer, peer, certified).await;
            }
            Err(e) => {
                static FAILED: LogLimit = LogLimit::every(Duration::from_secs(1));
                if let Some(held_back) = FAILED.allow() {
                    tracing::warn!(%peer, error = %e, held_back, "TLS handshake failed");
                }
            }
        }
    }

    /// Serves one connection: reads frames while the connection has fewer
    /// than its in-flight limit running and the node's budget has room,
    /// runs each request in its own task, and writes answers through one
    /// writer. The connection ends when the peer goes, is idle too long,
    /// sends a frame too slowly, or does not read its answers; reads still
    /// running for it are then stopped.
    async fn connection<R, W>(
        self: Arc<Self>,
        read_half: R,
        write_half: W,
        peer: SocketAddr,
        certified: bool,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let limits = *self.admission.limits();
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
        let (out, responses) = mpsc::channel::<Outgoing>(limits.max_in_flight_per_connection + 1);
        let gone = CancellationToken::new();
        let writer_task = tokio::spawn(write_answers(
            responses,
            write_half,
            limits.write_timeout,
            gone.clone(),
        ));
        let permits = Arc::new(Semaphore::new(limits.max_in_flight_per_connection));
        // Reads are stopped when the connection ends; writes run to the end
        // (their outcome is already decided by the time anyone could ask).
        let mut reads = JoinSet::new();
        let mut session = Session::new(self.tls.is_some(), certified);
        loop {
            while reads.try_join_next().is_some() {}
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = gone.cancelled() => break,
            };
            let started = tokio::select! {
                r = tokio::time::timeout(limits.idle_timeout, reader.fill_buf()) => r,
                () = gone.cancelled() => break,
            };
            match started {
                Ok(Ok(buf)) if !buf.is_empty() => {}
                Ok(_) => break, // the peer closed, or the socket failed
                Err(_) => {
                    tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                    break;
                }
            }
            let incoming = tokio::select! {
                r = tokio::time::timeout(limits.frame_timeout, read_frame(&mut reader, &self.admission)) => r,
                () = gone.cancelled() => break,
            };
            let incoming = match incoming {
                Ok(Ok(incoming)) => incoming,
                Ok(Err(ReadError::Io)) => break,
                Ok(Err(ReadError::TooLarge(len))) => {
                    // The stream cannot be resynchronized.
                    let response = Response::Error {
                        code: ErrorCode::FrameTooLarge,
                        message: format!(
                            "frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
                        ),
                    };
                    let _ = send(&out, &self.admission, 0, 0, &response).await;
                    break;
                }
                Err(_) => {
                    tracing::debug!(
                        "closing a connection whose frame took over {:?}",
                        limits.frame_timeout
                    );
                    break;
                }
            };
            let (frame, slot) = match incoming {
                Incoming::Frame(frame, slot) => (frame, slot),
                Incoming::Bad(bad) => {
                    let response = Response::Error {
                        code: bad.code,
                        message: bad.reason,
                    };
                    if send(&out, &self.admission, bad.request_id, 0, &response)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Incoming::Refused {
                    request_id,
                    kind,
                    why,
                } => {
                    let response = Response::Error {
                        code: ErrorCode::Overloaded,
                        message: format!("{why}; retry with backoff"),
                    };
                    if send(&out, &self.admission, request_id, kind, &response)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
            };
            let request = match self.screen(&mut session, &frame, peer) {
                Ok(request) => request,
                Err(Turned { response, close }) => {
                    let sent = send(
                        &out,
                        &self.admission,
                        frame.request_id,
                        frame.kind,
                        &response,
                    )
                    .await;
                    if close || sent.is_err() {
                        break;
                    }
                    continue;
                }
            };
            drop(frame.body);
            let abortable = is_pure_read(&request);
            let (server, out) = (self.clone(), out.clone());
            let (request_id, kind) = (frame.request_id, frame.kind);
            let task = async move {
                let response = server.handle(request).await;
                let _ = send(&out, &server.admission, request_id, kind, &response).await;
                drop((permit, slot));
            };
            if abortable {
                reads.spawn(task);
            } else {
                tokio::spawn(task);
            }
        }
        reads.abort_all();
        drop(out);
        let _ = writer_task.await;
    }

    /// Answers a request (from either front) and counts it.
    pub(crate) async fn handle(&self, request: Request) -> Response {
        let kind = request.name();
        let started = Instant::now();
        let response = self.dispatch(request).await;
        let error = match &response {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        };
        if matches!(kind, "total" | "range" | "stats" | "distinct" | "top") && error.is_none() {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = &self.metrics {
            if let (Response::Increment(results), "increment" | "add") = (&response, kind) {
                metrics.items(results);
            }
            metrics.request(kind, started.elapsed(), error);
        }
        response
    }

    /// Hands a request to the file that serves its kind: `client` (the
    /// coordinator's requests), `replica` (this node as another's
    /// replica) or `admin` (operators, metadata, gossip, test hooks).
    async fn dispatch(&self, request: Request) -> Response {
        match request {
            Request::Increment {
                consistency,
                timeout_ms,
                items,
            } => self.increment(consistency, timeout_ms, items).await,
            Request::Add {
                consistency,
                timeout_ms,
                items,
            } => self.add(consistency, timeout_ms, items).await,
            Request::Distinct {
                consistency,
                namespace,
                key,
                resolution,
                start_ms,
                end_ms,
            } => {
                let kind = ReadKind::Distinct {
                    resolution,
                    start_ms,
                    end_ms,
                };
                self.read(consistency, namespace, key, kind).await
            }
            Request::Total {
                consistency,
                namespace,
                key,
            } => {
                self.read(consistency, namespace, key, ReadKind::Total)
                    .await
            }
            Request::Range {
                consistency,
                namespace,
                key,
                resolution,
                start_ms,
                end_ms,
            } => {
                let kind = ReadKind::Range {
                    resolution,
                    start_ms,
                    end_ms,
                };
                self.read(consistency, namespace, key, kind).await
            }
            Request::Stats {
                consistency,
                namespace,
                key,
                start_ms,
                end_ms,
            } => {
                let kind = ReadKind::Stats { start_ms, end_ms };
                self.read(consistency, namespace, key, kind).await
            }
            Request::Top {
                consistency,
                namespace,
                resolution,
                start_ms,
                end_ms,
                k,
            } => {
                let query = TopQuery {
                    namespace,
                    resolution,
                    start_ms,
                    end_ms,
                    k,
                };
                self.top(consistency, query).await
            }
            Request::TopSummary {
                namespace,
                resolution,
                start_ms,
                end_ms,
            } => self.top_summary(&namespace, resolution, start_ms, end_ms),
            Request::ForwardedIncrement {
                epoch,
                consistency,
                timeout_ms,
                items,
            } => {
                self.forwarded_increment(epoch, consistency, timeout_ms, items)
                    .await
            }
            Request::ReplicaWrite { epoch: _, cells } => self.replica_write(cells).await,
            Request::ReplicaRead { epoch, ranges } => self.replica_read(epoch, ranges).await,
            Request::MerkleTree {
                epoch,
                start_token,
                end_token,
                depth,
            } => self.merkle_tree(epoch, start_token, end_token, depth).await,
            Request::LedOpIds { leader } => self.led_op_ids(leader).await,
            Request::Ping => Response::Ack,
            Request::Routing => Response::Routing(self.routing()),
            Request::InspectReplicas { namespace, key } => self.inspect(&namespace, &key).await,
            Request::Repair => self.repair().await,
            Request::AdjustClock { offset_ms } => self.adjust_clock(offset_ms),
            Request::Gossip { from, payload } => self.membership.handle(from, &payload),
            Request::Raft { payload } => self.raft(&payload).await,
            // The binary front's gate answers these; they reach here only
            // from a caller that skipped it.
            Request::Auth(_) => Response::Error {
                code: ErrorCode::Unauthenticated,
                message: "authentication steps open a connection".into(),
            },
            Request::Admin { payload } => self.admin(&payload).await,
            Request::ListNamespaces => self.list_namespaces(),
            Request::DescribeNamespace { name } => self.describe_namespace(&name),
            Request::Status => self.status().await,
        }
    }
}

/// A response frame on its way out, and the bytes it holds of the node's
/// budget until it is written.
type Outgoing = (Frame, HeldBytes);

/// Reads are buffered this much per connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// What reading a frame gave.
enum Incoming {
    /// A whole frame, and its share of the node's budget.
    Frame(Frame, RequestSlot),
    /// A frame whose boundary is intact but whose header is bad.
    Bad(BadFrame),
    /// A frame the node has no room for: read and dropped, to be answered
    /// `Overloaded`.
    Refused {
        request_id: u64,
        kind: u8,
        why: Refusal,
    },
}

/// Why a connection cannot go on reading.
enum ReadError {
    /// The socket failed or closed mid-frame.
    Io,
    /// A length over the limit: the stream cannot be resynchronized.
    TooLarge(usize),
}

/// Reads one frame. Its bytes are taken from the node's budget before
/// they are buffered: a frame without room is read through a small buffer
/// and dropped, so that many slow, large frames cannot fill memory.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    admission: &Arc<Admission>,
) -> Result<Incoming, ReadError> {
    let len = reader.read_u32().await.map_err(|_| ReadError::Io)? as usize;
    if len > MAX_FRAME_BYTES {
        return Err(ReadError::TooLarge(len));
    }
    let slot = match admission.request(len + 4) {
        Ok(slot) => slot,
        Err(why) => {
            let mut header = [0u8; HEADER_BYTES];
            let head = len.min(HEADER_BYTES);
            reader
                .read_exact(&mut header[..head])
                .await
                .map_err(|_| ReadError::Io)?;
            let rest = (len - head) as u64;
            let skipped = tokio::io::copy(&mut reader.take(rest), &mut tokio::io::sink())
                .await
                .map_err(|_| ReadError::Io)?;
            if skipped < rest {
                return Err(ReadError::Io);
            }
            let (kind, request_id) = if head == HEADER_BYTES {
                let mut id = [0u8; 8];
                id.copy_from_slice(&header[2..10]);
                (header[1], u64::from_le_bytes(id))
            } else {
                (0, 0)
            };
            return Ok(Incoming::Refused {
                request_id,
                kind,
                why,
            });
        }
    };
    let mut raw = BytesMut::zeroed(len);
    reader
        .read_exact(&mut raw)
        .await
        .map_err(|_| ReadError::Io)?;
    Ok(match parse_frame(raw) {
        Ok(frame) => Incoming::Frame(frame, slot),
        Err(bad) => Incoming::Bad(bad),
    })
}

/// Requests that change nothing: stopped when their connection ends.
fn is_pure_read(request: &Request) -> bool {
    matches!(
        request,
        Request::Total { .. }
            | Request::Range { .. }
            | Request::Distinct { .. }
            | Request::Top { .. }
            | Request::TopSummary { .. }
            | Request::Stats { .. }
            | Request::ReplicaRead { .. }
            | Request::MerkleTree { .. }
            | Request::InspectReplicas { .. }
            | Request::Routing
            | Request::Ping
            | Request::LedOpIds { .. }
            | Request::Status
            | Request::ListNamespaces
            | Request::DescribeNamespace { .. }
    )
}

/// Writes the answers arriving on `queue`, a burst at a time with one
/// flush. A burst that cannot be written within `write_timeout` (the peer
/// does not read) or a failed write ends the connection: `gone` is
/// cancelled, which stops its reader and its reads.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut queue: mpsc::Receiver<Outgoing>,
    writer: W,
    write_timeout: Duration,
    gone: CancellationToken,
) {
    let mut sink = FramedWrite::new(writer, FrameCodec::default());
    let mut held = Vec::new();
    while let Some((frame, bytes)) = queue.recv().await {
        let burst = async {
            sink.feed(frame).await?;
            held.push(bytes);
            // Let the tasks that are ready to run go first: the answers
            // they are about to queue (often a whole write group's) join
            // this write instead of costing a syscall each.
            tokio::task::yield_now().await;
            while let Ok((frame, bytes)) = queue.try_recv() {
                sink.feed(frame).await?;
                held.push(bytes);
            }
            sink.flush().await
        };
        match tokio::time::timeout(write_timeout, burst).await {
            Ok(Ok(())) => held.clear(),
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(
                    "closing a connection that did not read its answers for {write_timeout:?}"
                );
                break;
            }
        }
    }
    gone.cancel();
}

/// Answers a connection the node has no room for, and closes it.
/// Answers plaintext sent to a TLS port in the protocol it speaks (a
/// tally client decodes the frame), and closes.
async fn refuse_plaintext(stream: TcpStream) {
    let message = "this port speaks TLS: connect with TLS, trusting the cluster CA \
                   (tally --tls-ca, ClientConfig::tls)";
    answer_connection(stream, ErrorCode::Unauthenticated, message.into()).await;
}

/// Answers a connection past the node's limit `Overloaded`, and closes.
async fn refuse_connection(stream: TcpStream, why: Refusal) {
    let message = format!("{why}; retry with backoff");
    answer_connection(stream, ErrorCode::Overloaded, message).await;
}

/// Writes one error frame with request id 0 (it answers the connection,
/// not a request: the client hands it to every waiting call) within a
/// second, and closes.
async fn answer_connection(mut stream: TcpStream, code: ErrorCode, message: String) {
    let response = Response::Error { code, message };
    let mut body = BytesMut::new();
    let kind = response.encode_body(0, &mut body);
    let mut out = BytesMut::new();
    let frame = Frame {
        kind,
        request_id: 0,
        body: body.freeze(),
    };
    if FrameCodec::default().encode(frame, &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

async fn send(
    out: &mpsc::Sender<Outgoing>,
    admission: &Arc<Admission>,
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
    let held = admission.hold(body.len() + HEADER_BYTES + 4);
    out.send((
        Frame {
            kind,
            request_id,
            body: body.freeze(),
        },
        held,
    ))
    .await
    .map_err(|_| ())
}
