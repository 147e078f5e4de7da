//! `tally-node`: runs one tally node.
//!
//! Settings come from embedded defaults, then `--config FILE` (TOML), then
//! flags. SIGTERM or SIGINT stops it cleanly: no new connections, the
//! storage engine closed (WAL fsynced), a clean-shutdown marker written.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use tally_consensus::{GroupConfig, HostId, MetadataGroup};
use tally_node::{
    check_still_member, handoff, register, relearn_op_ids, Admission, Clock, Coordinator,
    CounterStore, FollowedMetadata, HintStore, Identity, Membership, Metadata, NodeConfig,
    OffsetClock, PeerConfig, Peers, RaftLink, Repairer, Server, ServerLimits, StaticMetadata,
    SystemClock, Topology, WritePipeline,
};

/// jemalloc instead of the system allocator: glibc's malloc was a fifth
/// to a quarter of the node's CPU under load (per-cell keys and states,
/// frames, tasks), and its heap trimming hands pages back to the kernel
/// only to fault them in again as the memtable grows. See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "tally-node", version, about = "A tally storage node")]
struct Args {
    /// TOML config file (every setting has a default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7400.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Host id (>= 1, never reused).
    #[arg(long)]
    host_id: Option<u32>,
    /// `sync` or `periodic`.
    #[arg(long)]
    durability: Option<String>,
    /// Cluster members, e.g. 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403.
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<String>>,
    /// Copies of each key.
    #[arg(long)]
    replication_factor: Option<usize>,
    /// Bootstrap a new cluster (Raft-agreed metadata), this node its first
    /// member.
    #[arg(long)]
    init: bool,
    /// Join the cluster of the node at this address.
    #[arg(long)]
    seed: Option<String>,
    /// The cluster's name (a node of another cluster is refused).
    #[arg(long)]
    cluster_name: Option<String>,
    /// This node's rack.
    #[arg(long)]
    rack: Option<String>,
    /// Do not store hints for replicas that miss writes.
    #[arg(long)]
    no_hinted_handoff: bool,
    /// Keep hints but do not deliver them (for tests of read repair).
    #[arg(long)]
    no_hint_replay: bool,
    /// Threads serving the network (0: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Exit at once when standard input closes: a supervisor (the
    /// fault-injection harness) holds the other end, so its death takes
    /// its nodes along.
    #[arg(long)]
    exit_with_stdin: bool,
    /// Accept test hooks (the harness's clock nemesis). Never on a real
    /// cluster.
    #[arg(long)]
    test_hooks: bool,
    /// Lose unsynced writes at a kill, as a power loss would (a storage
    /// test mode for the harness). Never on a real cluster.
    #[arg(long)]
    lose_unsynced_writes: bool,
    /// Start once after storage refused to open over a damaged WAL record:
    /// keep the records before it, drop it and all after it (logged with
    /// file and offset), and start a new incarnation of this node's shard.
    /// Acknowledged increments in the dropped records are lost on this node
    /// (replicas that hold them give them back through repair).
    #[arg(long)]
    salvage_wal: bool,
    /// Deliberately wrong behaviour, for the harness's self-tests only:
    /// double-apply, ack-without-quorum, drop-hints or ignore-op-ids.
    #[arg(long)]
    broken: Option<String>,
}

fn load(args: &Args) -> Result<NodeConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    if let Some(v) = &args.listen {
        config.listen = v.clone();
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.host_id {
        config.host_id = v;
    }
    if let Some(v) = &args.durability {
        config.durability = v.clone();
    }
    if let Some(v) = &args.members {
        config.members = v.clone();
    }
    if let Some(v) = args.replication_factor {
        config.replication_factor = v;
    }
    if args.init {
        config.init = true;
    }
    if let Some(v) = &args.seed {
        config.seed = Some(v.clone());
    }
    if let Some(v) = &args.cluster_name {
        config.cluster_name = v.clone();
    }
    if let Some(v) = &args.rack {
        config.rack = Some(v.clone());
    }
    if args.no_hinted_handoff {
        config.hinted_handoff = false;
    }
    if args.no_hint_replay {
        config.hint_replay = false;
    }
    if let Some(v) = args.worker_threads {
        config.worker_threads = v;
    }
    if args.test_hooks {
        config.test_hooks = true;
    }
    if args.lose_unsynced_writes {
        config.lose_unsynced_writes = true;
    }
    if args.salvage_wal {
        config.salvage_wal = true;
    }
    if let Some(v) = &args.broken {
        config.broken = Some(v.clone());
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// How this node gets its cluster map.
enum Mode {
    /// `--members` (or alone): the map is fixed by configuration.
    Static,
    /// Raft-agreed metadata; `Some(seed)` while a join may be unfinished.
    Raft { init: bool, seed: Option<String> },
}

/// The host id: from configuration, from the data directory, 1 for a new
/// cluster, or assigned by the cluster a joining node registers with.
async fn host_id_of(config: &NodeConfig, link: &RaftLink) -> Result<(u32, Mode), String> {
    if !config.raft_metadata() {
        return Ok((config.host_id, Mode::Static));
    }
    let stored =
        Identity::stored_host_id(&config.data_dir).map_err(|e| format!("identity: {e}"))?;
    let mode = Mode::Raft {
        init: config.init,
        seed: config.seed.clone(),
    };
    if let Some(id) = stored {
        return Ok((id, mode));
    }
    if config.init {
        return Ok((1, mode));
    }
    let Some(seed) = &config.seed else {
        return Err("this data directory holds metadata but no identity".into());
    };
    let id = register(
        link,
        seed,
        &config.cluster_name,
        &config.advertised(),
        config.rack.clone(),
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
    let limits = config.server_limits().fitted_to(fds);
    if limits.max_connections < config.max_connections {
        tracing::warn!(
            open_files = fds,
            max_connections = limits.max_connections,
            "the open-file limit caps connections below max_connections (raise it with ulimit -n)"
        );
    }
    limits
}

fn run(config: NodeConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let limits = fitted_limits(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.build().map_err(|e| format!("runtime: {e}"))?;
    let link = RaftLink::new();
    let (host_id, mode) = runtime.block_on(host_id_of(&config, &link))?;
    if config.salvage_wal {
        // Records this node's shard was raised by may be dropped: write a
        // new shard, as after a crash (trap (b)).
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
    let fs: Arc<dyn tally_storage::Fs> = if config.lose_unsynced_writes {
        tracing::warn!("storage test mode: unsynced writes are lost at a kill, as at a power loss");
        Arc::new(tally_storage::LossyFs)
    } else {
        Arc::new(tally_storage::RealFs)
    };
    let store = CounterStore::open_with_fs(
        fs.clone(),
        &config.data_dir.join("storage"),
        config.storage_options(),
        config.namespace_set()?,
        identity,
        clock.clone(),
        config.limits(),
    )
    .map_err(|e| format!("storage: {e}"))?;
    let store = Arc::new(store);
    let hints = HintStore::open(
        fs,
        &config.data_dir.join("hints"),
        config.storage_options(),
        clock.clone(),
        config.hint_window(),
    )
    .map_err(|e| format!("hints: {e}"))?;
    let hints = Arc::new(hints);
    // The metadata group (Raft mode) and the first map.
    let (group, followed) = match &mode {
        Mode::Static => (None, None),
        Mode::Raft { .. } => {
            let group = runtime.block_on(MetadataGroup::open(
                u64::from(identity.host_id),
                &config.data_dir.join("meta"),
                link.clone(),
                GroupConfig::default(),
            ))?;
            runtime.block_on(check_still_member(&link, &group.state(), self_id))?;
            let map = group
                .state()
                .cluster_map()
                .map_err(|e| format!("metadata: {e}"))?;
            (Some(group), Some(Arc::new(FollowedMetadata::new(map))))
        }
    };
    let map = match &followed {
        Some(f) => (*f.map()).clone(),
        None => config.cluster_map()?,
    };
    let members = map.members().count();
    if let Some(mode) = config.broken_mode()? {
        tracing::error!(?mode, "running with deliberately BROKEN behaviour (harness self-test); never use this for data");
    }
    if config.hinted_handoff && config.broken_mode()? != Some(tally_node::BrokenMode::DropHints) {
        let cells = handoff::hint_recovered(&store, &hints, &map, self_id)
            .map_err(|e| format!("hinting recovered cells: {e}"))?;
        if cells > 0 {
            tracing::info!(
                cells,
                "hinted the cells recovered from the WAL for the other replicas"
            );
        }
    }
    let metadata: Arc<dyn Metadata> = match &followed {
        Some(f) => f.clone(),
        None => Arc::new(StaticMetadata::new(map)),
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| format!("listen on {}: {e}", config.listen))?;
        let address = config.advertised();
        let peers = Arc::new(Peers::new(self_id, metadata.clone(), PeerConfig::default()));
        let writer = WritePipeline::start(store.clone(), 4096)
            .map_err(|e| format!("starting the write thread: {e}"))?;
        let coordinator = Coordinator::new(
            self_id,
            store.clone(),
            writer,
            metadata.clone(),
            peers.clone(),
            hints.clone(),
            config.coordinator(),
        );
        tokio::spawn(peers.clone().probe_forever());
        if unclean {
            // Op ids made before now (plus the skew a client clock may
            // have) may have been applied by the previous incarnation.
            let window = config.limits().op_window.span;
            let before_ms = clock
                .now_ms()
                .saturating_add(config.limits().max_future_skew.as_millis() as i64);
            store.start_relearning(before_ms);
            tokio::spawn(relearn_op_ids(coordinator.clone(), before_ms, window));
        }
        // The generation is the start time: it grows across restarts.
        let generation = SystemClock.now_ms().max(1) as u64;
        let membership = Membership::new(
            self_id,
            generation,
            peers.clone(),
            store.clone(),
            metadata.as_ref(),
            config.gossip(),
            &address,
        );
        tokio::spawn(membership.clone().run_forever());
        if config.hint_replay {
            tokio::spawn(handoff::replay_forever(
                hints.clone(),
                peers.clone(),
                metadata.clone(),
                config.replay(),
            ));
        }
        let repairer = Repairer::new(coordinator.clone());
        let topology = match (group, followed) {
            (Some(group), Some(followed)) => Some(Topology::new(
                self_id,
                address.clone(),
                config.vnodes,
                config.namespace_set()?.iter().cloned().collect(),
                group,
                link.clone(),
                followed,
                coordinator.clone(),
                membership.clone(),
                repairer.clone(),
            )),
            _ => None,
        };
        tracing::info!(
            %address,
            host_id = identity.host_id,
            incarnation = identity.incarnation,
            durability = %config.durability,
            members,
            raft_metadata = topology.is_some(),
            replication_factor = metadata.map().replication_factor(),
            "tally-node serving"
        );
        let server = Server::new(
            coordinator,
            repairer,
            membership,
            topology.clone(),
            config.test_hooks.then(|| clock.clone()),
            address,
            Admission::new(limits),
        );
        if let (Some(topology), Mode::Raft { init, seed }) = (&topology, &mode) {
            tokio::spawn(topology.clone().follow());
            let topology = topology.clone();
            let (init, seed) = (*init, seed.clone());
            let cluster_name = config.cluster_name.clone();
            let rf = config.replication_factor;
            tokio::spawn(async move {
                if init {
                    if let Err(e) = topology.bootstrap(&cluster_name, rf).await {
                        tracing::error!(error = %e, "bootstrap failed");
                    }
                } else {
                    let seed = seed.unwrap_or_default();
                    topology.join(seed).await;
                }
            });
        }
        server.serve(listener, shutdown_signal()).await;
        tracing::info!("shutting down");
        if let Some(t) = &topology {
            t.group().shutdown().await;
        }
        Ok::<(), String>(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    // The write thread lets go of the store once its queue closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while (Arc::strong_count(&store) > 1 || Arc::strong_count(&hints) > 1)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let store =
        Arc::try_unwrap(store).map_err(|_| "requests still running at shutdown".to_owned())?;
    store.close().map_err(|e| format!("closing storage: {e}"))?;
    let hints =
        Arc::try_unwrap(hints).map_err(|_| "hint writes still running at shutdown".to_owned())?;
    hints.close().map_err(|e| format!("closing hints: {e}"))?;
    Identity::mark_clean_shutdown(&config.data_dir).map_err(|e| format!("shutdown marker: {e}"))?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,openraft::replication=off".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a pipe
        // gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            eprintln!("tally-node: standard input closed; exiting");
            std::process::exit(3);
        });
    }
    let result = load(&args).and_then(run);
    if let Err(e) = result {
        eprintln!("tally-node: {e}");
        std::process::exit(1);
    }
}
