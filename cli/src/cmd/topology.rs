//! The operator's topology commands: init and join (this process becomes
//! the node), decommission, removenode, cleanup and abort, and the
//! request-and-progress helpers the namespace and repair commands share.
//! They talk to one node (the first `--addr`), which forwards metadata
//! changes to the Raft leader.

use std::time::{Duration, Instant};

use tally_client::admin::{AdminReply, AdminRequest, ClusterView};
use tally_client::Client;

use crate::args::Cli;
use crate::output::print_json;

/// A client for long operator requests: one node, no retries, a day's
/// timeout (a decommission lasts as long as its streaming).
pub async fn long_client(cli: &Cli, addr: &str) -> Result<Client, String> {
    let mut config = cli.config([addr.to_owned()])?;
    config.request_timeout = Duration::from_secs(24 * 3600);
    config.max_retries = 0;
    config.token_aware = false;
    Client::connect(config).await.map_err(|e| e.to_string())
}

/// The cluster's metadata, or `None` for a node with static membership.
pub async fn cluster(client: &Client) -> Result<Option<ClusterView>, String> {
    match client
        .admin(&AdminRequest::Cluster)
        .await
        .map_err(|e| e.to_string())?
    {
        AdminReply::Cluster(view) => Ok(Some(view)),
        AdminReply::Refused { .. } => Ok(None),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn outcome(what: &str, reply: AdminReply, json: bool) -> Result<(), String> {
    if json {
        print_json(&reply);
    }
    match reply {
        AdminReply::Done { epoch, host_id } => {
            if !json {
                match host_id {
                    Some(h) => println!("{what}: done (host {h}, metadata epoch {epoch})"),
                    None => println!("{what}: done (metadata epoch {epoch})"),
                }
            }
            Ok(())
        }
        AdminReply::Cleaned { cells } => {
            if !json {
                println!("{what}: dropped {cells} cells of ranges this node no longer replicates");
            }
            Ok(())
        }
        AdminReply::Refused { reason } => Err(format!("{what} refused: {reason}")),
        AdminReply::Failed { reason } => Err(format!("{what} failed: {reason}")),
        other => Err(format!("{what}: unexpected answer {other:?}")),
    }
}

/// Runs `work` while a progress bar shows the ranges the node at `addr`
/// has streamed or repaired so far (its status), with an ETA.
pub async fn with_progress<T>(
    cli: &Cli,
    addr: &str,
    what: &str,
    json: bool,
    work: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let watcher = Client::connect(cli.config([addr.to_owned()])?)
        .await
        .map_err(|e| e.to_string())?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} ranges  {elapsed_precise}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok(s) = watcher.status().await {
                bar.set_length(u64::from(s.repair_ranges_total));
                bar.set_position(u64::from(s.repair_ranges_done));
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = watch => unreachable!("the watcher never ends"),
    };
    bar.finish_and_clear();
    Ok(result)
}

/// Runs a topology change on `addr` with a progress bar.
pub async fn change(cli: &Cli, request: AdminRequest, what: &str) -> Result<(), String> {
    let (addr, json) = (cli.first(), cli.json);
    let client = long_client(cli, addr).await?;
    let started = Instant::now();
    let reply = with_progress(cli, addr, what, json, client.admin(&request))
        .await?
        .map_err(|e| e.to_string())?;
    if !json {
        println!("{what} took {:.1} s", started.elapsed().as_secs_f64());
    }
    outcome(what, reply, json)
}

/// A metadata change that moves no data (abort, namespace creation).
pub async fn request(cli: &Cli, request: AdminRequest, what: &str) -> Result<(), String> {
    let json = cli.json;
    let client = long_client(cli, cli.first()).await?;
    let reply = client.admin(&request).await.map_err(|e| e.to_string())?;
    outcome(what, reply, json)
}

/// `tally decommission`: the node streams its ranges away, then leaves.
pub async fn decommission(cli: &Cli, host_id: u64) -> Result<(), String> {
    change(cli, AdminRequest::Decommission { host_id }, "decommission").await
}

/// `tally removenode`: a dead node's ranges re-replicated, then removed.
pub async fn removenode(cli: &Cli, host_id: u64) -> Result<(), String> {
    change(cli, AdminRequest::RemoveNode { host_id }, "removenode").await
}

/// `tally cleanup`: drop the ranges the first node no longer replicates.
pub async fn cleanup(cli: &Cli) -> Result<(), String> {
    request(cli, AdminRequest::Cleanup, "cleanup").await
}

/// `tally abort`: roll back a join or leave that cannot finish.
pub async fn abort(cli: &Cli, host_id: u64) -> Result<(), String> {
    request(cli, AdminRequest::Abort { host_id }, "abort").await
}

/// `tally init`: this process becomes `tally-node --init` with `node_args`.
pub fn init(node_args: &[String]) -> Result<(), String> {
    exec_node(&["--init"], node_args)
}

/// `tally join`: this process becomes `tally-node --seed SEED` with
/// `node_args`.
pub fn join(seed: &str, node_args: &[String]) -> Result<(), String> {
    exec_node(&["--seed", seed], node_args)
}

/// Replaces this process with `tally-node` (found beside `tally`, else on
/// the PATH) run with `first`, then `node_args`.
fn exec_node(first: &[&str], node_args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tally-node")))
        .filter(|p| p.exists());
    let program = beside.unwrap_or_else(|| "tally-node".into());
    let error = std::process::Command::new(&program)
        .args(first)
        .args(node_args)
        .exec();
    Err(format!("starting {}: {error}", program.display()))
}
