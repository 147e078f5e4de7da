//! [`AdmittedListener`]: accepts HTTP connections within the node's
//! connection budget, the one the binary protocol's connections share.
//! Past it a connection is answered `503` and closed at once, so a flood
//! of sockets cannot take the file descriptors the storage engine needs.
//! With TLS on, each connection's handshake runs in its own task (a slow
//! one holds up no other), and plaintext gets a `400` saying to use
//! `https://`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::security::tls::{looks_like_tls, Tls};
use crate::server::admission::{Admission, ConnectionSlot};

/// A TCP listener whose connections hold a slot of the node's budget.
#[derive(Debug)]
pub(super) struct AdmittedListener {
    listener: TcpListener,
    admission: Arc<Admission>,
    tls: Option<Tls>,
    /// Connections whose TLS handshake finished.
    handshaken: mpsc::Receiver<(AdmittedStream, SocketAddr)>,
    handshakes: mpsc::Sender<(AdmittedStream, SocketAddr)>,
}

impl AdmittedListener {
    pub(super) fn new(
        listener: TcpListener,
        admission: Arc<Admission>,
        tls: Option<Tls>,
    ) -> AdmittedListener {
        let (handshakes, handshaken) = mpsc::channel(64);
        AdmittedListener {
            listener,
            admission,
            tls,
            handshaken,
            handshakes,
        }
    }
}

/// A connection's bytes: plain TCP or TLS over it.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection and its slot, given back when the connection closes. A
/// connection that sends nothing for the node's idle timeout reads as
/// timed out, and hyper closes it, as the binary port closes idle ones.
#[derive(Debug)]
pub(super) struct AdmittedStream {
    stream: Io,
    _slot: ConnectionSlot,
    idle: Duration,
    /// When the connection counts as idle, unless bytes arrive first.
    idle_at: Pin<Box<tokio::time::Sleep>>,
}

const PLAINTEXT: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 91\r\n\r\n\
{\"code\":\"TlsRequired\",\"message\":\"this port speaks HTTPS: use https:// and the cluster CA\"}\n";

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 75\r\n\r\n\
{\"code\":\"Overloaded\",\"message\":\"too many connections; retry with backoff\"}\n";

impl axum::serve::Listener for AdmittedListener {
    type Io = AdmittedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let accepted = tokio::select! {
                Some(ready) = self.handshaken.recv() => return ready,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset while
                    // queued: wait a little rather than spin.
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let slot = match self.admission.connection() {
                Ok(slot) => slot,
                Err(_) => {
                    tokio::spawn(answer_and_close(stream, REFUSAL));
                    continue;
                }
            };
            let limits = *self.admission.limits();
            let admitted = move |stream: Io, slot: ConnectionSlot| AdmittedStream {
                stream,
                _slot: slot,
                idle: limits.idle_timeout,
                idle_at: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            };
            let Some(tls) = self.tls.clone() else {
                return (admitted(Io::Plain(stream), slot), addr);
            };
            let ready = self.handshakes.clone();
            tokio::spawn(async move {
                let timeout = limits.frame_timeout;
                if !looks_like_tls(&stream, timeout).await {
                    answer_and_close(stream, PLAINTEXT).await;
                    return;
                }
                match tls.accept(stream, timeout).await {
                    Ok((stream, _)) => {
                        let stream = admitted(Io::Tls(Box::new(stream)), slot);
                        let _ = ready.send((stream, addr)).await;
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "HTTPS handshake failed"),
                }
            });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Writes `answer` and closes, within a second.
async fn answer_and_close(mut stream: TcpStream, answer: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.idle_at.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle_at.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request for the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
