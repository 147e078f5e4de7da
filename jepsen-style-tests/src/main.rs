//! `jepsen-style-tests`: the fault-injection harness's command line.
//!
//! ```text
//! jepsen-style-tests run --nodes 5 --nemesis partition,kill,pause --time-limit 60 \
//!     --rate 500 --concurrency 10 --seed 7
//! jepsen-style-tests analyze runs/seed-7
//! ```
//!
//! Exit code: 0 valid, 1 invalid, 2 unknown (or the harness could not run).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tally_jepsen::checker::{check, Validity};
use tally_jepsen::cluster::ClusterConfig;
use tally_jepsen::history::read_jsonl;
use tally_jepsen::nemesis::FaultKind;
use tally_jepsen::report;
use tally_jepsen::run::{run, RunConfig};
use tally_jepsen::security;
use tally_jepsen::workload::WorkloadConfig;

#[derive(Debug, Parser)]
#[command(
    name = "jepsen-style-tests",
    version,
    about = "Fault-injection harness for tally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Copies of each key.
    #[arg(long, default_value_t = 3)]
    replication_factor: usize,
    /// Faults to inject: partition, kill, pause, delay, clock (comma separated; "none" for none).
    #[arg(long, default_value = "partition,kill,pause")]
    nemesis: String,
    /// Seconds of workload.
    #[arg(long, default_value_t = 20)]
    time_limit: u64,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Counters the clients share.
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Fraction of operations that are QUORUM reads.
    #[arg(long, default_value_t = 0.3)]
    read_fraction: f64,
    /// Milliseconds a client waits for an answer.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Seeds the schedule and the clients (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs, seeds seed, seed+1, ... (a soak: --runs 20 --time-limit 300).
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// `sync` or `periodic` durability on the nodes.
    #[arg(long, default_value = "periodic")]
    durability: String,
    /// Run anti-entropy repair on every node after healing, before the
    /// final state is read.
    #[arg(long)]
    repair: bool,
    /// Storage test mode: a killed node loses its unsynced writes, as at a
    /// power loss (`tally-node --lose-unsynced-writes`).
    #[arg(long)]
    lose_unsynced_writes: bool,
    /// Increments carry op ids and each is sent twice (a retry after its
    /// outcome is known): the retries must not count.
    #[arg(long)]
    op_ids: bool,
    /// Increments go through an aggregating producer per client, with a
    /// spool (op ids on its sums, resent until settled); the final totals
    /// must then be exact.
    #[arg(long)]
    producer: bool,
    /// Every protection on: a cluster secret, API tokens (the clients use
    /// an admin token) and TLS on both ports and between nodes.
    #[arg(long)]
    secure: bool,
    /// Run the nodes with deliberately wrong behaviour (double-apply,
    /// ack-without-quorum, drop-hints, ignore-op-ids) to see the checker catch it.
    #[arg(long)]
    broken: Option<String>,
    /// Where reports go (one directory per run).
    #[arg(long, default_value = "jepsen-runs")]
    out: PathBuf,
    /// The tally-node binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster, inject faults under load, check the history.
    Run(RunArgs),
    /// Check the history (and final state) of an earlier run's report directory.
    Analyze {
        /// A report directory (holding history.jsonl, maybe final.json).
        dir: PathBuf,
    },
}

fn node_bin(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| {
        std::env::current_exe()
            .map(|e| e.with_file_name("tally-node"))
            .unwrap_or_else(|_| PathBuf::from("tally-node"))
    })
}

fn clock_seed() -> u64 {
    #[allow(clippy::disallowed_methods)] // a fresh seed when none is given
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

async fn run_many(args: RunArgs) -> Result<Validity, String> {
    let nemeses = if args.nemesis == "none" {
        Vec::new()
    } else {
        FaultKind::parse_list(&args.nemesis)?
    };
    let first_seed = args.seed.unwrap_or_else(clock_seed);
    let node_bin = node_bin(args.node_bin.clone());
    let mut worst = Validity::Valid;
    for r in 0..args.runs.max(1) {
        let seed = first_seed.wrapping_add(r);
        let dir = args.out.join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut extra_args = Vec::new();
        if args.lose_unsynced_writes {
            extra_args.push("--lose-unsynced-writes".to_owned());
        }
        if let Some(mode) = &args.broken {
            extra_args.extend(["--broken".to_owned(), mode.clone()]);
        }
        let secured = if args.secure {
            let tally_bin = node_bin.with_file_name("tally");
            Some(security::prepare(&dir.join("security"), &tally_bin)?)
        } else {
            None
        };
        if let Some(s) = &secured {
            extra_args.extend(s.node_args.iter().cloned());
        }
        let config = RunConfig {
            cluster: ClusterConfig {
                nodes: args.nodes,
                replication_factor: args.replication_factor,
                node_bin: node_bin.clone(),
                dir: dir.clone(),
                durability: args.durability.clone(),
                extra_args,
                token: secured.as_ref().map(|s| s.token.clone()),
                tls_ca: secured.map(|s| s.ca),
            },
            workload: WorkloadConfig {
                concurrency: args.concurrency.max(1),
                rate: args.rate,
                keys: args.keys.max(1),
                read_fraction: args.read_fraction,
                timeout: Duration::from_millis(args.timeout_ms.max(1)),
                op_ids: args.op_ids,
                producer: args.producer.then(|| dir.join("producers")),
            },
            nemeses: nemeses.clone(),
            time_limit: Duration::from_secs(args.time_limit),
            seed,
            repair: args.repair,
        };
        let bar = if args.json {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(args.time_limit)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} s")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("seed {seed}"));
        let result = run(&config, &|s| bar.set_position(s)).await;
        bar.finish_and_clear();
        let result = result?;
        let config_json = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        report::write(
            &dir,
            &config_json,
            &result.verdict,
            &result.ops,
            &result.faults,
            result.final_state.as_ref(),
            &result.notes,
        )
        .map_err(|e| format!("{}: {e}", dir.display()))?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"seed": seed, "validity": result.verdict.validity,
                    "anomalies": result.verdict.anomalies.len(), "stats": result.verdict.stats,
                    "faults": result.faults.len(), "report": dir})
            );
        } else {
            println!("seed {seed}: report in {}", dir.display());
            print!(
                "{}",
                report::summary(&result.verdict, &result.faults, &result.notes)
            );
        }
        worst = match (worst, result.verdict.validity) {
            (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
            (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
            _ => Validity::Valid,
        };
    }
    Ok(worst)
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run_many(args))),
        Command::Analyze { dir } => read_jsonl(&dir.join("history.jsonl")).and_then(|ops| {
            let final_state = report::read_final(&dir)?;
            let verdict = check(&ops, final_state.as_ref(), report::producer_run(&dir));
            print!("{}", report::summary(&verdict, &[], &[]));
            Ok(verdict.validity)
        }),
    };
    match outcome {
        Ok(validity) => std::process::exit(validity.exit_code()),
        Err(e) => {
            eprintln!("jepsen-style-tests: {e}");
            std::process::exit(2);
        }
    }
}
