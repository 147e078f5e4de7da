//! [`Node::start`]: a whole node from its [`NodeConfig`], and the
//! [`NodeHandle`] that stops it cleanly.
//!
//! This is the wiring diagram, kept in the library so that the binary is
//! only flags and a signal, and so that anything else (a bench, a test)
//! can run a node in-process. In order:
//!
//! 1. the tokio runtime (its own, so that shutdown can drop every task);
//! 2. the host id: from the data directory, from the config, or assigned
//!    by the cluster a joining node registers with;
//! 3. storage: the identity (which shard this node writes), the counters'
//!    engine and the hint store;
//! 4. the cluster map: static, or followed from the Raft-agreed metadata;
//! 5. the [`NodeContext`] and the services over it (coordinator,
//!    anti-entropy, gossip, hint replay, topology), then the server.
//!
//! [`NodeHandle::shutdown`] stops accepting connections, leaves the Raft
//! group, drops every task with the runtime, waits for the write thread
//! to let go of the store, closes both engines (WAL fsynced) and writes
//! the clean-shutdown marker.

use std::sync::Arc;
use std::time::Duration;

use tally_client::auth::{ClusterSecret, Credentials};
use tally_consensus::{GroupConfig, HostId, MetadataGroup};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, OffsetClock, SystemClock};
use crate::cluster::membership::Membership;
use crate::cluster::metadata::{FollowedMetadata, Metadata, StaticMetadata};
use crate::cluster::peers::{PeerConfig, Peers};
use crate::cluster::raft_link::RaftLink;
use crate::config::NodeConfig;
use crate::context::NodeContext;
use crate::convergence::anti_entropy::Repairer;
use crate::convergence::hint_replay;
use crate::convergence::op_relearn::relearn_op_ids;
use crate::convergence::repair_ledger::RepairLedger;
use crate::convergence::repair_schedule;
use crate::coordinator::Coordinator;
use crate::fault_modes::BrokenMode;
use crate::http;
use crate::replica::hint_store::HintStore;
use crate::replica::identity::Identity;
use crate::replica::store::CounterStore;
use crate::replica::write_pipeline::{WritePipeline, WriterThreads};
use crate::replication::read_repair::ReadRepair;
use crate::replication::replica_reads::ReplicaReads;
use crate::replication::replicator::{Replicator, ReplicatorConfig};
use crate::security::tls::Tls;
use crate::security::{Access, TokenStore};
use crate::server::admission::{Admission, ServerLimits};
use crate::server::{Server, ServerOptions, Services};
use crate::topology::{check_still_member, register, RaftParts, Topology};

/// Write requests queued for the write thread at most.
const WRITE_QUEUE: usize = 4096;
/// How long shutdown waits for tasks still running.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    runtime: tokio::runtime::Runtime,
    started: Started,
    config: NodeConfig,
}

/// How this node gets its cluster map.
enum Mode {
    /// Static members (or this node alone): the map is fixed by
    /// configuration.
    Static,
    /// Raft-agreed metadata; `init` bootstraps a new cluster, `seed`
    /// names the node to join through.
    Raft { init: bool, seed: Option<String> },
}

impl Node {
    /// Starts a node: opens its storage, joins or forms its cluster, and
    /// serves on `config.listen` until [`NodeHandle::shutdown`].
    pub fn start(config: NodeConfig) -> Result<NodeHandle, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.enable_all();
        if config.worker_threads > 0 {
            runtime.worker_threads(config.worker_threads);
        }
        let runtime = runtime.build().map_err(|e| format!("runtime: {e}"))?;
        let started = runtime.block_on(assemble(&config))?;
        Ok(NodeHandle {
            runtime,
            started,
            config,
        })
    }
}

/// The node's secrets and tokens, after refusing to listen beyond
/// loopback without both (unless `security.insecure`).
fn access_of(config: &NodeConfig) -> Result<Access, String> {
    let security = &config.security;
    let secret = match &security.cluster_secret_file {
        Some(path) => Some(Arc::new(ClusterSecret::load(path)?)),
        None => None,
    };
    let tokens = match &security.tokens_file {
        Some(path) => {
            let tokens = TokenStore::load(path)?;
            tokens.watch();
            if tokens.is_empty() {
                tracing::warn!(path = %path.display(), "the tokens file holds no token: every client request is refused");
            }
            Some(tokens)
        }
        None => None,
    };
    let mut exposed: Vec<String> = vec![config.listen.clone()];
    exposed.extend(config.http_address()?);
    let exposed: Vec<String> = exposed.into_iter().filter(|a| !is_loopback(a)).collect();
    let missing: Vec<&str> = [
        (secret.is_none(), "a cluster secret (--cluster-secret-file)"),
        (tokens.is_none(), "API tokens (--tokens-file)"),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect();
    if !exposed.is_empty() && !missing.is_empty() {
        if !security.insecure {
            return Err(format!(
                "refusing to listen on {} without {}: anyone who reaches the port could \
                 read and change every counter and remove nodes. Make a secret with \
                 `tally secret > cluster.secret` and an admin token with `tally token create \
                 --role admin` (docs/security.md), or pass --insecure to run open",
                exposed.join(", "),
                missing.join(" and ")
            ));
        }
        tracing::warn!(
            addresses = %exposed.join(", "),
            missing = %missing.join(", "),
            "running INSECURE (--insecure): anyone who reaches these ports may read and change every counter and remove nodes"
        );
    }
    Ok(Access { secret, tokens })
}

/// The node's TLS, when its certificate, key and CA are all given.
fn tls_of(config: &NodeConfig) -> Result<Option<Tls>, String> {
    let s = &config.security;
    match (&s.tls_cert_file, &s.tls_key_file, &s.tls_ca_file) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Tls::from_files(cert, key, ca).map(Some),
        _ => Err(
            "TLS needs all three of --tls-cert, --tls-key and --tls-ca (`tally certs` makes them)"
                .into(),
        ),
    }
}

/// Whether every address `addr` resolves to is a loopback address.
fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// What [`assemble`] started: what shutdown stops, in order.
#[derive(Debug)]
struct Started {
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<()>,
    topology: Option<Arc<Topology>>,
    store: Arc<CounterStore>,
    hints: Arc<HintStore>,
    writer_threads: WriterThreads,
}

async fn assemble(config: &NodeConfig) -> Result<Started, String> {
    let access = access_of(config)?;
    let tls = tls_of(config)?;
    let credentials = match &access.secret {
        Some(secret) => Credentials::Peer(secret.clone()),
        None => Credentials::None,
    };
    let peer_tls = tls.as_ref().map(|t| t.peer_client.clone());
    let link = RaftLink::new(credentials.clone(), peer_tls.clone());
    let (host_id, mode) = host_id_of(config, &link).await?;
    if config.storage.salvage_wal {
        // Records this node's shard was raised by may be dropped: write a
        // new shard, as after a crash.
        Identity::forget_clean_shutdown(&config.data_dir).map_err(|e| format!("identity: {e}"))?;
        tracing::warn!(
            "salvaging: damaged WAL records are dropped, and this node starts a new incarnation"
        );
    }
    let unclean = Identity::stopped_uncleanly(&config.data_dir);
    let identity = Identity::load_or_create(&config.data_dir, host_id)
        .map_err(|e| format!("identity: {e}"))?;
    let self_id = HostId(u64::from(identity.host_id));
    let clock = Arc::new(OffsetClock::default());
    let fs: Arc<dyn tally_storage::Fs> = if config.test.lose_unsynced_writes {
        tracing::warn!("storage test mode: unsynced writes are lost at a kill, as at a power loss");
        Arc::new(tally_storage::LossyFs)
    } else {
        Arc::new(tally_storage::RealFs)
    };
    let store = Arc::new(
        CounterStore::open_with_fs(
            fs.clone(),
            &config.data_dir.join("storage"),
            config.storage.options(),
            config.namespace_set()?,
            identity,
            clock.clone(),
            config.limits.clone(),
        )
        .map_err(|e| format!("storage: {e}"))?
        .with_trending(config.trending),
    );
    let hints = Arc::new(
        HintStore::open(
            fs,
            &config.data_dir.join("hints"),
            config.storage.options(),
            clock.clone(),
            config.hints.window,
        )
        .map_err(|e| format!("hints: {e}"))?,
    );
    // The metadata group (Raft mode) and the first map.
    let raft = match &mode {
        Mode::Static => None,
        Mode::Raft { .. } => {
            let group = MetadataGroup::open(
                u64::from(identity.host_id),
                &config.data_dir.join("meta"),
                link.clone(),
                GroupConfig::default(),
            )
            .await?;
            check_still_member(&link, &group.state(), self_id).await?;
            let map = group
                .state()
                .cluster_map()
                .map_err(|e| format!("metadata: {e}"))?;
            let metadata = Arc::new(FollowedMetadata::new(map));
            Some(RaftParts {
                group,
                link: link.clone(),
                metadata,
            })
        }
    };
    let map = match &raft {
        Some(raft) => (*raft.metadata.map()).clone(),
        None => config.cluster_map()?,
    };
    let members = map.members().count();
    let broken = config.test.broken;
    if let Some(mode) = broken {
        tracing::error!(?mode, "running with deliberately BROKEN behaviour (harness self-test); never use this for data");
    }
    let hinting = config.hints.enabled && broken != Some(BrokenMode::DropHints);
    if hinting {
        let cells = hint_replay::hint_recovered(&store, &hints, &map, self_id)
            .map_err(|e| format!("hinting recovered cells: {e}"))?;
        if cells > 0 {
            tracing::info!(
                cells,
                "hinted the cells recovered from the WAL for the other replicas"
            );
        }
    }
    let metadata: Arc<dyn Metadata> = match &raft {
        Some(raft) => raft.metadata.clone(),
        None => Arc::new(StaticMetadata::new(map)),
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let http_listener = match config.http_address()? {
        Some(address) => Some(
            tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|e| format!("HTTP listen on {address}: {e}"))?,
        ),
        None => None,
    };
    let peers = Arc::new(Peers::new(
        self_id,
        metadata.clone(),
        PeerConfig {
            credentials,
            tls: peer_tls,
            ..PeerConfig::default()
        },
    ));
    let (writer, writer_threads) = WritePipeline::start(store.clone(), WRITE_QUEUE)
        .map_err(|e| format!("starting the write thread: {e}"))?;
    let replicator = Replicator::new(
        peers.clone(),
        hints.clone(),
        ReplicatorConfig {
            hinted_handoff: hinting,
            ..ReplicatorConfig::default()
        },
    );
    let reads = ReplicaReads::new(
        self_id,
        store.clone(),
        peers.clone(),
        config.coordinator.speculative_retry,
    );
    let read_repair = ReadRepair::new(self_id, writer.clone(), replicator.clone());
    let ctx = Arc::new(NodeContext {
        self_id,
        address: config.advertised(),
        clock: clock.clone(),
        store: store.clone(),
        writer,
        hints: hints.clone(),
        peers: peers.clone(),
        metadata: metadata.clone(),
        replicator,
        reads,
        read_repair,
        broken,
    });
    let coordinator = Coordinator::new(ctx.clone(), config.coordinator.clone());
    tokio::spawn(peers.clone().probe_forever());
    if unclean {
        // Op ids made before now (plus the skew a client clock may have)
        // may have been applied by the previous incarnation.
        let limits = &config.limits;
        let before_ms = clock
            .now_ms()
            .saturating_add(limits.max_future_skew.as_millis() as i64);
        store.start_relearning(before_ms);
        tokio::spawn(relearn_op_ids(
            ctx.clone(),
            before_ms,
            limits.op_window.span,
        ));
    }
    // The generation is the start time: it grows across restarts.
    let generation = SystemClock.now_ms().max(1) as u64;
    let membership = Membership::new(
        self_id,
        &ctx.address,
        generation,
        &ctx.map(),
        config.gossip.gossip_config(),
        peers.clone(),
    );
    tokio::spawn(membership.clone().run_forever());
    if config.hints.replay {
        tokio::spawn(hint_replay::replay_forever(
            hints.clone(),
            peers.clone(),
            metadata.clone(),
            config.hints.clone(),
        ));
    }
    let repairer = Repairer::new(
        ctx.clone(),
        config.repair.clone(),
        RepairLedger::open(&config.data_dir),
    );
    tokio::spawn(repair_schedule::schedule_forever(repairer.clone()));
    let topology = match raft {
        Some(raft) => Some(Topology::new(
            ctx.clone(),
            raft,
            config.cluster.vnodes,
            config.namespace_set()?.iter().cloned().collect(),
            membership.clone(),
            repairer.clone(),
        )),
        None => None,
    };
    tracing::info!(
        address = %ctx.address,
        host_id = identity.host_id,
        incarnation = identity.incarnation,
        durability = ?config.storage.durability,
        members,
        raft_metadata = topology.is_some(),
        replication_factor = metadata.map().replication_factor(),
        "tally-node serving"
    );
    let admission = Admission::new(fitted_limits(config));
    let server = Server::new(
        ctx,
        Services {
            coordinator,
            repairer,
            membership,
            topology: topology.clone(),
        },
        admission.clone(),
        ServerOptions {
            test_hooks: config.test.hooks,
            read_timeout: config.coordinator.read_timeout,
            request_metrics: config.http.enabled && config.http.metrics,
            access,
            tls: tls.clone(),
        },
    );
    if let (Some(topology), Mode::Raft { init, seed }) = (&topology, mode) {
        tokio::spawn(topology.clone().follow());
        let topology = topology.clone();
        let cluster_name = config.cluster.name.clone();
        let rf = config.cluster.replication_factor;
        let rack = config.cluster.rack.clone();
        tokio::spawn(async move {
            if init {
                if let Err(e) = topology.bootstrap(&cluster_name, rf, rack).await {
                    tracing::error!(error = %e, "bootstrap failed");
                }
            } else {
                topology.join(seed.unwrap_or_default()).await;
            }
        });
    }
    let stop = CancellationToken::new();
    if let Some(http_listener) = http_listener {
        if let Ok(address) = http_listener.local_addr() {
            tracing::info!(%address, "HTTP API serving");
        }
        tokio::spawn(http::serve(
            server.clone(),
            admission,
            http_listener,
            stop.clone().cancelled_owned(),
        ));
    }
    let serving = tokio::spawn(server.serve(listener, stop.clone().cancelled_owned()));
    Ok(Started {
        stop,
        serving,
        topology,
        store,
        hints,
        writer_threads,
    })
}

/// The host id: from configuration, from the data directory, 1 for a new
/// cluster, or assigned by the cluster a joining node registers with.
async fn host_id_of(config: &NodeConfig, link: &RaftLink) -> Result<(u32, Mode), String> {
    if !config.raft_metadata() {
        return Ok((config.cluster.host_id, Mode::Static));
    }
    let stored =
        Identity::stored_host_id(&config.data_dir).map_err(|e| format!("identity: {e}"))?;
    let mode = Mode::Raft {
        init: config.cluster.init,
        seed: config.cluster.seed.clone(),
    };
    if let Some(id) = stored {
        return Ok((id, mode));
    }
    if config.cluster.init {
        return Ok((1, mode));
    }
    let Some(seed) = &config.cluster.seed else {
        return Err("this data directory holds metadata but no identity".into());
    };
    let id = register(
        link,
        seed,
        &config.cluster.name,
        &config.advertised(),
        config.cluster.rack.clone(),
    )
    .await?;
    let id = u32::try_from(id).map_err(|_| format!("host id {id} is out of range"))?;
    tracing::info!(host_id = id, %seed, "registered with the cluster");
    Ok((id, mode))
}

/// Raises the soft limit on open files to the hard one where allowed, and
/// fits the connection limit below it.
fn fitted_limits(config: &NodeConfig) -> ServerLimits {
    let fds = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let limits = config.connections.fitted_to(fds);
    if limits.max_connections < config.connections.max_connections {
        tracing::warn!(
            open_files = fds,
            max_connections = limits.max_connections,
            "the open-file limit caps connections below max_connections (raise it with ulimit -n)"
        );
    }
    limits
}

impl NodeHandle {
    /// Runs `future` on the node's runtime (to wait for a signal, say)
    /// while the node serves.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Stops the node cleanly: no new connections, the Raft group left,
    /// every task dropped, both engines closed (WAL fsynced) and the
    /// clean-shutdown marker written.
    pub fn shutdown(self) -> Result<(), String> {
        let NodeHandle {
            runtime,
            started,
            config,
        } = self;
        let Started {
            stop,
            serving,
            topology,
            store,
            hints,
            writer_threads,
        } = started;
        stop.cancel();
        runtime.block_on(async {
            let _ = serving.await;
            tracing::info!("shutting down");
            if let Some(t) = &topology {
                t.group().shutdown().await;
            }
        });
        drop(topology);
        // Dropping the runtime's tasks drops their handles on the write
        // thread, which then finishes what is queued and lets go of the
        // store.
        runtime.shutdown_timeout(SHUTDOWN_WAIT);
        writer_threads.join();
        let store =
            Arc::try_unwrap(store).map_err(|_| "requests still running at shutdown".to_owned())?;
        store.close().map_err(|e| format!("closing storage: {e}"))?;
        let hints = Arc::try_unwrap(hints)
            .map_err(|_| "hint writes still running at shutdown".to_owned())?;
        hints.close().map_err(|e| format!("closing hints: {e}"))?;
        Identity::mark_clean_shutdown(&config.data_dir)
            .map_err(|e| format!("shutdown marker: {e}"))?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}
