//! Starts real `tally-node` processes for integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig};

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NodeProcess {
    /// Starts a node on `dir` and waits until it accepts connections.
    pub fn start(dir: &Path, addr: &str, durability: &str) -> NodeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_tally-node"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(addr)
            .arg("--durability")
            .arg(durability)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
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
        Client::connect(ClientConfig::with_seeds([self.addr.clone()]))
            .await
            .unwrap()
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
