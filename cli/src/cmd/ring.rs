//! `tally ring`: the token ranges and their replicas, as the routing
//! table says, each replica with its rack when the cluster has racks.

use std::collections::BTreeMap;

use crate::args::Cli;
use crate::output::print_json;

/// Runs `tally ring`.
pub async fn run(cli: &Cli) -> Result<(), String> {
    let client = cli.connect().await?;
    let table = client.refresh_routing().await.map_err(|e| e.to_string())?;
    if cli.json {
        print_json(table.as_ref());
    } else {
        // Racks live in the metadata (a cluster started with `--members`
        // has none, and a token may not read it): shown when known.
        let racks: BTreeMap<u64, String> = match super::topology::cluster(&client).await {
            Ok(Some(view)) => view
                .members
                .into_iter()
                .filter_map(|m| m.rack.map(|r| (m.host_id, r)))
                .collect(),
            _ => BTreeMap::new(),
        };
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
            let replicas: Vec<String> = r
                .replicas
                .iter()
                .map(|h| match racks.get(h) {
                    Some(rack) => format!("{h} ({rack})"),
                    None => h.to_string(),
                })
                .collect();
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
