//! The command line: global options and one variant per command (clap),
//! and what every command needs from them (a client, the first node).

use clap::{Parser, Subcommand};
use tally_client::tls::TlsClient;
use tally_client::{Client, ClientConfig, Consistency, Secret};

use crate::bench::BenchArgs;
use crate::demo::DemoArgs;
use crate::ingest::IngestArgs;

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "tally: a distributed store for counters"
)]
pub struct Cli {
    /// Node addresses (host:port); any one is enough.
    #[arg(
        long = "addr",
        global = true,
        default_value = "127.0.0.1:7400",
        value_delimiter = ','
    )]
    pub addrs: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The API token to present, for nodes that check tokens (or set
    /// TALLY_TOKEN).
    #[arg(long, global = true, env = "TALLY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS to the nodes, trusting this CA certificate (PEM; or set
    /// TALLY_TLS_CA).
    #[arg(long, global = true, env = "TALLY_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Consistency level: one, quorum or all.
    #[arg(long, global = true, default_value = "quorum")]
    pub consistency: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add to a counter.
    Incr {
        /// The counter's key.
        key: String,
        /// How much to add.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// Namespace.
        #[arg(long, default_value = "events")]
        ns: String,
        /// When it happened: ms since the epoch, `now`, or `-90m` style.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        at: String,
        /// An op id (32 hex digits, as printed), or `new` for a fresh one:
        /// the cluster counts the increment once however often it is sent
        /// with this id, for 10 minutes from the id's making.
        #[arg(long)]
        op_id: Option<String>,
    },
    /// A counter's all-time total.
    Get {
        /// The counter's key.
        key: String,
        /// Namespace.
        #[arg(long, default_value = "events")]
        ns: String,
        /// Show each replica's raw copy instead: its shards with clocks, and
        /// its bytes (for a distinct namespace, the sketch's).
        #[arg(long)]
        replicas: bool,
    },
    /// A counter's per-bucket series.
    Range {
        /// The counter's key.
        key: String,
        /// Namespace.
        #[arg(long, default_value = "events")]
        ns: String,
        /// minute, hour, day or total.
        #[arg(long, default_value = "minute")]
        resolution: String,
        /// Start (inclusive): ms, `now`, or `-3d` style.
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
    },
    /// Sum, count and average over a time range.
    Stats {
        /// The counter's key.
        key: String,
        /// Namespace.
        #[arg(long, default_value = "events")]
        ns: String,
        /// Start (inclusive).
        #[arg(long, default_value = "-30d", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
    },
    /// Add members to a distinct counter (a key of a namespace created
    /// with a `distinct, ...` spec); each counts once however often added.
    Add {
        /// The key.
        key: String,
        /// The members (a viewer id, an address...).
        #[arg(required = true)]
        members: Vec<String>,
        /// Namespace (of kind distinct).
        #[arg(long)]
        ns: String,
        /// When they were seen: ms since the epoch, `now`, or `-90m` style.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        at: String,
    },
    /// Estimated distinct members of a key per bucket, and over the
    /// range (a member seen in several buckets counts once).
    Distinct {
        /// The key.
        key: String,
        /// Namespace (of kind distinct).
        #[arg(long)]
        ns: String,
        /// minute, hour, day or total.
        #[arg(long, default_value = "day")]
        resolution: String,
        /// Start (inclusive): ms, `now`, or `-7d` style.
        #[arg(long, default_value = "-7d", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
    },
    /// The keys of a counter namespace with the largest sums over a window
    /// ("what is trending"), with exact counts.
    Top {
        /// Namespace (a counter namespace).
        #[arg(long, default_value = "events")]
        ns: String,
        /// minute, hour, day or total.
        #[arg(long, default_value = "minute")]
        resolution: String,
        /// Start (inclusive): ms, `now`, or `-1h` style.
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// How many keys.
        #[arg(long, default_value_t = 10)]
        k: u32,
    },
    /// Namespaces: list (the default), describe, create.
    Ns {
        #[command(subcommand)]
        action: Option<NsAction>,
    },
    /// Starts a node that bootstraps a new cluster (Raft-agreed metadata),
    /// in the foreground: `tally-node --init` with these flags.
    Init {
        /// Flags for tally-node, e.g. `--listen 127.0.0.1:7401 --data-dir
        /// /tmp/t1 --replication-factor 3`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        node_args: Vec<String>,
    },
    /// Starts a node that joins the cluster at `--seed`, in the
    /// foreground: `tally-node --seed SEED` with these flags.
    Join {
        /// A node of the cluster.
        #[arg(long)]
        seed: String,
        /// Flags for tally-node, e.g. `--listen 127.0.0.1:7402 --data-dir
        /// /tmp/t2`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        node_args: Vec<String>,
    },
    /// Streams this node's ranges to their next owners, then removes it
    /// from the cluster (the node keeps running, owning nothing).
    Decommission {
        /// The node's host id (sent to it, wherever --addr points).
        host_id: u64,
    },
    /// Re-replicates a dead node's ranges from the surviving replicas, then
    /// removes it (its host id is never used again).
    Removenode {
        /// The dead node's host id.
        host_id: u64,
    },
    /// Drops the cells of ranges the node (the first --addr) no longer
    /// replicates, after joins took them.
    Cleanup,
    /// Rolls back a join or a leave that cannot finish (its node died).
    Abort {
        /// The joining or leaving node's host id.
        host_id: u64,
    },
    /// The cluster as a node sees it: itself and its peers.
    Status {
        /// Ask a node's HTTP port (`host:port`) instead of --addr.
        #[arg(long, value_name = "HOST:PORT")]
        http: Option<String>,
        /// List every token range's anti-entropy: who schedules it, its
        /// last repair and when the next is due.
        #[arg(long)]
        repairs: bool,
    },
    /// Token ranges and their replicas.
    Ring,
    /// Anti-entropy: compare every range the node (the first --addr)
    /// replicates with the other replicas, and converge them.
    Repair,
    /// Load generator.
    Bench(BenchArgs),
    /// Ingest events from JSON-lines or CSV files (or stdin), exactly
    /// once: resumable after a crash from its checkpoint and spool.
    Ingest(IngestArgs),
    /// API tokens: make one for a tokens file.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Prints a new random cluster secret (for --cluster-secret-file).
    Secret,
    /// Makes a cluster CA (once) and issues a certificate signed by it,
    /// for a node or a client.
    Certs {
        /// Where the CA and the certificates live.
        #[arg(long, default_value = "tally-certs")]
        dir: std::path::PathBuf,
        /// The certificate's name (files NAME.pem and NAME-key.pem).
        #[arg(long, default_value = "node")]
        name: String,
        /// Addresses and DNS names the certificate is good for.
        #[arg(long = "host", default_values_t = ["127.0.0.1".to_owned(), "localhost".to_owned(), "::1".to_owned()])]
        hosts: Vec<String>,
    },
    /// Start local node(s), stream synthetic video views, and show the counts.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum NsAction {
    /// Every namespace.
    List,
    /// One namespace.
    Describe {
        /// Its name.
        name: String,
    },
    /// Creates a namespace (clusters started with --init/--seed).
    Create {
        /// `[a-z0-9_]{1,64}`.
        name: String,
        /// Resolutions and retention, e.g. `minute:7d,hour:90d,day:2y,total`;
        /// `distinct, day:400d, total` for distinct counts (`distinct:12`
        /// picks the sketches' precision, 14 by default).
        spec: String,
    },
    /// Changes a namespace's retention or adds resolutions (never drops
    /// one: its cells were written under it).
    Alter {
        /// The namespace.
        name: String,
        /// The new spec, e.g. `minute:14d,hour:90d,day:2y,total`.
        spec: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Prints a new token, and the line to add to the nodes' tokens file
    /// (nodes store only its hash).
    Create {
        /// read, write (implies read) or admin (implies both).
        #[arg(long)]
        role: String,
        /// Who it is for (kept in the tokens file as a comment-like name).
        #[arg(long, default_value = "")]
        name: String,
    },
}

impl Cli {
    /// A client config for `seeds` presenting `--token`, over TLS with
    /// `--tls-ca`.
    pub fn config(&self, seeds: impl IntoIterator<Item = String>) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::with_seeds(seeds);
        config.token = self.token.clone().map(Secret);
        config.tls = self.tls()?;
        Ok(config)
    }

    /// TLS to the nodes, with `--tls-ca`.
    pub fn tls(&self) -> Result<Option<TlsClient>, String> {
        self.tls_ca
            .as_deref()
            .map(|ca| TlsClient::from_files(ca, None))
            .transpose()
    }

    /// A client of the nodes named by `--addr`, at `--consistency`.
    pub async fn connect(&self) -> Result<Client, String> {
        let mut config = self.config(self.addrs.clone())?;
        config.consistency = consistency(&self.consistency)?;
        Client::connect(config).await.map_err(|e| e.to_string())
    }

    /// The first node named by `--addr` (operator requests go there).
    pub fn first(&self) -> &str {
        self.addrs.first().map_or("127.0.0.1:7400", String::as_str)
    }
}

fn consistency(name: &str) -> Result<Consistency, String> {
    match name {
        "one" => Ok(Consistency::One),
        "quorum" => Ok(Consistency::Quorum),
        "all" => Ok(Consistency::All),
        other => Err(format!(
            "consistency must be one, quorum or all, not {other:?}"
        )),
    }
}
