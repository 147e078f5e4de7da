//! [`NodeConfig`]: a node's settings, from TOML and command-line flags,
//! with embedded defaults so that `tally-node` runs with no config at all.
//!
//! The file has a few top-level keys (where the node listens and keeps its
//! data) and one section per part of the node. Each section is the
//! settings type that part reads ([`StoreLimits`], [`ServerLimits`],
//! [`CoordinatorConfig`], [`HintConfig`], ...), so its `Default` is the
//! only statement of its defaults, and names (durability, broken modes)
//! become enums when the file is read, not when they are used:
//!
//! ```toml
//! listen = "127.0.0.1:7400"
//! data_dir = "tally-data"
//!
//! [cluster]             # host_id, members, replication_factor, init, seed, rack, vnodes, name
//! [storage]             # durability, sync_interval_ms, memtable_mib, block_cache_mib, salvage_wal
//! [limits]              # max_key_bytes, max_future_skew_s, max_range_buckets
//! [limits.op_window]    # span_s, max_ids
//! [coordinator]         # read_timeout_ms, default_write_timeout_ms, ...
//! [connections]         # max_connections, max_in_flight, max_buffered_mib, timeouts
//! [hints]               # enabled, replay, window_s, replay_cells_per_s, ...
//! [repair]              # interval_s, bytes_per_s, lease_s (scheduled anti-entropy)
//! [gossip]              # interval_ms, phi_threshold, max_digests
//! [namespaces]          # name = "minute:7d, hour:90d, day:forever, total"
//! [trending]            # capacity, minute_buckets, hour_buckets, day_buckets
//! [http]                # enabled, listen
//! [test]                # hooks, lose_unsynced_writes, broken (never on a real cluster)
//! ```
//!
//! Flags overlay the file through [`NodeConfig::load`]: each is a dotted
//! path and a value, set in the file's table before it is read, so a flag
//! and a file key are checked by the same code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_consensus::{ClusterMap, HostId};

use crate::convergence::hint_replay::HintConfig;
use crate::convergence::repair_config::RepairConfig;
use crate::coordinator::CoordinatorConfig;
use crate::counter::limits::StoreLimits;
use crate::counter::namespace::{Namespace, Namespaces};
use crate::fault_modes::BrokenMode;
use crate::replica::trending::TrendingConfig;
use crate::server::admission::ServerLimits;

/// Node settings (the TOML file's shape).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address to serve clients and peers on (`host:port`). Loopback by
    /// default.
    pub listen: String,
    /// The address other nodes and clients use (default: `listen`).
    pub advertise: Option<String>,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Threads serving the network (0: one per core). Several nodes
    /// sharing few cores (tests, benchmarks on one machine) want 1.
    pub worker_threads: usize,
    /// Who the cluster is and how this node enters it.
    pub cluster: ClusterConfig,
    /// The storage engine.
    pub storage: StorageConfig,
    /// What one request may ask, and the op-id window.
    pub limits: StoreLimits,
    /// How requests wait for replicas and repair them.
    pub coordinator: CoordinatorConfig,
    /// Bounds on connections and what they may make the node hold.
    pub connections: ServerLimits,
    /// Hinted handoff.
    pub hints: HintConfig,
    /// Scheduled anti-entropy.
    pub repair: RepairConfig,
    /// Gossip and its failure detector.
    pub gossip: GossipSettings,
    /// Extra namespaces: name = "minute:7d, hour:90d, day:forever, total"
    /// (or "distinct, ..." for distinct counts).
    pub namespaces: BTreeMap<String, String>,
    /// The summaries of led increments that `Top` queries read.
    pub trending: TrendingConfig,
    /// The HTTP/JSON front.
    pub http: HttpConfig,
    /// Who may talk to the node.
    pub security: SecurityConfig,
    /// Test modes for the fault-injection harness; never on a real
    /// cluster.
    pub test: TestConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "127.0.0.1:7400".into(),
            advertise: None,
            data_dir: PathBuf::from("tally-data"),
            worker_threads: 0,
            cluster: ClusterConfig::default(),
            storage: StorageConfig::default(),
            limits: StoreLimits::default(),
            coordinator: CoordinatorConfig::default(),
            connections: ServerLimits::default(),
            hints: HintConfig::default(),
            repair: RepairConfig::default(),
            gossip: GossipSettings::default(),
            namespaces: BTreeMap::new(),
            trending: TrendingConfig::default(),
            http: HttpConfig::default(),
            security: SecurityConfig::default(),
            test: TestConfig::default(),
        }
    }
}

/// `[cluster]`: who the cluster is and how this node enters it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's host id with static `members` (Raft-agreed metadata
    /// assigns ids itself).
    pub host_id: u32,
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
    /// This node's rack (voters spread over racks).
    pub rack: Option<String>,
    /// Tokens (virtual nodes) per member.
    pub vnodes: usize,
    /// The cluster's name; it seeds the token allocator, so every member
    /// must use the same one.
    pub name: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            host_id: 1,
            members: Vec::new(),
            replication_factor: 3,
            init: false,
            seed: None,
            rack: None,
            vnodes: 16,
            name: "tally".into(),
        }
    }
}

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fsync before acknowledging.
    Sync,
    /// Acknowledge after write(2); fsync every `sync_interval_ms`.
    Periodic,
}

/// `[storage]`: the storage engine.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sync` (fsync before acknowledging) or `periodic`.
    pub durability: DurabilityMode,
    /// Background fsync interval in `periodic` mode, in milliseconds.
    pub sync_interval_ms: u64,
    /// Memtable size in MiB (RocksDB's default write buffer). Hot counters
    /// fold in place in the memtable, so a larger one also means fewer
    /// bytes flushed and compacted. The WAL rotates at twice this.
    pub memtable_mib: usize,
    /// Memory for SSTable data blocks recently read, in MiB (0: none; reads
    /// then go through the OS page cache with a `pread` per block).
    pub block_cache_mib: usize,
    /// Drop a damaged WAL tail instead of refusing to start, and start a
    /// new incarnation (`tally-node --salvage-wal`: for one start, after
    /// storage named the damage).
    pub salvage_wal: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: DurabilityMode::Periodic,
            sync_interval_ms: 10,
            memtable_mib: 64,
            block_cache_mib: 64,
            salvage_wal: false,
        }
    }
}

impl StorageConfig {
    /// The storage engine's durability.
    pub fn durability(&self) -> tally_storage::Durability {
        match self.durability {
            DurabilityMode::Sync => tally_storage::Durability::Sync,
            DurabilityMode::Periodic => tally_storage::Durability::Periodic {
                interval: Duration::from_millis(self.sync_interval_ms.max(1)),
            },
        }
    }

    /// The storage engine's options.
    pub fn options(&self) -> tally_storage::Options {
        tally_storage::Options {
            durability: self.durability(),
            memtable_bytes: self.memtable_mib.max(1) << 20,
            max_wal_bytes: (self.memtable_mib.max(1) as u64) << 21,
            block_cache_bytes: self.block_cache_mib << 20,
            salvage_wal_tail: self.salvage_wal,
            ..tally_storage::Options::default()
        }
    }
}

/// `[gossip]`: the settings of gossip an operator tunes; the rest of
/// [`tally_gossip::GossipConfig`] keeps its defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSettings {
    /// Time between gossip rounds, in milliseconds.
    pub interval_ms: u64,
    /// Suspicion (phi) at which gossip marks a peer down.
    pub phi_threshold: f64,
    /// Past this many peers, gossip sends bounded windows (rotating
    /// digests and compact heartbeats) instead of a digest of every node.
    pub max_digests: usize,
}

impl Default for GossipSettings {
    fn default() -> Self {
        let defaults = tally_gossip::GossipConfig::default();
        GossipSettings {
            interval_ms: u64::try_from(defaults.interval.as_millis()).unwrap_or(1000),
            phi_threshold: defaults.phi_threshold,
            max_digests: defaults.max_digests,
        }
    }
}

impl GossipSettings {
    /// The gossiper's configuration.
    pub fn gossip_config(&self) -> tally_gossip::GossipConfig {
        tally_gossip::GossipConfig {
            interval: Duration::from_millis(self.interval_ms.max(10)),
            phi_threshold: self.phi_threshold,
            max_digests: self.max_digests,
            ..tally_gossip::GossipConfig::default()
        }
    }
}

/// `[http]`: the HTTP/JSON front (docs/http.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the HTTP API.
    pub enabled: bool,
    /// Where (`host:port`); absent: `listen`'s host, its port + 1000
    /// (7400 -> 8400).
    pub listen: Option<String>,
    /// Count requests and serve `/metrics` (off: the fronts count
    /// nothing, `/metrics` answers 404).
    pub metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: None,
            metrics: true,
        }
    }
}

/// `[security]`: who may talk to the node (docs/security.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// The cluster secret every node shares: the first line is the one
    /// this node proves with, a second is also accepted (rotation).
    /// Absent: node-to-node requests are not checked.
    pub cluster_secret_file: Option<PathBuf>,
    /// API tokens (SHA-256 hashes and roles), read again when the file
    /// changes. Absent: every client may do everything.
    pub tokens_file: Option<PathBuf>,
    /// Listen beyond loopback without a cluster secret and tokens.
    pub insecure: bool,
    /// This node's certificate chain (PEM), signed by the cluster CA: with
    /// `tls_key_file` and `tls_ca_file`, both ports speak only TLS and
    /// nodes talk to each other over mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers' certificates must chain
    /// to it.
    pub tls_ca_file: Option<PathBuf>,
}

/// `[test]`: modes for the fault-injection harness. Never on a real
/// cluster.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestConfig {
    /// Accept test hooks (`AdjustClock`).
    pub hooks: bool,
    /// Keep unsynced storage writes in memory, so that a kill -9 loses
    /// them as a power loss would (`tally_storage::LossyFs`).
    pub lose_unsynced_writes: bool,
    /// Deliberately wrong behaviour for the harness's self-tests
    /// (`double-apply`, `ack-without-quorum`, `drop-hints`,
    /// `ignore-op-ids`).
    pub broken: Option<BrokenMode>,
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

/// Sets `value` at the dotted `path` of `table`, making sections on the
/// way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().filter(|p| !p.is_empty());
    let Some(last) = last else {
        return Err(format!("setting {path:?} has no name"));
    };
    let mut table = table;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("setting {path:?}: {part} is not a section"))?;
    }
    table.insert(last.to_owned(), value);
    Ok(())
}

impl NodeConfig {
    /// The settings: the defaults, then the TOML file at `file` if any,
    /// then `overrides` (dotted paths such as `storage.durability`, each
    /// replacing the file's value), checked.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, toml::Value)],
    ) -> Result<NodeConfig, String> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (path, value) in overrides {
            set_path(&mut table, path, value.clone())?;
        }
        let where_from = file.map_or("settings".to_owned(), |p| p.display().to_string());
        let config: NodeConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| format!("{where_from}: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings and builds the derived pieces.
    pub fn validate(&self) -> Result<(), String> {
        self.namespace_set()?;
        if self.cluster.host_id == 0 {
            return Err("cluster.host_id must be at least 1".into());
        }
        let c = &self.connections;
        if c.max_in_flight_per_connection == 0
            || c.max_connections == 0
            || c.max_in_flight == 0
            || c.max_buffered_bytes == 0
        {
            return Err(
                "connections: max_in_flight_per_connection, max_connections, max_in_flight and max_buffered_mib must be at least 1"
                    .into(),
            );
        }
        if c.idle_timeout.is_zero() || c.frame_timeout.is_zero() || c.write_timeout.is_zero() {
            return Err(
                "connections: idle_timeout_s, frame_timeout_s and write_timeout_s must be positive"
                    .into(),
            );
        }
        if self.coordinator.read_timeout.is_zero() || self.hints.window.is_zero() {
            return Err("coordinator.read_timeout_ms and hints.window_s must be positive".into());
        }
        if self.repair.lease.is_zero() {
            return Err("repair.lease_s must be positive".into());
        }
        if self.raft_metadata() && !self.cluster.members.is_empty() {
            return Err(
                "cluster.members (static membership) cannot be combined with init or seed".into(),
            );
        }
        if self.cluster.init && self.cluster.seed.is_some() {
            return Err("init starts a new cluster and seed joins one: give one of them".into());
        }
        if !self.raft_metadata() {
            self.cluster_map()?;
        }
        self.http_address()?;
        self.storage.options().validate()
    }

    /// The HTTP front's address (`None`: off).
    pub fn http_address(&self) -> Result<Option<String>, String> {
        if !self.http.enabled {
            return Ok(None);
        }
        if let Some(listen) = &self.http.listen {
            return Ok(Some(listen.clone()));
        }
        let derived = self.listen.rsplit_once(':').and_then(|(host, port)| {
            let port = port.parse::<u16>().ok()?.checked_add(1000)?;
            Some(format!("{host}:{port}"))
        });
        derived.map(Some).ok_or_else(|| {
            format!(
                "cannot derive the HTTP address from listen {:?}: set http.listen (--http-listen) or turn HTTP off (--no-http)",
                self.listen
            )
        })
    }

    /// Whether the cluster's metadata is agreed through Raft (`init`,
    /// `seed`, or a data directory that already holds metadata) rather
    /// than fixed by `members`.
    pub fn raft_metadata(&self) -> bool {
        self.cluster.init || self.cluster.seed.is_some() || self.data_dir.join("meta").exists()
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
        let host_id = self.cluster.host_id;
        let me = HostId(u64::from(host_id));
        let (members, rf) = if self.cluster.members.is_empty() {
            (vec![(me, self.advertised())], 1)
        } else {
            let members = self
                .cluster
                .members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>, _>>()?;
            match members.iter().find(|(h, _)| *h == me) {
                None => return Err(format!("members do not list this node's host id {host_id}")),
                Some((_, addr)) if *addr != self.advertised() => {
                    return Err(format!(
                        "members list host {host_id} at {addr}, but this node advertises {}",
                        self.advertised()
                    ))
                }
                Some(_) => {}
            }
            (members, self.cluster.replication_factor)
        };
        let seed = tally_client::token(&self.cluster.name, b"tokens").0;
        ClusterMap::allocate(1, rf, self.cluster.vnodes, &members, seed).map_err(|e| e.to_string())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, overrides: &[(&str, toml::Value)]) -> Result<NodeConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, text).unwrap();
        let overrides: Vec<(String, toml::Value)> = overrides
            .iter()
            .map(|(p, v)| ((*p).to_owned(), v.clone()))
            .collect();
        NodeConfig::load(Some(&file), &overrides)
    }

    #[test]
    fn sections_read_their_units_and_keep_the_rest_at_their_defaults() {
        let config = load(
            "listen = \"127.0.0.1:9000\"\n\
             [storage]\ndurability = \"sync\"\n\
             [connections]\nidle_timeout_s = 3\nmax_buffered_mib = 48\n\
             [limits.op_window]\nspan_s = 60\n\
             [coordinator]\nread_timeout_ms = 250\n\
             [test]\nbroken = \"drop-hints\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.storage.durability, DurabilityMode::Sync);
        assert_eq!(config.connections.idle_timeout, Duration::from_secs(3));
        assert_eq!(config.connections.max_buffered_bytes, 48 << 20);
        assert_eq!(config.limits.op_window.span, Duration::from_secs(60));
        assert_eq!(config.coordinator.read_timeout, Duration::from_millis(250));
        assert_eq!(config.test.broken, Some(BrokenMode::DropHints));
        let defaults = NodeConfig::default();
        assert_eq!(
            config.connections.max_in_flight,
            defaults.connections.max_in_flight
        );
        assert_eq!(
            config.limits.op_window.max_ids,
            defaults.limits.op_window.max_ids
        );
        assert_eq!(config.cluster.vnodes, defaults.cluster.vnodes);
    }

    #[test]
    fn overrides_replace_the_file_and_make_sections() {
        let config = load(
            "[storage]\ndurability = \"sync\"\n",
            &[
                ("storage.durability", toml::Value::from("periodic")),
                ("hints.enabled", toml::Value::from(false)),
                (
                    "cluster.members",
                    toml::Value::from(vec!["1=127.0.0.1:7400"]),
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.storage.durability, DurabilityMode::Periodic);
        assert!(!config.hints.enabled);
        assert_eq!(config.cluster.members, vec!["1=127.0.0.1:7400".to_owned()]);
    }

    #[test]
    fn unknown_keys_and_names_are_refused_when_read() {
        let err = load("[storage]\ndurability = \"sometimes\"\n", &[]).unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
        let err = load("[test]\nbroken = \"quietly\"\n", &[]).unwrap_err();
        assert!(err.contains("quietly"), "{err}");
        let err = load("memtable_mib = 1\n", &[]).unwrap_err();
        assert!(err.contains("memtable_mib"), "{err}");
        let err = load(
            "listen = \"127.0.0.1:1\"\n",
            &[("listen.port", toml::Value::from(1))],
        )
        .unwrap_err();
        assert!(err.contains("not a section"), "{err}");
        let err = load("", &[("listen.port", toml::Value::from(1))]).unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = load("[connections]\nidle_timeout_s = 0\n", &[]).unwrap_err();
        assert!(err.contains("idle_timeout_s"), "{err}");
    }

    #[test]
    fn the_default_config_round_trips_through_toml() {
        let text = toml::to_string(&NodeConfig::default()).unwrap();
        let back = load(&text, &[]).unwrap();
        assert_eq!(toml::to_string(&back).unwrap(), text);
    }

    #[test]
    fn the_documented_example_is_every_default() {
        let example = include_str!("../../docs/node.toml");
        let read: NodeConfig = toml::from_str(example).unwrap();
        assert_eq!(
            toml::to_string(&read).unwrap(),
            toml::to_string(&NodeConfig::default()).unwrap(),
            "docs/node.toml and the defaults differ"
        );
    }
}
