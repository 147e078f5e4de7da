//! `tally`: the command-line client. Tables for people, `--json` for
//! scripts.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod timespec;
mod topology;

use clap::{Parser, Subcommand};
use tally_client::{Client, ClientConfig, Consistency, Increment, Outcome, Resolution};

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "tally: a distributed store for counters"
)]
struct Cli {
    /// Node addresses (host:port); any one is enough.
    #[arg(
        long = "addr",
        global = true,
        default_value = "127.0.0.1:7400",
        value_delimiter = ','
    )]
    addrs: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Consistency level: one, quorum or all.
    #[arg(long, global = true, default_value = "quorum")]
    consistency: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        /// Show each replica's raw copy (shards with clocks) instead.
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
    Status,
    /// Token ranges and their replicas.
    Ring,
    /// Anti-entropy: compare every range the node (the first --addr)
    /// replicates with the other replicas, and converge them.
    Repair,
    /// Load generator.
    Bench(bench::BenchArgs),
    /// Start local node(s), stream synthetic video views, and show the counts.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum NsAction {
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
        /// Resolutions and retention, e.g. `minute:7d,hour:90d,day:2y,total`.
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

async fn connect(cli: &Cli) -> Result<Client, String> {
    let mut config = ClientConfig::with_seeds(cli.addrs.clone());
    config.consistency = consistency(&cli.consistency)?;
    Client::connect(config).await.map_err(|e| e.to_string())
}

/// Replaces this process with `tally-node` (found beside `tally`, else on
/// the PATH) run with `args`.
fn exec_node(args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tally-node")))
        .filter(|p| p.exists());
    let program = beside.unwrap_or_else(|| "tally-node".into());
    let error = std::process::Command::new(&program).args(args).exec();
    Err(format!("starting {}: {error}", program.display()))
}

fn first(cli: &Cli) -> &str {
    cli.addrs.first().map_or("127.0.0.1:7400", String::as_str)
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

async fn run(cli: Cli) -> Result<(), String> {
    let now = timespec::now_ms();
    match &cli.command {
        Command::Incr {
            key,
            delta,
            ns,
            at,
            op_id,
        } => {
            let op_id =
                match op_id.as_deref() {
                    None => None,
                    Some("new") => Some(tally_client::new_op_id()),
                    Some(hex) => Some(u128::from_str_radix(hex, 16).map_err(|e| {
                        format!("--op-id {hex:?}: not 32 hex digits nor `new`: {e}")
                    })?),
                };
            let client = connect(&cli).await?;
            let timestamp_ms = timespec::parse(at, now)?;
            let item = Increment {
                namespace: ns.clone(),
                key: key.clone().into_bytes(),
                timestamp_ms,
                delta: *delta,
                events: 1,
                op_id,
            };
            let op_hex = op_id.map(|id| format!("{id:032x}"));
            match client.increment(vec![item]).await.pop() {
                Some(Outcome::Ok(())) => {
                    if cli.json {
                        print_json(&serde_json::json!({"ok": true, "op_id": op_hex}));
                    } else if let Some(hex) = op_hex {
                        println!("ok (op id {hex})");
                    } else {
                        println!("ok");
                    }
                    Ok(())
                }
                Some(Outcome::Failed(e)) => Err(format!("failed (not applied): {e}")),
                Some(Outcome::Indeterminate(e)) => Err(match op_hex {
                    Some(hex) => format!(
                        "indeterminate (may have been applied): {e}; resend with --op-id {hex} \
                         to count it exactly once"
                    ),
                    None => format!("indeterminate (may have been applied): {e}"),
                }),
                None => Err("no result".into()),
            }
        }
        Command::Get { key, ns, replicas } if *replicas => {
            let client = connect(&cli).await?;
            let views = client
                .inspect_replicas(ns, key.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            if cli.json {
                print_json(&views);
            } else {
                println!(
                    "{:<8} {:<22} {:>12} {:>10}  shards (id:clock=sum)",
                    "host id", "address", "sum", "count"
                );
                for v in &views {
                    let (sum, count) = v.shards.iter().fold((0i64, 0u64), |(s, c), x| {
                        (s.wrapping_add(x.sum), c.wrapping_add(x.count))
                    });
                    let detail = match &v.error {
                        Some(e) => format!("unreachable: {e}"),
                        None => v
                            .shards
                            .iter()
                            .map(|x| {
                                format!(
                                    "{}.{}:{}={}",
                                    x.id >> 32,
                                    x.id & 0xffff_ffff,
                                    x.clock,
                                    x.sum
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                    };
                    println!(
                        "{:<8} {:<22} {:>12} {:>10}  {detail}",
                        v.host_id, v.address, sum, count
                    );
                }
                let copies: Vec<&Vec<tally_client::ShardView>> = views
                    .iter()
                    .filter(|v| v.error.is_none())
                    .map(|v| &v.shards)
                    .collect();
                if copies.windows(2).all(|w| w[0] == w[1]) {
                    println!("replicas agree");
                } else {
                    println!("replicas differ (read repair or hint replay will converge them)");
                }
            }
            Ok(())
        }
        Command::Get { key, ns, .. } => {
            let client = connect(&cli).await?;
            let c = client
                .total(ns, key.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            if cli.json {
                print_json(&c);
            } else {
                println!("{key}: sum {} over {} increments", c.sum, c.count);
            }
            Ok(())
        }
        Command::Range {
            key,
            ns,
            resolution,
            from,
            to,
        } => {
            let client = connect(&cli).await?;
            let res = Resolution::from_name(resolution)
                .ok_or_else(|| format!("unknown resolution {resolution:?}"))?;
            let (start, end) = (timespec::parse(from, now)?, timespec::parse(to, now)?);
            let points = client
                .range(ns, key.as_bytes(), res, start, end)
                .await
                .map_err(|e| e.to_string())?;
            if cli.json {
                print_json(&points);
            } else {
                println!("{:<18} {:>14} {:>10}", "bucket (UTC)", "sum", "count");
                for p in &points {
                    println!(
                        "{:<18} {:>14} {:>10}",
                        timespec::format(p.bucket_start_ms),
                        p.sum,
                        p.count
                    );
                }
                println!("{} buckets", points.len());
            }
            Ok(())
        }
        Command::Stats { key, ns, from, to } => {
            let client = connect(&cli).await?;
            let (start, end) = (timespec::parse(from, now)?, timespec::parse(to, now)?);
            let (c, cells) = client
                .stats(ns, key.as_bytes(), start, end)
                .await
                .map_err(|e| e.to_string())?;
            let avg = if c.count == 0 {
                0.0
            } else {
                c.sum as f64 / c.count as f64
            };
            if cli.json {
                print_json(
                    &serde_json::json!({"sum": c.sum, "count": c.count, "average": avg, "cells_read": cells}),
                );
            } else {
                println!(
                    "sum {}  count {}  average {avg:.3}  ({cells} cells read)",
                    c.sum, c.count
                );
            }
            Ok(())
        }
        Command::Ns {
            action: Some(NsAction::Create { name, spec }),
        } => {
            let request = tally_client::admin::AdminRequest::CreateNamespace {
                name: name.clone(),
                spec: spec.clone(),
            };
            topology::request(first(&cli), request, "namespace creation", cli.json).await
        }
        Command::Ns {
            action: Some(NsAction::Alter { name, spec }),
        } => {
            let request = tally_client::admin::AdminRequest::AlterNamespace {
                name: name.clone(),
                spec: spec.clone(),
            };
            topology::request(first(&cli), request, "namespace change", cli.json).await
        }
        Command::Ns { action } => {
            let client = connect(&cli).await?;
            let name = match action {
                Some(NsAction::Describe { name }) => Some(name),
                _ => None,
            };
            let list = match name {
                Some(n) => vec![client
                    .describe_namespace(n)
                    .await
                    .map_err(|e| e.to_string())?],
                None => client.namespaces().await.map_err(|e| e.to_string())?,
            };
            if cli.json {
                print_json(&list);
            } else {
                println!("{:<20} resolutions (retention)", "namespace");
                for ns in list {
                    let res: Vec<String> = ns
                        .resolutions
                        .iter()
                        .map(|(r, t)| match t {
                            Some(ms) => format!("{r}:{}", timespec::retention(*ms)),
                            None => format!("{r}:forever"),
                        })
                        .collect();
                    println!("{:<20} {}", ns.name, res.join(", "));
                }
            }
            Ok(())
        }
        Command::Decommission { host_id } => {
            let request = tally_client::admin::AdminRequest::Decommission { host_id: *host_id };
            topology::change(first(&cli), request, "decommission", cli.json).await
        }
        Command::Removenode { host_id } => {
            let request = tally_client::admin::AdminRequest::RemoveNode { host_id: *host_id };
            topology::change(first(&cli), request, "removenode", cli.json).await
        }
        Command::Init { node_args } => {
            let mut args = vec!["--init".to_owned()];
            args.extend(node_args.iter().cloned());
            exec_node(&args)
        }
        Command::Join { seed, node_args } => {
            let mut args = vec!["--seed".to_owned(), seed.clone()];
            args.extend(node_args.iter().cloned());
            exec_node(&args)
        }
        Command::Cleanup => {
            let request = tally_client::admin::AdminRequest::Cleanup;
            topology::request(first(&cli), request, "cleanup", cli.json).await
        }
        Command::Abort { host_id } => {
            let request = tally_client::admin::AdminRequest::Abort { host_id: *host_id };
            topology::request(first(&cli), request, "abort", cli.json).await
        }
        Command::Status => {
            let client = connect(&cli).await?;
            let s = client.status().await.map_err(|e| e.to_string())?;
            if let Some(view) = topology::cluster(&client).await? {
                return topology::status(&view, &s, cli.json).await;
            }
            if cli.json {
                print_json(&s);
            } else {
                println!(
                    "node {} at {} (epoch {}, up {} s): {} increments, {:.1} MiB on disk",
                    s.node_id,
                    s.address,
                    s.epoch,
                    s.uptime_ms / 1000,
                    s.increments,
                    s.disk_bytes as f64 / (1 << 20) as f64
                );
                println!(
                    "storage: {}{}; WAL {:.1} MiB; {} connections, {} overloaded",
                    topology::health_word(s.storage),
                    if s.storage_error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.storage_error)
                    },
                    s.wal_bytes as f64 / (1 << 20) as f64,
                    s.connections,
                    s.overloaded
                );
                println!(
                    "hints: {} pending, {} written, {} replayed, {} dropped; read repairs: {} cells",
                    s.hints_pending, s.hints_written, s.hints_replayed, s.hints_dropped, s.read_repairs
                );
                if !s.peers.is_empty() {
                    println!();
                    println!(
                        "{:<6} {:<8} {:<22} {:>16} {:>14} {:>14}",
                        "state", "host id", "address", "generation", "heartbeat", "last contact"
                    );
                    let ago = |ms: Option<u64>| {
                        ms.map_or("never".to_owned(), |ms| format!("{ms} ms ago"))
                    };
                    for p in &s.peers {
                        println!(
                            "{:<6} {:<8} {:<22} {:>16} {:>14} {:>14}",
                            if p.up { "UP" } else { "DOWN" },
                            p.host_id,
                            p.address,
                            p.generation.map_or("-".to_owned(), |g| g.to_string()),
                            ago(p.heartbeat_ms_ago),
                            ago(p.last_contact_ms_ago),
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Repair => {
            let addr = first(&cli).to_owned();
            let repairing = topology::long_client(&addr).await?;
            let report = topology::with_progress(&addr, "repair", cli.json, repairing.repair())
                .await?
                .map_err(|e| e.to_string())?;
            if cli.json {
                print_json(&report);
            } else {
                println!(
                    "repaired {addr}: {} ranges ({} skipped), {} of {} Merkle leaves differed, {} cells sent, {:.1} s",
                    report.ranges,
                    report.ranges_skipped,
                    report.leaves_differing,
                    report.leaves,
                    report.cells_repaired,
                    report.elapsed_ms as f64 / 1000.0
                );
            }
            Ok(())
        }
        Command::Ring => {
            let client = connect(&cli).await?;
            let table = client.refresh_routing().await.map_err(|e| e.to_string())?;
            if cli.json {
                print_json(table.as_ref());
            } else {
                println!(
                    "epoch {}, replication factor {}, {} nodes, {} ranges",
                    table.epoch,
                    table.replication_factor,
                    table.nodes.len(),
                    table.ranges.len()
                );
                println!(
                    "{:<22} {:>8}  replicas (primary first)",
                    "range end token", "share"
                );
                let n = table.ranges.len();
                for (i, r) in table.ranges.iter().enumerate() {
                    let start = table.ranges[(i + n - 1) % n].end_token;
                    let width = r.end_token.wrapping_sub(start);
                    let share = if n == 1 {
                        100.0
                    } else {
                        width as f64 / 2f64.powi(64) * 100.0
                    };
                    let replicas: Vec<String> = r.replicas.iter().map(u64::to_string).collect();
                    println!(
                        "{:<22} {:>7.2}%  {}",
                        r.end_token,
                        share,
                        replicas.join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Bench(args) => {
            let client = connect(&cli).await?;
            bench::run(client, args, cli.json).await
        }
        Command::Demo(args) => demo::run(args, cli.json).await,
    }
}

/// A reader that stops reading (`tally status | head -1`) closes the
/// pipe: the next print fails with EPIPE and `println!` panics. That is
/// the reader's choice, not an error: exit quietly, as a process killed by
/// SIGPIPE would. Every other panic keeps the default report.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("tally: {e}");
        std::process::exit(1);
    }
}
