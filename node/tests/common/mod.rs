//! Starts real `tally-node` processes for integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig, Consistency, Increment, NodeStatus};

/// A running node process; killed when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

/// The wall clock in ms (tests may read it; library code takes a `Clock`).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An increment of `key` by `delta`, now, in the default namespace.
pub fn inc(key: &str, delta: i64) -> Increment {
    Increment {
        namespace: "events".into(),
        key: key.as_bytes().to_vec(),
        timestamp_ms: now_ms(),
        delta,
        events: 1,
        op_id: None,
    }
}

/// Whether a node at `addr` answers a `Status` request: accepting a TCP
/// connection is not enough (the kernel completes handshakes for a socket
/// that has bound and listens before its process serves, and until it
/// exits). A connect to a loopback port nobody listens on can also
/// succeed by connecting to itself (TCP simultaneous open, when the
/// kernel picks that very port as the source): that is not a server.
fn serving(addr: &str) -> bool {
    use bytes::BytesMut;
    use std::io::{Read, Write};
    use tally_client::frame::{Frame, FrameCodec};
    use tally_client::{Request, Response};
    use tokio_util::codec::{Decoder, Encoder};

    let Ok(socket) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(1))
    else {
        return false;
    };
    if stream.local_addr().ok() == stream.peer_addr().ok() {
        return false;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut codec = FrameCodec::default();
    let mut out = BytesMut::new();
    let request = Frame {
        kind: Request::Status.kind(),
        request_id: 1,
        body: bytes::Bytes::new(),
    };
    if codec.encode(request, &mut out).is_err() || stream.write_all(&out).is_err() {
        return false;
    }
    let mut received = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match codec.decode(&mut received) {
            Ok(Some(Ok(frame))) => {
                return matches!(
                    Response::decode(frame.kind, &frame.body),
                    Ok(Response::Status(_))
                )
            }
            Ok(Some(Err(_))) | Err(_) => return false,
            Ok(None) => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A loopback port for a node to be started (see `unused_local_port` for
/// why not port 0).
pub fn free_port() -> u16 {
    tally_client::unused_local_port().unwrap()
}

impl NodeProcess {
    /// Starts a node on `dir` and waits until it accepts connections.
    pub fn start(dir: &Path, addr: &str, durability: &str) -> NodeProcess {
        NodeProcess::start_with(dir, addr, &["--durability".into(), durability.into()])
    }

    /// Starts a node with extra flags.
    pub fn start_with(dir: &Path, addr: &str, args: &[String]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally-node"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(addr)
            .args(args)
            .env("RUST_LOG", "warn,openraft=off")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !serving(addr) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node at {addr} exited while starting: {status}");
            }
            assert!(Instant::now() < deadline, "node at {addr} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        NodeProcess {
            child,
            addr: addr.to_owned(),
            dir: dir.to_owned(),
        }
    }

    pub async fn client(&self) -> Client {
        match Client::connect(ClientConfig::with_seeds([self.addr.clone()])).await {
            Ok(client) => client,
            Err(e) => panic!(
                "connecting to the node at {}: {e} (the node's process: {})",
                self.addr,
                self.process_state()
            ),
        }
    }

    /// A bare TCP connection to the node, for tests that write raw bytes.
    pub async fn raw_connection(&self) -> tokio::net::TcpStream {
        match tokio::net::TcpStream::connect(&self.addr).await {
            Ok(stream) => stream,
            Err(e) => panic!(
                "connecting to the node at {}: {e} (the node's process: {})",
                self.addr,
                self.process_state()
            ),
        }
    }

    /// The node process's state as `/proc` shows it, for failure messages.
    pub fn process_state(&self) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        match stat
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_owned()))
        {
            Some(state) => format!("pid {} in state {state}", self.child.id()),
            None => format!("pid {} gone", self.child.id()),
        }
    }

    /// SIGKILL, then wait.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tally-node exited with {status}");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local cluster of real `tally-node` processes (host ids 1..=n).
pub struct Cluster {
    pub nodes: Vec<Option<NodeProcess>>,
    pub addrs: Vec<String>,
    members: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes with replication factor `rf` and extra flags, and
    /// waits until every node sees every other one up.
    pub async fn start(n: usize, rf: usize, args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--replication-factor".into(), rf.to_string()]);
        let mut cluster = Cluster {
            nodes: (0..n).map(|_| None).collect(),
            addrs,
            members,
            args,
            _dir: dir,
        };
        for i in 0..n {
            cluster.restart(i);
        }
        cluster.wait_all_up().await;
        cluster
    }

    /// Waits until every running node sees every other running node up.
    pub async fn wait_all_up(&self) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        self.wait_until(20, "every node to see its peers up", || async {
            for &i in &running {
                let status = self.status(i).await;
                let up = status
                    .peers
                    .iter()
                    .filter(|p| p.up && running.contains(&(p.host_id as usize - 1)))
                    .count();
                if up + 1 < running.len() {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// (Re)starts node `i` (0-based) on its data directory.
    pub fn restart(&mut self, i: usize) {
        let dir = self._dir.path().join(format!("node{}", i + 1));
        let mut args = self.args.clone();
        args.extend([
            "--host-id".into(),
            (i + 1).to_string(),
            "--members".into(),
            self.members.clone(),
        ]);
        self.nodes[i] = Some(NodeProcess::start_with(&dir, &self.addrs[i], &args));
    }

    /// SIGKILL node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill9();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let node = self.nodes[i].as_ref().unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(node.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM node `i` and wait for its clean exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.terminate();
        }
    }

    /// A token-aware client over every node.
    pub async fn client(&self, consistency: Consistency) -> Client {
        let mut config = ClientConfig::with_seeds(self.addrs.clone());
        config.consistency = consistency;
        Client::connect(config).await.unwrap()
    }

    /// A client that talks to node `i` only (it coordinates every request).
    pub async fn client_of(&self, i: usize, consistency: Consistency) -> Client {
        let mut config = ClientConfig::with_seeds([self.addrs[i].clone()]);
        config.consistency = consistency;
        config.token_aware = false;
        Client::connect(config).await.unwrap()
    }

    /// Node `i`'s status.
    pub async fn status(&self, i: usize) -> NodeStatus {
        self.client_of(i, Consistency::One)
            .await
            .status()
            .await
            .unwrap()
    }

    /// Waits until `check` holds, or panics after `secs` seconds.
    pub async fn wait_until<F, Fut>(&self, secs: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.wait_for(secs, what, || {
            let holds = check();
            async move { holds.await.then_some(()).ok_or_else(String::new) }
        })
        .await;
    }

    /// Waits until `check` is `Ok`, or panics after `secs` seconds with the
    /// last reason it gave.
    pub async fn wait_for<F, Fut>(&self, secs: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Err(why) = check().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
