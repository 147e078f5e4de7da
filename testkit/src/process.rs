//! [`NodeProcess`]: one real `tally-node` process on this machine, started
//! ([`NodeCommand`]) on a data directory and a loopback port, ready once
//! it answers `Status`; kill -9, SIGSTOP/SIGCONT, SIGTERM; killed when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig, Increment};

use crate::port::unused_local_port;

/// A running node process; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    pub child: Child,
    pub addr: String,
    /// The HTTP API's address (`None`: started with `--no-http`).
    pub http: Option<String>,
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
                // A node that checks tokens answers `Unauthenticated`:
                // it serves all the same.
                return matches!(
                    Response::decode(frame.kind, &frame.body),
                    Ok(Response::Status(_)
                        | Response::Error {
                            code: tally_client::ErrorCode::Unauthenticated,
                            ..
                        })
                );
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
/// [`unused_local_port`] for why not port 0).
pub fn free_port() -> u16 {
    unused_local_port().unwrap()
}

/// `n` free loopback addresses, and the `--members` value naming them as
/// host ids 1 to `n`.
pub fn local_members(n: usize) -> (Vec<String>, String) {
    let addrs: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let members = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (addrs, members)
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

/// How to start one `tally-node` process: the binary, its data directory
/// and address, extra flags, where its log goes, and whether it dies with
/// the process that started it.
#[derive(Debug, Clone)]
pub struct NodeCommand {
    bin: PathBuf,
    dir: PathBuf,
    addr: String,
    args: Vec<String>,
    log: Option<PathBuf>,
    supervised: bool,
    rust_log: String,
}

impl NodeCommand {
    /// `bin` on `dir`, listening on `addr`; logs at `warn` to this
    /// process's standard error.
    pub fn new(bin: &Path, dir: &Path, addr: &str) -> NodeCommand {
        NodeCommand {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            addr: addr.to_owned(),
            args: Vec::new(),
            log: None,
            supervised: false,
            rust_log: "warn,openraft=off".into(),
        }
    }

    /// Extra flags.
    pub fn args(mut self, args: &[String]) -> NodeCommand {
        self.args.extend(args.iter().cloned());
        self
    }

    /// Appends the node's standard output and error to `path`, at
    /// `rust_log` (`RUST_LOG`).
    pub fn log_to(mut self, path: &Path, rust_log: &str) -> NodeCommand {
        self.log = Some(path.to_owned());
        self.rust_log = rust_log.to_owned();
        self
    }

    /// The node exits when the process that started it dies, even by
    /// SIGKILL (its standard input is a pipe this process holds, and it
    /// runs with `--exit-with-stdin`), and it gets its own process group,
    /// so a signal to the starter's group does not reach it.
    pub fn supervised(mut self) -> NodeCommand {
        self.supervised = true;
        self
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(self) -> Result<NodeProcess, String> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.bin);
        command
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(&self.addr)
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log);
        match &self.log {
            Some(path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let err = log.try_clone().map_err(|e| e.to_string())?;
                command.stdout(log).stderr(err);
            }
            None => {
                command.stdout(Stdio::null());
            }
        }
        if self.supervised {
            command
                .arg("--exit-with-stdin")
                .stdin(Stdio::piped())
                .process_group(0);
        }
        // The HTTP port too is one nothing else gets (the node's default,
        // its port + 1000, could be another test's node).
        let given = self
            .args
            .iter()
            .position(|a| a == "--http-listen")
            .and_then(|i| self.args.get(i + 1).cloned());
        let http = if self.args.iter().any(|a| a == "--no-http") {
            None
        } else if given.is_some() {
            given
        } else {
            let port = unused_local_port().map_err(|e| e.to_string())?;
            let http = format!("127.0.0.1:{port}");
            command.arg("--http-listen").arg(&http);
            Some(http)
        };
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        Ok(NodeProcess {
            child,
            addr: self.addr,
            http,
            dir: self.dir,
        })
    }
}

impl NodeProcess {
    /// Starts a node on `dir` and waits until it accepts connections.
    pub fn start(dir: &Path, addr: &str, durability: &str) -> NodeProcess {
        NodeProcess::start_with(dir, addr, &["--durability".into(), durability.into()])
    }

    /// Starts a node with extra flags (panics if it does not come up).
    pub fn start_with(dir: &Path, addr: &str, args: &[String]) -> NodeProcess {
        NodeProcess::spawn(&node_bin(), dir, addr, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `bin` on `dir`, listening on `addr`, with extra flags, and
    /// waits up to 20 s until it answers `Status`. Blocks the thread.
    pub fn spawn(
        bin: &Path,
        dir: &Path,
        addr: &str,
        args: &[String],
    ) -> Result<NodeProcess, String> {
        // Killed when dropped: a node that does not come up is not left
        // behind.
        let mut node = NodeCommand::new(bin, dir, addr).args(args).spawn()?;
        node.wait_serving(Duration::from_secs(20))?;
        Ok(node)
    }

    /// Waits up to `timeout` until the node answers `Status`; `Err` if it
    /// exits first or does not come up. Blocks the thread.
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !serving(&self.addr) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "node at {} exited while starting: {status}",
                    self.addr
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node at {} did not come up within {timeout:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes (its sockets stay open).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`NodeProcess::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `timeout` for the process to exit (after a SIGTERM),
    /// then SIGKILLs it.
    pub fn wait_or_kill(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit (panics otherwise).
    pub fn terminate(&mut self) {
        self.stop().unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERM, then wait for the exit; `Err` unless it was clean.
    pub fn stop(&mut self) -> Result<(), String> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("kill -TERM: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.child.id()));
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("tally-node at {} exited with {status}", self.addr));
        }
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
