//! [`AdmittedListener`]: accepts HTTP connections within the node's
//! connection budget, the one the binary protocol's connections share.
//! Past it a connection is answered `503` and closed at once, so a flood
//! of sockets cannot take the file descriptors the storage engine needs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::server::admission::{Admission, ConnectionSlot};

/// A TCP listener whose connections hold a slot of the node's budget.
#[derive(Debug)]
pub(super) struct AdmittedListener {
    listener: TcpListener,
    admission: Arc<Admission>,
}

impl AdmittedListener {
    pub(super) fn new(listener: TcpListener, admission: Arc<Admission>) -> AdmittedListener {
        AdmittedListener {
            listener,
            admission,
        }
    }
}

/// A connection and its slot, given back when the connection closes. A
/// connection that sends nothing for the node's idle timeout reads as
/// timed out, and hyper closes it, as the binary port closes idle ones.
#[derive(Debug)]
pub(super) struct AdmittedStream {
    stream: TcpStream,
    _slot: ConnectionSlot,
    idle: Duration,
    /// When the connection counts as idle, unless bytes arrive first.
    idle_at: Pin<Box<tokio::time::Sleep>>,
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 75\r\n\r\n\
{\"code\":\"Overloaded\",\"message\":\"too many connections; retry with backoff\"}\n";

impl axum::serve::Listener for AdmittedListener {
    type Io = AdmittedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (mut stream, addr) = match self.listener.accept().await {
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
            match self.admission.connection() {
                Ok(slot) => {
                    let idle = self.admission.limits().idle_timeout;
                    return (
                        AdmittedStream {
                            stream,
                            _slot: slot,
                            idle,
                            idle_at: Box::pin(tokio::time::sleep(idle)),
                        },
                        addr,
                    );
                }
                Err(_) => {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let _ = stream.write_all(REFUSAL).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
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
