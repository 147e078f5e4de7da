//! [`Cluster`]: real `tally-node` processes under the harness's control.
//!
//! Each node gets its own data directory, its own port and its own
//! process group, and its log goes to `<run dir>/nodes/nodeN.log`. It is
//! started *supervised* through the workspace's one launcher of local
//! nodes (`tally_testkit::NodeCommand`): its standard input is a pipe the
//! harness holds and it runs with `--exit-with-stdin`, so if the harness
//! dies (even by SIGKILL) every node exits with it: no leaked processes.
//! (A node that is SIGSTOPped at that moment exits when something
//! continues it.)
//!
//! Node `i` reaches node `j` through the proxy of link `i -> j`, so the
//! member list differs per node in the addresses only; tokens come from
//! host ids and the cluster name, so every node computes the same ring.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tally_client::tls::TlsClient;
use tally_client::{Client, ClientConfig, Consistency, NodeStatus, Secret};
use tally_testkit::{NodeCommand, NodeProcess};

use crate::proxy::{LinkMode, LinkProxy};

/// How to run the cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Copies of each key.
    pub replication_factor: usize,
    /// The `tally-node` binary.
    pub node_bin: PathBuf,
    /// The run's directory (data and logs go below it).
    pub dir: PathBuf,
    /// `sync` or `periodic`.
    pub durability: String,
    /// Extra flags for every node (e.g. `--broken double-apply`).
    pub extra_args: Vec<String>,
    /// The API token the clients present (`--secure`); not reported.
    #[serde(skip)]
    pub token: Option<String>,
    /// The CA the clients trust, speaking TLS (`--secure`).
    pub tls_ca: Option<PathBuf>,
}

/// The nodes, their links, and what the nemesis did to them.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    addrs: Vec<String>,
    /// `links[i][j]`: the proxy node `i` uses to reach node `j`.
    links: Vec<Vec<Option<LinkProxy>>>,
    procs: Vec<Option<NodeProcess>>,
    paused: Vec<bool>,
}

impl Cluster {
    /// Starts every node and waits until each sees all the others up.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, String> {
        if config.nodes == 0 || config.replication_factor > config.nodes {
            return Err(format!(
                "{} nodes cannot hold {} replicas",
                config.nodes, config.replication_factor
            ));
        }
        if !config.node_bin.exists() {
            return Err(format!(
                "{} not found: build it first (cargo build --workspace --bins)",
                config.node_bin.display()
            ));
        }
        std::fs::create_dir_all(config.dir.join("nodes")).map_err(|e| e.to_string())?;
        let addrs = (0..config.nodes)
            .map(|_| tally_testkit::unused_local_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut links = Vec::new();
        for i in 0..config.nodes {
            let mut row = Vec::new();
            for (j, addr) in addrs.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(
                        LinkProxy::start(addr.clone())
                            .await
                            .map_err(|e| e.to_string())?,
                    )
                });
            }
            links.push(row);
        }
        let n = config.nodes;
        let mut cluster = Cluster {
            config,
            addrs,
            links,
            procs: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        if !cluster.wait_ready(Duration::from_secs(30)).await {
            return Err("the nodes did not see each other within 30 s".into());
        }
        Ok(cluster)
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Node `i`'s client address.
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    fn members_for(&self, i: usize) -> String {
        (0..self.len())
            .map(|j| {
                let addr = match &self.links[i][j] {
                    Some(proxy) => proxy.addr(),
                    None => &self.addrs[j],
                };
                format!("{}={addr}", j + 1)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let log = self
            .config
            .dir
            .join("nodes")
            .join(format!("node{}.log", i + 1));
        let mut args = vec![
            "--host-id".to_owned(),
            (i + 1).to_string(),
            "--members".to_owned(),
            self.members_for(i),
            "--replication-factor".to_owned(),
            self.config.replication_factor.to_string(),
            "--durability".to_owned(),
            self.config.durability.clone(),
            "--test-hooks".to_owned(),
        ];
        args.extend(self.config.extra_args.iter().cloned());
        let data = self.config.dir.join(format!("data{}", i + 1));
        let node = NodeCommand::new(&self.config.node_bin, &data, &self.addrs[i])
            .args(&args)
            .log_to(&log, "info")
            .supervised()
            .spawn()?;
        self.procs[i] = Some(node);
        self.paused[i] = false;
        Ok(())
    }

    /// Whether node `i` is running (not killed; maybe paused).
    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.procs[i].take() {
            node.kill9();
        }
        self.paused[i] = false;
    }

    /// Restarts node `i` on its data directory (no-op if it runs).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.procs[i].is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(node) = &self.procs[i] {
            node.pause();
            self.paused[i] = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(node) = &self.procs[i] {
            node.resume();
        }
        self.paused[i] = false;
    }

    /// Sets every link between nodes `connected` by the predicate to pass,
    /// and every other one to blackhole.
    pub fn partition(&self, connected: impl Fn(usize, usize) -> bool) {
        for (i, row) in self.links.iter().enumerate() {
            for (j, link) in row.iter().enumerate() {
                if let Some(proxy) = link {
                    proxy.set(if connected(i, j) {
                        LinkMode::Pass
                    } else {
                        LinkMode::Blackhole
                    });
                }
            }
        }
    }

    /// Sets every link to `mode`.
    pub fn set_all_links(&self, mode: LinkMode) {
        for proxy in self.links.iter().flatten().flatten() {
            proxy.set(mode);
        }
    }

    /// Undoes every fault: links pass, paused nodes continue, killed nodes
    /// restart.
    pub fn heal(&mut self) -> Result<(), String> {
        self.set_all_links(LinkMode::Pass);
        for i in 0..self.len() {
            if self.paused[i] {
                self.resume(i);
            }
            self.restart(i)?;
        }
        Ok(())
    }

    /// Shifts node `i`'s wall clock by `offset_ms` (0: back to the
    /// machine's).
    pub async fn adjust_clock(&self, i: usize, offset_ms: i64) -> Result<(), String> {
        let client = self.client(i, Duration::from_secs(1)).await?;
        client
            .adjust_clock(offset_ms)
            .await
            .map_err(|e| e.to_string())
    }

    /// A client bound to node `i` (it coordinates every request).
    pub async fn client(&self, i: usize, timeout: Duration) -> Result<Client, String> {
        let mut config = ClientConfig::with_seeds([self.addrs[i].clone()]);
        config.consistency = Consistency::Quorum;
        config.token_aware = false;
        config.request_timeout = timeout;
        config.connect_timeout = timeout;
        config.token = self.config.token.clone().map(Secret);
        config.tls = match &self.config.tls_ca {
            Some(ca) => Some(TlsClient::from_files(ca, None)?),
            None => None,
        };
        Client::connect(config).await.map_err(|e| e.to_string())
    }

    /// Node `i`'s status, if it answers.
    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        let client = self.client(i, Duration::from_secs(1)).await.ok()?;
        client.status().await.ok()
    }

    /// Waits until every node answers and sees every other one up.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ready = true;
            for i in 0..self.len() {
                match self.status(i).await {
                    Some(s) if s.peers.iter().all(|p| p.up) => {}
                    _ => {
                        ready = false;
                        break;
                    }
                }
            }
            if ready {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no node holds hints; `false` on timeout.
    pub async fn wait_hints_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut pending = 0;
            for i in 0..self.len() {
                pending += self.status(i).await.map_or(1, |s| s.hints_pending);
            }
            if pending == 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every node with SIGTERM (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        for i in 0..self.len() {
            if self.paused[i] {
                self.resume(i);
            }
            if let Some(node) = &self.procs[i] {
                node.signal("TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for slot in &mut self.procs {
            if let Some(mut node) = slot.take() {
                node.wait_or_kill(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            if self.paused[i] {
                self.resume(i);
            }
            if let Some(mut node) = self.procs[i].take() {
                node.kill9();
            }
        }
    }
}
