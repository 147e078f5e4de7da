//! `tally-node`: runs one tally node.
//!
//! Settings come from embedded defaults, then `--config FILE` (TOML), then
//! flags (each one a key of the file; `--set section.key=value` reaches
//! any other). SIGTERM or SIGINT stops the node cleanly.

#![allow(clippy::print_stderr)]

mod flags;

use clap::Parser;
use flags::{Args, LogFormat};
use tally_node::{Node, NodeConfig};

/// jemalloc instead of the system allocator: glibc's malloc was a fifth
/// to a quarter of the node's CPU under load (per-cell keys and states,
/// frames, tasks), and its heap trimming hands pages back to the kernel
/// only to fault them in again as the memtable grows. See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,openraft::replication=off".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colour only for a person at a terminal: a log file or a pipe
        // gets plain text.
        LogFormat::Plain => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn run(args: &Args) -> Result<(), String> {
    let config = NodeConfig::load(args.config.as_deref(), &args.overrides()?)?;
    let node = Node::start(config)?;
    node.block_on(shutdown_signal());
    node.shutdown()
}

fn main() {
    let args = Args::parse();
    init_logs(args.log_format);
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            eprintln!("tally-node: standard input closed; exiting");
            std::process::exit(3);
        });
    }
    if let Err(e) = run(&args) {
        eprintln!("tally-node: {e}");
        std::process::exit(1);
    }
}
