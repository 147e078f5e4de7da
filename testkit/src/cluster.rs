//! [`Cluster`]: a local cluster of real `tally-node` processes with a
//! static member list, for tests that need several nodes.

use std::process::Command;
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig, Consistency, NodeStatus};

use crate::process::{local_members, NodeProcess};

/// A local cluster of real `tally-node` processes (host ids 1..=n).
#[derive(Debug)]
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
        let (addrs, members) = local_members(n);
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

    /// Node `i`'s HTTP API address.
    pub fn http_addr(&self, i: usize) -> String {
        let node = self.nodes[i].as_ref().unwrap();
        node.http.clone().unwrap()
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
