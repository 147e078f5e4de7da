//! [`NodeConfig`]: a node's settings, from TOML and command-line flags,
//! with embedded defaults so that `tally-node` runs with no config at all.

use std::path::PathBuf;
use std::time::Duration;

use tally_consensus::{ClusterMap, HostId};

use crate::coordinator::CoordinatorConfig;
use crate::fault_modes::BrokenMode;
use crate::handoff::ReplayConfig;
use crate::limits::StoreLimits;
use crate::namespace::{Namespace, Namespaces};

/// Node settings (the TOML file's shape).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address to serve clients on (`host:port`). Loopback by default.
    pub listen: String,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// This node's host id (until cluster metadata assigns ids).
    pub host_id: u32,
    /// `sync` (fsync before acknowledging) or `periodic`.
    pub durability: String,
    /// Background fsync interval in `periodic` mode, in milliseconds.
    pub sync_interval_ms: u64,
    /// How far in the future an increment's timestamp may lie, in seconds.
    pub max_future_skew_s: u64,
    /// How long an op id stays live after it was made, in seconds: its
    /// retries count once until then, and are refused after.
    pub op_window_s: u64,
    /// Live op ids this node keeps at most (about 50 bytes each); a new op
    /// id beyond that is refused with `Overloaded`.
    pub max_op_ids: usize,
    /// Memtable size in MiB (RocksDB's default write buffer). Hot counters
    /// fold in place in the memtable, so a larger one also means fewer
    /// bytes flushed and compacted. The WAL rotates at twice this.
    pub memtable_mib: usize,
    /// Memory for SSTable data blocks recently read, in MiB (0: none; reads
    /// then go through the OS page cache with a `pread` per block).
    pub block_cache_mib: usize,
    /// Extra namespaces: name = "minute:7d, hour:90d, day:forever, total".
    pub namespaces: std::collections::BTreeMap<String, String>,
    /// Requests one connection may have in flight before the node stops
    /// reading from it (back-pressure).
    pub max_in_flight_per_connection: usize,
    /// Open connections at most (lowered at start to fit the process's
    /// file descriptor limit, with room kept for storage files).
    pub max_connections: usize,
    /// Requests in flight over all connections; past it, `Overloaded`.
    pub max_in_flight: usize,
    /// MiB of requests and answers held for all connections; past it,
    /// `Overloaded`.
    pub max_buffered_mib: usize,
    /// A connection with no request for this long is closed, in seconds.
    pub idle_timeout_s: u64,
    /// A request frame must arrive whole within this long of its first
    /// byte, in seconds; slower, the connection is closed.
    pub frame_timeout_s: u64,
    /// Answers a client does not read for this long close its connection,
    /// in seconds.
    pub write_timeout_s: u64,
    /// The address other nodes and clients use (default: `listen`).
    pub advertise: Option<String>,
    /// Cluster members as `host_id=address`, this node included. Empty: a
    /// one-node cluster of this node alone (replication factor 1).
    pub members: Vec<String>,
    /// Copies of each key (with `members`, or at `init`).
    pub replication_factor: usize,
    /// Bootstrap a new cluster with Raft-agreed metadata, this node its
    /// first member (host id 1). Ignored once the data directory holds
    /// metadata.
    pub init: bool,
    /// Join the cluster this node reaches at `seed`: it is given a host id
    /// and tokens through the metadata and streams its ranges. Ignored
    /// once the data directory holds metadata.
    pub seed: Option<String>,
    /// This node's rack (voters and, later, replicas spread over racks).
    pub rack: Option<String>,
    /// Tokens (virtual nodes) per member.
    pub vnodes: usize,
    /// The cluster's name; it seeds the token allocator, so every member
    /// must use the same one.
    pub cluster_name: String,
    /// Store hints for replicas that miss a write.
    pub hinted_handoff: bool,
    /// Deliver stored hints once their target is back.
    pub hint_replay: bool,
    /// Hints older than this are dropped, in seconds (default 3 h).
    pub hint_window_s: u64,
    /// Throttle of hint replay, in cells per second per target.
    pub hint_replay_cells_per_s: u64,
    /// Deadline of a read, in milliseconds.
    pub read_timeout_ms: u64,
    /// One ONE read in this many repairs the other replicas in the
    /// background (0: never).
    pub one_read_repair_every: u64,
    /// Threads serving the network (0: one per core). Several nodes
    /// sharing few cores (tests, benchmarks on one machine) want 1.
    pub worker_threads: usize,
    /// Time between gossip rounds, in milliseconds.
    pub gossip_interval_ms: u64,
    /// Suspicion (phi) at which gossip marks a peer down.
    pub phi_threshold: f64,
    /// Accept test hooks (`AdjustClock`): for the fault-injection harness
    /// only.
    pub test_hooks: bool,
    /// Keep unsynced storage writes in memory, so that a kill -9 loses
    /// them as a power loss would (`tally_storage::LossyFs`): for the
    /// fault-injection harness only.
    pub lose_unsynced_writes: bool,
    /// Drop a damaged WAL tail instead of refusing to start, and start a
    /// new incarnation (`tally-node --salvage-wal`: for one start, after
    /// storage named the damage).
    pub salvage_wal: bool,
    /// Deliberately wrong behaviour for the fault-injection harness's
    /// self-tests (`double-apply`, `ack-without-quorum`, `drop-hints`,
    /// `ignore-op-ids`).
    /// Never set this on a real cluster.
    pub broken: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "127.0.0.1:7400".into(),
            data_dir: PathBuf::from("tally-data"),
            host_id: 1,
            durability: "periodic".into(),
            sync_interval_ms: 10,
            max_future_skew_s: 300,
            op_window_s: 600,
            max_op_ids: 2_000_000,
            memtable_mib: 64,
            block_cache_mib: 64,
            namespaces: Default::default(),
            max_in_flight_per_connection: 128,
            max_connections: 10_000,
            max_in_flight: 4_096,
            max_buffered_mib: 256,
            idle_timeout_s: 600,
            frame_timeout_s: 30,
            write_timeout_s: 30,
            advertise: None,
            members: Vec::new(),
            replication_factor: 3,
            init: false,
            seed: None,
            rack: None,
            vnodes: 16,
            cluster_name: "tally".into(),
            hinted_handoff: true,
            hint_replay: true,
            hint_window_s: 3 * 3600,
            hint_replay_cells_per_s: 50_000,
            read_timeout_ms: 2_000,
            one_read_repair_every: 10,
            worker_threads: 0,
            gossip_interval_ms: 1000,
            phi_threshold: 8.0,
            test_hooks: false,
            lose_unsynced_writes: false,
            salvage_wal: false,
            broken: None,
        }
    }
}

/// Parses `host_id=address`.
fn parse_member(entry: &str) -> Result<(HostId, String), String> {
    let (id, addr) = entry
        .split_once('=')
        .ok_or_else(|| format!("member {entry:?} must look like 1=127.0.0.1:7400"))?;
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| format!("member {entry:?}: host id must be a number >= 1"))?;
    if id == 0 || addr.trim().is_empty() {
        return Err(format!(
            "member {entry:?}: host id >= 1 and an address are needed"
        ));
    }
    Ok((HostId(u64::from(id)), addr.trim().to_owned()))
}

impl NodeConfig {
    /// Checks the settings and builds the derived pieces.
    pub fn validate(&self) -> Result<(), String> {
        self.durability()?;
        self.namespace_set()?;
        if self.host_id == 0 {
            return Err("host_id must be at least 1".into());
        }
        if self.max_in_flight_per_connection == 0
            || self.max_connections == 0
            || self.max_in_flight == 0
            || self.max_buffered_mib == 0
        {
            return Err(
                "max_in_flight_per_connection, max_connections, max_in_flight and max_buffered_mib must be at least 1"
                    .into(),
            );
        }
        if self.idle_timeout_s == 0 || self.frame_timeout_s == 0 || self.write_timeout_s == 0 {
            return Err(
                "idle_timeout_s, frame_timeout_s and write_timeout_s must be positive".into(),
            );
        }
        if self.read_timeout_ms == 0 || self.hint_window_s == 0 {
            return Err("read_timeout_ms and hint_window_s must be positive".into());
        }
        if self.raft_metadata() && !self.members.is_empty() {
            return Err("members (static membership) cannot be combined with init or seed".into());
        }
        if self.init && self.seed.is_some() {
            return Err("init starts a new cluster and seed joins one: give one of them".into());
        }
        if !self.raft_metadata() {
            self.cluster_map()?;
        }
        self.broken_mode()?;
        self.storage_options().validate()
    }

    /// Whether the cluster's metadata is agreed through Raft (`init`,
    /// `seed`, or a data directory that already holds metadata) rather
    /// than fixed by `members`.
    pub fn raft_metadata(&self) -> bool {
        self.init || self.seed.is_some() || self.data_dir.join("meta").exists()
    }

    /// The deliberately broken behaviour, if any.
    pub fn broken_mode(&self) -> Result<Option<BrokenMode>, String> {
        self.broken.as_deref().map(BrokenMode::parse).transpose()
    }

    /// The address other nodes and clients reach this node at.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    /// The cluster as configured: the members with tokens from the
    /// seeded allocator (identical on every member).
    pub fn cluster_map(&self) -> Result<ClusterMap, String> {
        let me = HostId(u64::from(self.host_id));
        let (members, rf) = if self.members.is_empty() {
            (vec![(me, self.advertised())], 1)
        } else {
            let members = self
                .members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>, _>>()?;
            match members.iter().find(|(h, _)| *h == me) {
                None => {
                    return Err(format!(
                        "members do not list this node's host id {}",
                        self.host_id
                    ))
                }
                Some((_, addr)) if *addr != self.advertised() => {
                    return Err(format!(
                        "members list host {} at {addr}, but this node advertises {}",
                        self.host_id,
                        self.advertised()
                    ))
                }
                Some(_) => {}
            }
            (members, self.replication_factor)
        };
        let seed = tally_client::token(&self.cluster_name, b"tokens").0;
        ClusterMap::allocate(1, rf, self.vnodes, &members, seed).map_err(|e| e.to_string())
    }

    /// How the coordinator waits and repairs.
    pub fn coordinator(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            hinted_handoff: self.hinted_handoff,
            one_read_repair_every: self.one_read_repair_every,
            broken: self.broken_mode().unwrap_or(None),
            ..CoordinatorConfig::default()
        }
    }

    /// How hints are replayed.
    pub fn replay(&self) -> ReplayConfig {
        ReplayConfig {
            cells_per_s: self.hint_replay_cells_per_s.max(1),
            ..ReplayConfig::default()
        }
    }

    /// Gossip settings.
    pub fn gossip(&self) -> tally_gossip::GossipConfig {
        tally_gossip::GossipConfig {
            interval: Duration::from_millis(self.gossip_interval_ms.max(10)),
            phi_threshold: self.phi_threshold,
            ..tally_gossip::GossipConfig::default()
        }
    }

    /// The hint window.
    pub fn hint_window(&self) -> Duration {
        Duration::from_secs(self.hint_window_s)
    }

    /// The storage engine's durability.
    pub fn durability(&self) -> Result<tally_storage::Durability, String> {
        match self.durability.as_str() {
            "sync" => Ok(tally_storage::Durability::Sync),
            "periodic" => Ok(tally_storage::Durability::Periodic {
                interval: Duration::from_millis(self.sync_interval_ms.max(1)),
            }),
            other => Err(format!(
                "durability must be \"sync\" or \"periodic\", not {other:?}"
            )),
        }
    }

    /// The bounds on connections, before fitting them to the process's
    /// file descriptor limit.
    pub fn server_limits(&self) -> crate::ServerLimits {
        crate::ServerLimits {
            max_connections: self.max_connections,
            max_in_flight_per_connection: self.max_in_flight_per_connection,
            max_in_flight: self.max_in_flight,
            max_buffered_bytes: self.max_buffered_mib.saturating_mul(1 << 20),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            frame_timeout: Duration::from_secs(self.frame_timeout_s),
            write_timeout: Duration::from_secs(self.write_timeout_s),
        }
    }

    /// The storage engine's options.
    pub fn storage_options(&self) -> tally_storage::Options {
        tally_storage::Options {
            durability: self.durability().unwrap_or_default(),
            memtable_bytes: self.memtable_mib.max(1) << 20,
            max_wal_bytes: (self.memtable_mib.max(1) as u64) << 21,
            block_cache_bytes: self.block_cache_mib << 20,
            salvage_wal_tail: self.salvage_wal,
            ..tally_storage::Options::default()
        }
    }

    /// The default namespace plus the configured ones.
    pub fn namespace_set(&self) -> Result<Namespaces, String> {
        let extra = self
            .namespaces
            .iter()
            .map(|(name, spec)| Namespace::parse(name, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Namespaces::with(extra))
    }

    /// Request limits.
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_future_skew: Duration::from_secs(self.max_future_skew_s),
            op_window: crate::op_window::OpWindowLimits {
                span: Duration::from_secs(self.op_window_s),
                max_ids: self.max_op_ids,
            },
            ..StoreLimits::default()
        }
    }
}
