//! `tally status`: the cluster table (like `nodetool status`) when the
//! cluster runs Raft-agreed metadata, else the one node and its peers.
//! With `--http` the table comes from a node's `GET /v1/cluster`.

use std::collections::HashMap;
use std::time::Duration;

use tally_client::admin::ClusterView;
use tally_client::overview::ClusterOverview;
use tally_client::{Client, NodeStatus};

use crate::args::Cli;
use crate::cmd::{repair_status, topology};
use crate::http::HttpConnection;
use crate::output::{health_word, print_json};

/// Runs `tally status` (against `http`, a node's HTTP port, if given;
/// with `repairs`, the anti-entropy schedule of every range).
pub async fn run(cli: &Cli, http: Option<&str>, repairs: bool) -> Result<(), String> {
    if let Some(addr) = http {
        let tls = cli.tls()?;
        let answer = HttpConnection::connect(addr, cli.token.as_deref(), tls.as_ref())
            .await?
            .request("GET", "/v1/cluster", None)
            .await?;
        if answer.status != 200 {
            return Err(format!(
                "{addr} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        let overview: ClusterOverview = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{addr} sent no cluster overview: {e}"))?;
        return print_overview(&overview, cli.json);
    }
    let client = cli.connect().await?;
    let s = client.status().await.map_err(|e| e.to_string())?;
    let view = topology::cluster(&client).await?;
    let addresses: Vec<String> = match &view {
        Some(view) => view
            .members
            .iter()
            .filter(|m| m.state != "left")
            .map(|m| m.address.clone())
            .collect(),
        None => std::iter::once(s.address.clone())
            .chain(s.peers.iter().map(|p| p.address.clone()))
            .collect(),
    };
    if repairs {
        repair_status::print(&repair_status::gather(cli, &addresses).await, cli.json);
        return Ok(());
    }
    if let Some(view) = view {
        cluster_table(cli, &view, &s).await?;
        if !cli.json {
            let views = repair_status::gather(cli, &addresses).await;
            if let Some(line) = repair_status::summary(&views, addresses.len()) {
                println!("{line}");
            }
        }
        return Ok(());
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
        let views = repair_status::gather(cli, &addresses).await;
        if let Some(line) = repair_status::summary(&views, addresses.len()) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `tally status` for a cluster with Raft-agreed metadata: one row per
/// member, up/down as the contacted node sees it, load as each member
/// reports it.
async fn cluster_table(cli: &Cli, view: &ClusterView, local: &NodeStatus) -> Result<(), String> {
    let json = cli.json;
    let mut reported = HashMap::new();
    for m in view.members.iter().filter(|m| m.state != "left") {
        let up = local.peers.iter().any(|p| p.host_id == m.host_id && p.up);
        if m.host_id == local.node_id || !up {
            continue;
        }
        let Ok(mut config) = cli.config([m.address.clone()]) else {
            continue;
        };
        config.request_timeout = Duration::from_millis(500);
        config.max_retries = 0;
        config.token_aware = false;
        if let Ok(c) = Client::connect(config).await {
            if let Ok(status) = c.status().await {
                reported.insert(m.host_id, status);
            }
        }
    }
    print_overview(&ClusterOverview::new(view, local, &reported), json)
}

/// Prints the cluster table (or its JSON).
fn print_overview(o: &ClusterOverview, json: bool) -> Result<(), String> {
    if json {
        print_json(o);
        return Ok(());
    }
    println!(
        "cluster {} (metadata epoch {}, replication factor {}, metadata leader {})",
        o.cluster_name.as_deref().unwrap_or("(not bootstrapped)"),
        o.epoch,
        o.replication_factor,
        o.leader.map_or("none".to_owned(), |l| l.to_string())
    );
    println!("Status=Up/Down  State=Normal/Joining/Leaving");
    println!(
        "{:<3} {:<22} {:>10} {:<9} {:>6} {:>8} {:>7} {:<8} {:<7}",
        "--", "address", "load", "storage", "tokens", "owns", "host id", "rack", "raft"
    );
    for m in &o.members {
        let status = if m.up { 'U' } else { 'D' };
        let state = m.state.chars().next().unwrap_or('?').to_ascii_uppercase();
        let load = m.reported.as_ref().map_or("?".to_owned(), |r| {
            format!("{:.1} MiB", r.load_bytes as f64 / f64::from(1u32 << 20))
        });
        let raft = match (m.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        println!(
            "{status}{state}  {:<22} {:>10} {:<9} {:>6} {:>7.1}% {:>7} {:<8} {:<7}",
            m.address,
            load,
            m.reported.as_ref().map_or("?", |r| health_word(r.storage)),
            m.tokens,
            m.ownership * 100.0,
            m.host_id,
            m.rack.as_deref().unwrap_or("-"),
            raft
        );
    }
    for m in &o.members {
        if let Some(r) = m.reported.as_ref().filter(|r| !r.storage_error.is_empty()) {
            println!("host {} storage: {}", m.host_id, r.storage_error);
        }
    }
    Ok(())
}
