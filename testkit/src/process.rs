//! [`NodeProcess`]: one real `tally-node` process on this machine, started
//! on a data directory and a loopback port, ready once it answers
//! `Status`, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig, Increment};

/// A running node process; killed when dropped.
#[derive(Debug)]
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

/// A loopback port for a node to be started (see
/// [`crate::unused_local_port`] for why not port 0).
pub fn free_port() -> u16 {
    crate::unused_local_port().unwrap()
}

/// The `tally-node` binary: `$TALLY_NODE_BIN`, else the one beside the
/// running executable (the demo's `target/<profile>/`) or one directory up
/// (a test's `target/<profile>/deps/`), built with cargo when a test runs
/// before it exists.
pub fn node_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TALLY_NODE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let beside = exe.with_file_name("tally-node");
    let above = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("tally-node"))
        .unwrap_or_else(|| beside.clone());
    for candidate in [&beside, &above] {
        if candidate.exists() {
            return candidate.clone();
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "tally-node", "--bin", "tally-node"])
        .status()
        .unwrap();
    assert!(status.success(), "building tally-node failed");
    above
}

impl NodeProcess {
    /// Starts a node on `dir` and waits until it accepts connections.
    pub fn start(dir: &Path, addr: &str, durability: &str) -> NodeProcess {
        NodeProcess::start_with(dir, addr, &["--durability".into(), durability.into()])
    }

    /// Starts a node with extra flags.
    pub fn start_with(dir: &Path, addr: &str, args: &[String]) -> NodeProcess {
        let mut child = Command::new(node_bin())
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
