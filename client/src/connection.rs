//! [`Connection`]: one TCP connection to a node, multiplexed by request id.
//!
//! Many requests share a connection: a writer task sends frames in order
//! (batching syscalls when several are queued) and a reader task hands each
//! response to the caller waiting for its request id. When the connection
//! breaks, every waiting caller learns it at once.
//!
//! A node that asks for credentials gets them first ([`Connection::open_with`],
//! `crate::auth`): a token, or the peer handshake over the cluster secret.
//!
//! A call reports whether its request may have reached the node
//! ([`Delivery`]): that decides whether a failed write is `Failed` (nothing
//! applied, safe to retry) or `Indeterminate`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::auth::{new_nonce, Credentials};
use crate::error::{ClientError, ErrorCode};
use crate::frame::{write_queued, Frame, FrameCodec};
use crate::message::{AuthStep, Request, Response};
use crate::tls::TlsClient;

/// Whether a failed call's request may have reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The request was never written to the socket.
    NotSent,
    /// The request was (or may have been) written.
    MaybeSent,
}

/// The two halves of a plain or TLS stream.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Frame, ClientError>>>>;

/// A multiplexed connection to one node.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    out: mpsc::Sender<Frame>,
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
    next_id: AtomicU64,
}

fn lock(
    p: &Pending,
) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Frame, ClientError>>>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    /// Connects to `addr` within `timeout`, in plaintext, presenting no
    /// credentials.
    pub async fn open(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        Connection::open_with(addr, timeout, &Credentials::None, None).await
    }

    /// Connects to `addr` (over TLS with `tls`) and authenticates with
    /// `credentials`, each within `timeout`. A node that refuses them
    /// answers `Unauthenticated` (and closes the connection after a
    /// failed peer handshake).
    pub async fn open_with(
        addr: &str,
        timeout: Duration,
        credentials: &Credentials,
        tls: Option<&TlsClient>,
    ) -> Result<Connection, ClientError> {
        let conn = Connection::connect(addr, timeout, tls).await?;
        conn.authenticate(credentials, timeout).await?;
        Ok(conn)
    }

    /// Runs the authentication exchange (`crate::auth`).
    async fn authenticate(
        &self,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let call = |step: AuthStep| async move {
            match self.call(&Request::Auth(step), timeout).await {
                Ok(Response::Error { code, message }) => Err(ClientError::Node { code, message }),
                Ok(answer) => Ok(answer),
                Err((e, _)) => Err(e),
            }
        };
        let unexpected =
            |answer: Response| ClientError::Protocol(format!("unexpected auth answer {answer:?}"));
        match credentials {
            Credentials::None => Ok(()),
            Credentials::Token(token) => match call(AuthStep::Token {
                token: token.clone(),
            })
            .await?
            {
                Response::Authenticated(_) => Ok(()),
                other => Err(unexpected(other)),
            },
            Credentials::Peer(secret) => {
                let mine = new_nonce();
                let (theirs, proof) = match call(AuthStep::PeerHello {
                    key_id: secret.key_id(),
                    nonce: mine,
                })
                .await?
                {
                    Response::PeerChallenge { nonce, proof } => (nonce, proof),
                    other => return Err(unexpected(other)),
                };
                if !secret.verify_server(&mine, &theirs, &proof) {
                    return Err(ClientError::Node {
                        code: ErrorCode::Unauthenticated,
                        message: format!(
                            "{}: the node did not prove it holds the cluster secret",
                            self.addr
                        ),
                    });
                }
                match call(AuthStep::PeerProof {
                    proof: secret.client_proof(&mine, &theirs),
                })
                .await?
                {
                    Response::Authenticated(_) => Ok(()),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    async fn connect(
        addr: &str,
        timeout: Duration,
        tls: Option<&TlsClient>,
    ) -> Result<Connection, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!("{addr}: connect timed out after {timeout:?}"))
            })?
            .map_err(|e| ClientError::Unreachable(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half): (Reader, Writer) = match tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(tls) => {
                let stream = tokio::time::timeout(timeout, tls.connect(addr, stream))
                    .await
                    .map_err(|_| {
                        ClientError::Unreachable(format!(
                            "{addr}: TLS handshake timed out after {timeout:?}"
                        ))
                    })?
                    .map_err(|e| ClientError::Unreachable(format!("{addr}: TLS: {e}")))?;
                let (r, w) = tokio::io::split(stream);
                (Box::new(r), Box::new(w))
            }
        };
        let pending: Arc<Pending> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (out, queue) = mpsc::channel::<Frame>(1024);

        let (w_pending, w_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            if let Err(e) = write_queued(queue, write_half).await {
                fail_all(
                    &w_pending,
                    &w_closed,
                    &ClientError::ConnectionLost(format!("write failed: {e}")),
                );
            }
        });

        let mut reader = FramedRead::new(read_half, FrameCodec::default());
        let (r_pending, r_closed, r_addr) = (pending.clone(), closed.clone(), addr.to_owned());
        tokio::spawn(async move {
            let error = loop {
                match reader.next().await {
                    // Request id 0 answers the connection, not a request
                    // (ids start at 1): a node refusing it (overloaded,
                    // plaintext to a TLS port) says why before closing.
                    Some(Ok(Ok(frame))) if frame.request_id == 0 => {
                        if let Ok(Response::Error { code, message }) =
                            Response::decode(frame.kind, &frame.body)
                        {
                            break ClientError::Node {
                                code,
                                message: format!("{r_addr}: {message}"),
                            };
                        }
                    }
                    Some(Ok(Ok(frame))) => {
                        if let Some(waiter) = lock(&r_pending).remove(&frame.request_id) {
                            let _ = waiter.send(Ok(frame));
                        }
                    }
                    Some(Ok(Err(bad))) => {
                        let err = ClientError::Protocol(format!(
                            "bad frame from {r_addr}: {}",
                            bad.reason
                        ));
                        if let Some(waiter) = lock(&r_pending).remove(&bad.request_id) {
                            let _ = waiter.send(Err(err));
                        }
                    }
                    Some(Err(e)) => break ClientError::ConnectionLost(format!("read failed: {e}")),
                    None => break ClientError::ConnectionLost("closed by the node".to_owned()),
                }
            };
            fail_all(&r_pending, &r_closed, &error);
        });

        Ok(Connection {
            addr: addr.to_owned(),
            out,
            pending,
            closed,
            next_id: AtomicU64::new(1),
        })
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has broken.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends a request and waits up to `timeout` for its response.
    pub async fn call(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, (ClientError, Delivery)> {
        let mut body = BytesMut::new();
        request.encode_body(&mut body);
        self.call_encoded(request.kind(), body.freeze(), timeout)
            .await
    }

    /// Sends a request already encoded as `kind` and `body` (for senders
    /// that build a body from parts without assembling a [`Request`]).
    pub async fn call_encoded(
        &self,
        kind: u8,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, (ClientError, Delivery)> {
        if self.is_closed() {
            return Err((
                ClientError::ConnectionLost(format!("{}: connection closed", self.addr)),
                Delivery::NotSent,
            ));
        }
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(request_id, tx);
        let frame = Frame {
            kind,
            request_id,
            body,
        };
        if self.out.send(frame).await.is_err() {
            lock(&self.pending).remove(&request_id);
            return Err((
                ClientError::ConnectionLost(format!("{}: writer stopped", self.addr)),
                Delivery::NotSent,
            ));
        }
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ClientError::ConnectionLost(format!(
                "{}: connection closed",
                self.addr
            ))),
            Err(_) => {
                lock(&self.pending).remove(&request_id);
                Err(ClientError::Timeout(timeout))
            }
        };
        let frame = answer.map_err(|e| (e, Delivery::MaybeSent))?;
        Response::decode(frame.kind, &frame.body)
            .map_err(|e| (ClientError::Protocol(e.to_string()), Delivery::MaybeSent))
    }
}

fn fail_all(pending: &Pending, closed: &AtomicBool, error: &ClientError) {
    closed.store(true, Ordering::SeqCst);
    for (_, waiter) in lock(pending).drain() {
        let _ = waiter.send(Err(error.clone()));
    }
}
