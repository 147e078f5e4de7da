//! `tally top`: the keys of a counter namespace with the largest sums
//! over a window ("what is trending"), with exact counts.

use tally_client::Resolution;

use crate::args::Cli;
use crate::output::print_json;
use crate::timespec;

/// The `k` largest keys of `ns` over the buckets at `resolution` in
/// `[from, to)`.
pub async fn top(
    cli: &Cli,
    ns: &str,
    resolution: &str,
    (from, to): (&str, &str),
    k: u32,
) -> Result<(), String> {
    let now = timespec::now_ms();
    let res = Resolution::from_name(resolution)
        .ok_or_else(|| format!("unknown resolution {resolution:?}"))?;
    let window = (timespec::parse(from, now)?, timespec::parse(to, now)?);
    let client = cli.connect().await?;
    let (keys, certain_above, nodes_missing) = client
        .top(ns, res, window, k)
        .await
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&serde_json::json!({
            "keys": keys,
            "certain_above": certain_above,
            "nodes_missing": nodes_missing,
        }));
        return Ok(());
    }
    println!("{:>4}  {:<40} {:>14} {:>10}", "rank", "key", "sum", "count");
    for (i, key) in keys.iter().enumerate() {
        println!(
            "{:>4}  {:<40} {:>14} {:>10}",
            i + 1,
            String::from_utf8_lossy(&key.key),
            key.sum,
            key.count
        );
    }
    println!(
        "{} keys; every key above {certain_above} in the window was considered{}",
        keys.len(),
        if nodes_missing > 0 {
            format!(" ({nodes_missing} nodes did not answer: keys they led may be missing)")
        } else {
            String::new()
        }
    );
    Ok(())
}
