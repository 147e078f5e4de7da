//! The command line: each flag is a key of the config file, and
//! [`Args::overrides`] turns the ones given into dotted paths for
//! [`tally_node::NodeConfig::load`].

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// `tally-node`'s flags.
#[derive(Debug, Parser)]
#[command(name = "tally-node", version, about = "A tally storage node")]
pub struct Args {
    /// TOML config file (every setting has a default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Any setting of the file, as `section.key=value` (a TOML value, or
    /// else a string); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Address to listen on, e.g. 127.0.0.1:7400 [listen].
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory [data_dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Host id, >= 1, never reused [cluster.host_id].
    #[arg(long)]
    pub host_id: Option<u32>,
    /// `sync` or `periodic` [storage.durability].
    #[arg(long)]
    pub durability: Option<String>,
    /// Static cluster members, e.g. 1=127.0.0.1:7401,2=127.0.0.1:7402
    /// [cluster.members].
    #[arg(long, value_delimiter = ',')]
    pub members: Option<Vec<String>>,
    /// Copies of each key [cluster.replication_factor].
    #[arg(long)]
    pub replication_factor: Option<usize>,
    /// Bootstrap a new cluster (Raft-agreed metadata), this node its first
    /// member [cluster.init].
    #[arg(long)]
    pub init: bool,
    /// Join the cluster of the node at this address [cluster.seed].
    #[arg(long)]
    pub seed: Option<String>,
    /// The cluster's name; a node of another cluster is refused
    /// [cluster.name].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// This node's rack [cluster.rack].
    #[arg(long)]
    pub rack: Option<String>,
    /// Do not store hints for replicas that miss writes [hints.enabled].
    #[arg(long)]
    pub no_hinted_handoff: bool,
    /// Keep hints but do not deliver them, for tests of read repair
    /// [hints.replay].
    #[arg(long)]
    pub no_hint_replay: bool,
    /// Address of the HTTP/JSON API; default: listen's host, its port +
    /// 1000 [http.listen].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Serve no HTTP API [http.enabled].
    #[arg(long)]
    pub no_http: bool,
    /// A file holding the cluster secret every node of the cluster shares
    /// (`tally secret` makes one; a second line is also accepted, for a
    /// rotation) [security.cluster_secret_file].
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// The API tokens this node accepts: hashes and roles, one per line
    /// (`tally token create` prints one); read again when it changes
    /// [security.tokens_file].
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Listen beyond loopback without a cluster secret and tokens: anyone
    /// who reaches the ports may do anything [security.insecure].
    #[arg(long)]
    pub insecure: bool,
    /// This node's certificate (PEM, signed by the cluster CA; `tally
    /// certs` makes one): with --tls-key and --tls-ca, both ports speak
    /// only TLS [security.tls_cert_file].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's key (PEM) [security.tls_key_file].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM) [security.tls_ca_file].
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Threads serving the network, 0 for one per core [worker_threads].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Start once after storage refused to open over a damaged WAL record:
    /// keep the records before it, drop it and all after it (logged with
    /// file and offset), and start a new incarnation of this node's shard.
    /// Acknowledged increments in the dropped records are lost on this node
    /// (replicas that hold them give them back through repair)
    /// [storage.salvage_wal].
    #[arg(long)]
    pub salvage_wal: bool,
    /// Accept test hooks (the harness's clock nemesis); never on a real
    /// cluster [test.hooks].
    #[arg(long)]
    pub test_hooks: bool,
    /// Lose unsynced writes at a kill, as a power loss would (a storage
    /// test mode for the harness); never on a real cluster
    /// [test.lose_unsynced_writes].
    #[arg(long)]
    pub lose_unsynced_writes: bool,
    /// Deliberately wrong behaviour, for the harness's self-tests only:
    /// double-apply, ack-without-quorum, drop-hints or ignore-op-ids
    /// [test.broken].
    #[arg(long)]
    pub broken: Option<String>,
    /// Exit at once when standard input closes: a supervisor (the
    /// fault-injection harness) holds the other end, so its death takes
    /// its nodes along.
    #[arg(long)]
    pub exit_with_stdin: bool,
    /// Log lines as plain text, or as JSON objects for machines.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Text (coloured only at a terminal).
    Plain,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// Each flag given, as the dotted path of the setting it sets.
    pub fn overrides(&self) -> Result<Vec<(String, toml::Value)>, String> {
        let text = |v: &Option<String>| v.clone().map(toml::Value::from);
        let path = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string().into());
        let int = |v: Option<u64>| v.map(|v| toml::Value::Integer(v as i64));
        let on = |flag: bool, value: bool| flag.then_some(toml::Value::Boolean(value));
        let flags: [(&str, Option<toml::Value>); 25] = [
            ("listen", text(&self.listen)),
            ("data_dir", path(&self.data_dir)),
            ("worker_threads", int(self.worker_threads.map(|v| v as u64))),
            ("cluster.host_id", int(self.host_id.map(u64::from))),
            (
                "cluster.members",
                self.members.clone().map(toml::Value::from),
            ),
            (
                "cluster.replication_factor",
                int(self.replication_factor.map(|v| v as u64)),
            ),
            ("cluster.init", on(self.init, true)),
            ("cluster.seed", text(&self.seed)),
            ("cluster.name", text(&self.cluster_name)),
            ("cluster.rack", text(&self.rack)),
            ("storage.durability", text(&self.durability)),
            ("storage.salvage_wal", on(self.salvage_wal, true)),
            ("hints.enabled", on(self.no_hinted_handoff, false)),
            ("hints.replay", on(self.no_hint_replay, false)),
            ("test.hooks", on(self.test_hooks, true)),
            (
                "test.lose_unsynced_writes",
                on(self.lose_unsynced_writes, true),
            ),
            ("test.broken", text(&self.broken)),
            ("http.listen", text(&self.http_listen)),
            ("http.enabled", on(self.no_http, false)),
            (
                "security.cluster_secret_file",
                path(&self.cluster_secret_file),
            ),
            ("security.tokens_file", path(&self.tokens_file)),
            ("security.insecure", on(self.insecure, true)),
            ("security.tls_cert_file", path(&self.tls_cert)),
            ("security.tls_key_file", path(&self.tls_key)),
            ("security.tls_ca_file", path(&self.tls_ca)),
        ];
        let mut overrides: Vec<(String, toml::Value)> = self
            .set
            .iter()
            .map(|entry| parse_set(entry))
            .collect::<Result<_, _>>()?;
        overrides.extend(
            flags
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_owned(), value?))),
        );
        Ok(overrides)
    }
}

/// Parses `--set section.key=value`: the value as TOML, or else as a
/// string.
fn parse_set(entry: &str) -> Result<(String, toml::Value), String> {
    let (key, value) = entry
        .split_once('=')
        .ok_or_else(|| format!("--set {entry:?} must look like section.key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::from(value));
    Ok((key.trim().to_owned(), value))
}
