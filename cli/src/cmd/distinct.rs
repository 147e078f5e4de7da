//! Distinct-count commands: `add` (members to a key of a distinct
//! namespace) and `distinct` (estimated distinct members per bucket and
//! over the range).

use tally_client::{Add, Outcome, Resolution};

use crate::args::Cli;
use crate::output::print_json;
use crate::timespec;

/// `tally add`: members, each added once however often it is sent.
pub async fn add(
    cli: &Cli,
    key: &str,
    members: &[String],
    ns: &str,
    at: &str,
) -> Result<(), String> {
    let timestamp_ms = timespec::parse(at, timespec::now_ms())?;
    let client = cli.connect().await?;
    let items: Vec<Add> = members
        .iter()
        .map(|m| Add {
            namespace: ns.to_owned(),
            key: key.as_bytes().to_vec(),
            timestamp_ms,
            member: m.as_bytes().to_vec(),
        })
        .collect();
    let outcomes = client.add(items).await;
    let failed: Vec<String> = members
        .iter()
        .zip(&outcomes)
        .filter_map(|(m, o)| match o {
            Outcome::Ok(()) => None,
            Outcome::Failed(e) => Some(format!("{m}: failed (not added): {e}")),
            Outcome::Indeterminate(e) => Some(format!(
                "{m}: unknown (may have been added; adding it again is safe): {e}"
            )),
        })
        .collect();
    if cli.json {
        print_json(&serde_json::json!({
            "added": members.len() - failed.len(),
            "errors": failed,
        }));
    } else if failed.is_empty() {
        println!("ok: {} added", members.len());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// `tally distinct`: estimated distinct members per bucket, and over the
/// whole range.
pub async fn distinct(
    cli: &Cli,
    key: &str,
    ns: &str,
    resolution: &str,
    from: &str,
    to: &str,
) -> Result<(), String> {
    let now = timespec::now_ms();
    let res = Resolution::from_name(resolution)
        .ok_or_else(|| format!("unknown resolution {resolution:?}"))?;
    let (start, end) = (timespec::parse(from, now)?, timespec::parse(to, now)?);
    let client = cli.connect().await?;
    let (points, union) = client
        .distinct(ns, key.as_bytes(), res, start, end)
        .await
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&serde_json::json!({"buckets": points, "distinct": union}));
    } else {
        println!("{:<18} {:>12}", "bucket (UTC)", "distinct");
        for p in &points {
            println!(
                "{:<18} {:>12}",
                timespec::format(p.bucket_start_ms),
                p.estimate
            );
        }
        println!(
            "{union} distinct over {} buckets (each member counted once)",
            points.len()
        );
    }
    Ok(())
}
