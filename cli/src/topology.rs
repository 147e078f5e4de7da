//! The operator's topology commands: the cluster table (`status`, like
//! `nodetool status`), decommission, removenode, abort and namespaces.
//! They talk to one node (the first `--addr`), which forwards metadata
//! changes to the Raft leader.

use std::time::{Duration, Instant};

use tally_client::admin::{AdminReply, AdminRequest, ClusterView};
use tally_client::{Client, ClientConfig, NodeStatus, StorageHealth};

use crate::print_json;

/// A client for long operator requests: one node, no retries, a day's
/// timeout (a decommission lasts as long as its streaming).
pub async fn long_client(addr: &str) -> Result<Client, String> {
    let mut config = ClientConfig::with_seeds([addr.to_owned()]);
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
    addr: &str,
    what: &str,
    json: bool,
    work: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let watcher = Client::connect(ClientConfig::with_seeds([addr.to_owned()]))
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
pub async fn change(
    addr: &str,
    request: AdminRequest,
    what: &str,
    json: bool,
) -> Result<(), String> {
    let client = long_client(addr).await?;
    let started = Instant::now();
    let reply = with_progress(addr, what, json, client.admin(&request))
        .await?
        .map_err(|e| e.to_string())?;
    if !json {
        println!("{what} took {:.1} s", started.elapsed().as_secs_f64());
    }
    outcome(what, reply, json)
}

/// A metadata change that moves no data (abort, namespace creation).
pub async fn request(
    addr: &str,
    request: AdminRequest,
    what: &str,
    json: bool,
) -> Result<(), String> {
    let client = long_client(addr).await?;
    let reply = client.admin(&request).await.map_err(|e| e.to_string())?;
    outcome(what, reply, json)
}

/// One row of the status table.
#[derive(Debug, serde::Serialize)]
struct Row {
    host_id: u64,
    address: String,
    up: bool,
    state: String,
    load_bytes: Option<u64>,
    /// As the member reports it (`None`: not reached).
    storage: Option<StorageHealth>,
    #[serde(skip_serializing_if = "String::is_empty")]
    storage_error: String,
    tokens: usize,
    ownership: f64,
    rack: Option<String>,
    voter: bool,
    leader: bool,
}

/// `tally status` for a cluster with Raft-agreed metadata: one row per
/// member, up/down as the contacted node sees it, load as each member
/// reports it.
pub async fn status(view: &ClusterView, local: &NodeStatus, json: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    for m in view.members.iter().filter(|m| m.state != "left") {
        let up = m.host_id == local.node_id
            || local.peers.iter().any(|p| p.host_id == m.host_id && p.up);
        let reported = if m.host_id == local.node_id {
            Some(local.clone())
        } else if up {
            let mut config = ClientConfig::with_seeds([m.address.clone()]);
            config.request_timeout = Duration::from_millis(500);
            config.max_retries = 0;
            config.token_aware = false;
            match Client::connect(config).await {
                Ok(c) => c.status().await.ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        rows.push(Row {
            host_id: m.host_id,
            address: m.address.clone(),
            up,
            state: m.state.clone(),
            load_bytes: reported.as_ref().map(|s| s.disk_bytes),
            storage: reported.as_ref().map(|s| s.storage),
            storage_error: reported.map(|s| s.storage_error).unwrap_or_default(),
            tokens: m.tokens.len(),
            ownership: m.ownership,
            rack: m.rack.clone(),
            voter: view.voters.contains(&m.host_id),
            leader: view.leader == Some(m.host_id),
        });
    }
    if json {
        print_json(&serde_json::json!({
            "cluster_name": view.cluster_name,
            "epoch": view.epoch,
            "replication_factor": view.replication_factor,
            "leader": view.leader,
            "members": rows,
        }));
        return Ok(());
    }
    println!(
        "cluster {} (metadata epoch {}, replication factor {}, metadata leader {})",
        view.cluster_name.as_deref().unwrap_or("(not bootstrapped)"),
        view.epoch,
        view.replication_factor,
        view.leader.map_or("none".to_owned(), |l| l.to_string())
    );
    println!("Status=Up/Down  State=Normal/Joining/Leaving");
    println!(
        "{:<3} {:<22} {:>10} {:<9} {:>6} {:>8} {:>7} {:<8} {:<7}",
        "--", "address", "load", "storage", "tokens", "owns", "host id", "rack", "raft"
    );
    for r in &rows {
        let status = if r.up { 'U' } else { 'D' };
        let state = r.state.chars().next().unwrap_or('?').to_ascii_uppercase();
        let load = r.load_bytes.map_or("?".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
        });
        let raft = match (r.leader, r.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        println!(
            "{status}{state}  {:<22} {:>10} {:<9} {:>6} {:>7.1}% {:>7} {:<8} {:<7}",
            r.address,
            load,
            r.storage.map_or("?", health_word),
            r.tokens,
            r.ownership * 100.0,
            r.host_id,
            r.rack.as_deref().unwrap_or("-"),
            raft
        );
    }
    for r in rows.iter().filter(|r| !r.storage_error.is_empty()) {
        println!("host {} storage: {}", r.host_id, r.storage_error);
    }
    Ok(())
}

/// A storage health for a table cell.
pub fn health_word(health: StorageHealth) -> &'static str {
    match health {
        StorageHealth::Ok => "ok",
        StorageHealth::Poisoned => "POISONED",
        StorageHealth::DiskFull => "DISK FULL",
    }
}
