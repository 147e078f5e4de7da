//! `tally status`: the cluster table (like `nodetool status`) when the
//! cluster runs Raft-agreed metadata, else the one node and its peers.

use std::time::Duration;

use tally_client::admin::ClusterView;
use tally_client::{Client, ClientConfig, NodeStatus, StorageHealth};

use crate::args::Cli;
use crate::cmd::topology;
use crate::output::{health_word, print_json};

/// Runs `tally status`.
pub async fn run(cli: &Cli) -> Result<(), String> {
    let client = cli.connect().await?;
    let s = client.status().await.map_err(|e| e.to_string())?;
    if let Some(view) = topology::cluster(&client).await? {
        return cluster_table(&view, &s, cli.json).await;
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
            health_word(s.storage),
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
            let ago = |ms: Option<u64>| ms.map_or("never".to_owned(), |ms| format!("{ms} ms ago"));
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

/// `tally status` for a cluster with Raft-agreed metadata: one row per
/// member, up/down as the contacted node sees it, load as each member
/// reports it.
async fn cluster_table(view: &ClusterView, local: &NodeStatus, json: bool) -> Result<(), String> {
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
