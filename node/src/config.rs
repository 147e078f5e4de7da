//! [`NodeConfig`]: a node's settings, from TOML and command-line flags,
//! with embedded defaults so that `tally-node` runs with no config at all.

use std::path::PathBuf;
use std::time::Duration;

use crate::namespace::{Namespace, Namespaces};
use crate::store::StoreLimits;

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
    /// Memtable size in MiB.
    pub memtable_mib: usize,
    /// Extra namespaces: name = "minute:7d, hour:90d, day:forever, total".
    pub namespaces: std::collections::BTreeMap<String, String>,
    /// Requests one connection may have in flight before the node stops
    /// reading from it (back-pressure).
    pub max_in_flight_per_connection: usize,
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
            memtable_mib: 32,
            namespaces: Default::default(),
            max_in_flight_per_connection: 128,
        }
    }
}

impl NodeConfig {
    /// Checks the settings and builds the derived pieces.
    pub fn validate(&self) -> Result<(), String> {
        self.durability()?;
        self.namespace_set()?;
        if self.host_id == 0 {
            return Err("host_id must be at least 1".into());
        }
        if self.max_in_flight_per_connection == 0 {
            return Err("max_in_flight_per_connection must be at least 1".into());
        }
        self.storage_options().validate()
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

    /// The storage engine's options.
    pub fn storage_options(&self) -> tally_storage::Options {
        tally_storage::Options {
            durability: self.durability().unwrap_or_default(),
            memtable_bytes: self.memtable_mib.max(1) << 20,
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
            ..StoreLimits::default()
        }
    }
}
