//! [`LinkProxy`]: a TCP proxy standing in for the network on one directed
//! link between two nodes, so that partitions and delays need no root, no
//! iptables and no netem.
//!
//! Node `a` is configured to reach node `b` at the proxy of link `a -> b`,
//! which forwards to `b`'s real address. A link is in one of three modes:
//!
//! - `Pass`: bytes flow.
//! - `Blackhole`: nothing is forwarded in either direction and new
//!   connections are accepted but not connected onwards. Bytes are held,
//!   not dropped: the proxy stops reading, the kernel buffers fill and the
//!   sender stalls, exactly as TCP behaves behind a firewall that drops
//!   packets (it retransmits). When the link heals the streams resume
//!   intact, late. Requests across the link time out meanwhile.
//! - `Delay(d)`: every chunk waits `d` before it is forwarded.
//!
//! A node's connection to itself and clients' connections to nodes do not
//! go through proxies: the harness partitions nodes from each other, as
//! Jepsen does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a link does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward.
    Pass,
    /// Hold everything until the mode changes.
    Blackhole,
    /// Forward each chunk after a delay.
    Delay(Duration),
}

/// The proxy of one directed link.
#[derive(Debug)]
pub struct LinkProxy {
    addr: String,
    mode: watch::Sender<LinkMode>,
    task: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: String) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (mode, modes) = watch::channel(LinkMode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, modes) = (target.clone(), modes.clone());
                tokio::spawn(async move {
                    let _ = relay(inbound, &target, modes).await;
                });
            }
        });
        Ok(LinkProxy { addr, mode, task })
    }

    /// Where the source node should connect.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Changes what the link does, for existing and new connections.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_open(modes: &mut watch::Receiver<LinkMode>) -> Option<LinkMode> {
    loop {
        let mode = *modes.borrow_and_update();
        if mode != LinkMode::Blackhole {
            return Some(mode);
        }
        modes.changed().await.ok()?;
    }
}

async fn relay(
    inbound: TcpStream,
    target: &str,
    mut modes: watch::Receiver<LinkMode>,
) -> std::io::Result<()> {
    wait_open(&mut modes).await;
    let outbound = TcpStream::connect(target).await?;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let forward = tokio::spawn(pump(ri, wo, modes.clone()));
    let back = pump(ro, wi, modes).await;
    forward.abort();
    back
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut modes: watch::Receiver<LinkMode>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        wait_open(&mut modes).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        // The link may have closed while we read: hold the chunk.
        match wait_open(&mut modes).await {
            Some(LinkMode::Delay(d)) => tokio::time::sleep(d).await,
            Some(_) => {}
            None => return Ok(()),
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blackholed_link_holds_bytes_and_delivers_them_when_healed() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let proxy = LinkProxy::start(target).await.unwrap();
        proxy.set(LinkMode::Blackhole);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        let early = tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut got)).await;
        assert!(early.is_err(), "nothing crosses a blackholed link");
        proxy.set(LinkMode::Pass);
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"hello", "the held bytes arrive intact after healing");
    }
}
