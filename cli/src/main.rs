//! `tally`: the command-line client. Tables for people, `--json` for
//! scripts. This file dispatches; `args.rs` holds the command line,
//! `cmd/` one file per command group, `output.rs` what they share in
//! printing.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod bench;
mod cmd;
mod demo;
mod http;
mod ingest;
mod output;
mod timespec;

use args::{Cli, Command, TokenAction};
use clap::Parser;
use cmd::{counter, distinct, ns, repair, ring, security, status, top, topology};

async fn run(cli: Cli) -> Result<(), String> {
    match &cli.command {
        Command::Incr {
            key,
            delta,
            ns,
            at,
            op_id,
        } => counter::incr(&cli, key, *delta, ns, at, op_id.as_deref()).await,
        Command::Get { key, ns, replicas } if *replicas => counter::replicas(&cli, key, ns).await,
        Command::Get { key, ns, .. } => counter::get(&cli, key, ns).await,
        Command::Range {
            key,
            ns,
            resolution,
            from,
            to,
        } => counter::range(&cli, key, ns, resolution, from, to).await,
        Command::Stats { key, ns, from, to } => counter::stats(&cli, key, ns, from, to).await,
        Command::Add {
            key,
            members,
            ns,
            at,
        } => distinct::add(&cli, key, members, ns, at).await,
        Command::Distinct {
            key,
            ns,
            resolution,
            from,
            to,
        } => distinct::distinct(&cli, key, ns, resolution, from, to).await,
        Command::Top {
            ns,
            resolution,
            from,
            to,
            k,
        } => top::top(&cli, ns, resolution, (from, to), *k).await,
        Command::Ns { action } => ns::run(&cli, action.as_ref()).await,
        Command::Init { node_args } => topology::init(node_args),
        Command::Join { seed, node_args } => topology::join(seed, node_args),
        Command::Decommission { host_id } => topology::decommission(&cli, *host_id).await,
        Command::Removenode { host_id } => topology::removenode(&cli, *host_id).await,
        Command::Cleanup => topology::cleanup(&cli).await,
        Command::Abort { host_id } => topology::abort(&cli, *host_id).await,
        Command::Status { http, repairs } => status::run(&cli, http.as_deref(), *repairs).await,
        Command::Ring => ring::run(&cli).await,
        Command::Repair => repair::run(&cli).await,
        Command::Bench(args) => {
            bench::run(
                cli.connect().await?,
                args,
                cli.json,
                cli.token.clone(),
                cli.tls()?,
            )
            .await
        }
        Command::Ingest(args) => ingest::run(cli.connect(), args, cli.json).await,
        Command::Demo(args) => demo::run(args, cli.json).await,
        Command::Token {
            action: TokenAction::Create { role, name },
        } => security::create_token(role, name, cli.json),
        Command::Certs { dir, name, hosts } => security::certs(dir, name, hosts, cli.json),
        Command::Secret => {
            security::secret();
            Ok(())
        }
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
